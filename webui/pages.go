package webui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/dockyard/dockyard/metaserver"
)

// The distribution spec's grammar; anything else cannot name a repository or
// a manifest, so the UI answers 404 without asking the registry.
var (
	nameRE   = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	digestRE = regexp.MustCompile(`^[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)
)

const maxQuery = 256

// pager computes one page of n items from the "page" query parameter
// (1-based); a page past the end shows the last one.
type pager struct {
	Page, Pages, Total int
	Prev, Next         string
	from, to           int
}

func newPager(c echo.Context, total, size int, keep url.Values) pager {
	p := pager{Page: 1, Total: total, Pages: (total + size - 1) / size}
	if p.Pages == 0 {
		p.Pages = 1
	}
	if v, err := strconv.Atoi(c.QueryParam("page")); err == nil && v > 1 {
		p.Page = min(v, p.Pages)
	}
	p.from = min((p.Page-1)*size, total)
	p.to = min(p.from+size, total)
	link := func(n int) string {
		q := url.Values{}
		for k, v := range keep {
			q[k] = v
		}
		q.Set("page", strconv.Itoa(n))
		return c.Request().URL.Path + "?" + q.Encode()
	}
	if p.Page > 1 {
		p.Prev = link(p.Page - 1)
	}
	if p.Page < p.Pages {
		p.Next = link(p.Page + 1)
	}
	return p
}

type repoRow struct {
	Name string
	Tags int
	Err  string
}

type reposData struct {
	Query string
	Rows  []repoRow
	Pager pager
}

// repos lists repositories with their tag counts, filtered by ?q= (a
// case-insensitive substring) and paged. Only the page shown costs a
// tags/list call per repository.
func (u *UI) repos(c echo.Context) error {
	ctx, cancel := u.ctx(c)
	defer cancel()
	q := strings.TrimSpace(c.QueryParam("q"))
	if len(q) > maxQuery {
		q = q[:maxQuery]
	}
	names, err := u.reg.catalog(ctx)
	if err != nil {
		return u.fail(c, err)
	}
	if q != "" {
		lq := strings.ToLower(q)
		kept := names[:0]
		for _, n := range names {
			if strings.Contains(n, lq) {
				kept = append(kept, n)
			}
		}
		names = kept
	}
	keep := url.Values{}
	if q != "" {
		keep.Set("q", q)
	}
	pg := newPager(c, len(names), u.cfg.PageSize, keep)
	d := reposData{Query: q, Pager: pg, Rows: make([]repoRow, pg.to-pg.from)}
	parallel(len(d.Rows), func(i int) {
		row := &d.Rows[i]
		row.Name = names[pg.from+i]
		tags, err := u.reg.tags(ctx, row.Name)
		if err != nil {
			// One repository failing (deleted meanwhile) must not hide the rest.
			row.Err = err.Error()
		}
		row.Tags = len(tags)
	})
	return u.render(c, 200, "repos", "Repositories", "repos", d)
}

// repoOrImage serves /ui/r/NAME (a repository) and /ui/r/NAME@DIGEST (one
// manifest): '@' never occurs in a repository name.
func (u *UI) repoOrImage(c echo.Context) error {
	rest := strings.TrimSuffix(strings.TrimPrefix(c.Request().URL.Path, "/ui/r/"), "/")
	name, dig, isImage := strings.Cut(rest, "@")
	if !nameRE.MatchString(name) {
		return u.fail(c, fmt.Errorf("no repository named %s: %w", name, ErrNotFound))
	}
	if isImage {
		if !digestRE.MatchString(dig) {
			return u.fail(c, fmt.Errorf("%q is not a digest: %w", dig, ErrNotFound))
		}
		return u.image(c, name, dig)
	}
	return u.repo(c, name)
}

type tagRow struct {
	Tag       string
	Digest    string
	MediaType string
	Kind      string
	Size      int64
	Platforms []string
	Created   string
	Pull      string
	Err       string
	// Signed: the repository holds a cosign signature of this digest
	// (tag sha256-HEX.sig); docs/signing.md.
	Signed bool
}

type repoData struct {
	Name      string
	Rows      []tagRow
	Pager     pager
	PullCmd   string
	RunCmd    string
	Untagged  bool
	DefaultTg string
}

func (u *UI) repo(c echo.Context, name string) error {
	ctx, cancel := u.ctx(c)
	defer cancel()
	tags, err := u.reg.tags(ctx, name)
	if errors.Is(err, ErrNotFound) {
		// The wrapped chain names the internal call; a person wants the name.
		err = fmt.Errorf("no repository named %s: %w", name, ErrNotFound)
	}
	if err != nil {
		return u.fail(c, err)
	}
	host := c.Request().Host
	d := repoData{Name: name, Untagged: len(tags) == 0}
	if len(tags) > 0 {
		d.DefaultTg = tags[0]
		for _, t := range tags {
			if t == "latest" {
				d.DefaultTg = t
			}
		}
		ref := host + "/" + name + ":" + d.DefaultTg
		d.PullCmd, d.RunCmd = "docker pull "+ref, "dockyard run "+ref
	}
	d.Pager = newPager(c, len(tags), u.cfg.PageSize, nil)
	d.Rows = make([]tagRow, d.Pager.to-d.Pager.from)
	tagSet := make(map[string]bool, len(tags))
	for _, t := range tags {
		tagSet[t] = true
	}
	parallel(len(d.Rows), func(i int) {
		t := tags[d.Pager.from+i]
		row := &d.Rows[i]
		*row = tagRow{Tag: t, Pull: "docker pull " + host + "/" + name + ":" + t}
		if err := u.fillTag(ctx, name, row); err != nil {
			row.Err = err.Error()
		}
		if alg, hex, ok := strings.Cut(row.Digest, ":"); ok {
			row.Signed = tagSet[alg+"-"+hex+".sig"]
		}
		if signatureTag.MatchString(t) {
			row.Kind = "signature"
		}
	})
	return u.render(c, 200, "repo", name, "repos", d)
}

// fetchWorkers bounds the registry calls one page makes at once: enough to
// overlap the cluster's round trips, few enough not to crowd out pushes.
const fetchWorkers = 4

// parallel runs fn(0..n-1) on at most fetchWorkers goroutines and waits.
func parallel(n int, fn func(i int)) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, fetchWorkers)
	for i := range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			fn(i)
		})
	}
	wg.Wait()
}

// signatureTag is the tag cosign (and dockyard sign) gives the signatures of
// an image: ALG-HEX.sig.
var signatureTag = regexp.MustCompile(`^sha(256|512)-[0-9a-f]{64,128}\.sig$`)

func kindOf(m *manifest) string {
	switch {
	case m.isIndex():
		return "index"
	case m.Doc.ArtifactType != "" || (m.Doc.Config != nil && m.Doc.Config.MediaType != mtOCIConfig && m.Doc.Config.MediaType != mtDockerConfig):
		return "artifact"
	default:
		return "image"
	}
}

// fillTag resolves one tag. The distribution protocol carries no push time,
// so the time shown is the one the image states: its config's "created", or
// the standard created annotation of an index or artifact.
func (u *UI) fillTag(ctx context.Context, name string, row *tagRow) error {
	m, err := u.reg.manifest(ctx, name, row.Tag)
	if err != nil {
		return err
	}
	row.Digest, row.MediaType, row.Kind = m.Digest, m.MediaType, kindOf(m)
	row.Created = m.Doc.Annotations["org.opencontainers.image.created"]
	switch row.Kind {
	case "index":
		for _, ch := range m.Doc.Manifests {
			if p := ch.Platform.String(); p != "" {
				row.Platforms = append(row.Platforms, p)
			}
			row.Size += ch.Size
		}
		row.Size += int64(m.Size)
	default:
		row.Size = int64(m.Size)
		if m.Doc.Config != nil {
			row.Size += m.Doc.Config.Size
		}
		for _, l := range m.Doc.Layers {
			row.Size += l.Size
		}
		if row.Kind == "image" && m.Doc.Config != nil {
			cfg, err := u.config(ctx, name, m.Doc.Config)
			if err != nil {
				return err
			}
			if cfg.Created != "" {
				row.Created = cfg.Created
			}
			if p := (&platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}).String(); p != "" {
				row.Platforms = []string{p}
			}
		}
	}
	row.Created = formatTime(row.Created)
	return nil
}

// formatTime shortens an RFC 3339 time to the minute, in UTC; anything else
// is shown as given, and the zero time as nothing.
func formatTime(s string) string {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return s
	}
	if t.IsZero() {
		return "" // tools that build without a clock write year 1: not a time worth showing
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// imageConfig holds the fields of an OCI / Docker image config the UI shows.
type imageConfig struct {
	Created      string `json:"created"`
	Author       string `json:"author"`
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant"`
	Config       struct {
		User         string              `json:"User"`
		ExposedPorts map[string]struct{} `json:"ExposedPorts"`
		Env          []string            `json:"Env"`
		Entrypoint   []string            `json:"Entrypoint"`
		Cmd          []string            `json:"Cmd"`
		Volumes      map[string]struct{} `json:"Volumes"`
		WorkingDir   string              `json:"WorkingDir"`
		Labels       map[string]string   `json:"Labels"`
		StopSignal   string              `json:"StopSignal"`
	} `json:"config"`
	History []struct {
		Created    string `json:"created"`
		CreatedBy  string `json:"created_by"`
		EmptyLayer bool   `json:"empty_layer"`
	} `json:"history"`
}

func (u *UI) config(ctx context.Context, name string, d *descriptor) (*imageConfig, error) {
	if d.Size > maxConfigBytes {
		return nil, fmt.Errorf("config %s is %d bytes: %w", d.Digest, d.Size, ErrTooLarge)
	}
	b, err := u.reg.blob(ctx, name, d.Digest, maxConfigBytes)
	if err != nil {
		return nil, err
	}
	var cfg imageConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("decoding config %s: %w", d.Digest, err)
	}
	return &cfg, nil
}

type kv struct{ K, V string }

func sortedKV(m map[string]string) []kv {
	out := make([]kv, 0, len(m))
	for k, v := range m {
		out = append(out, kv{k, v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].K < out[j].K })
	return out
}

func sortedKeys(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

type configView struct {
	*imageConfig
	Platform string
	Created  string
	Labels   []kv
	Ports    []string
	Volumes  []string
}

type imageData struct {
	Name         string
	Digest       string
	MediaType    string
	Kind         string
	ArtifactType string
	Size         int
	Pretty       string
	ConfigDesc   *descriptor
	Config       *configView
	ConfigErr    string
	Layers       []descriptor
	LayersTotal  int64
	Children     []descriptor
	Subject      *descriptor
	Annotations  []kv
	Referrers    []descriptor
	ReferrersErr string
	PullCmd      string
	RunCmd       string
}

func (u *UI) image(c echo.Context, name, dig string) error {
	ctx, cancel := u.ctx(c)
	defer cancel()
	m, err := u.reg.manifest(ctx, name, dig)
	if errors.Is(err, ErrNotFound) {
		err = fmt.Errorf("repository %s has no manifest %s: %w", name, dig, ErrNotFound)
	}
	if err != nil {
		return u.fail(c, err)
	}
	if m.Digest == "" {
		m.Digest = dig
	}
	ref := c.Request().Host + "/" + name + "@" + m.Digest
	d := imageData{
		Name: name, Digest: m.Digest, MediaType: m.MediaType, Kind: kindOf(m), Size: m.Size,
		ArtifactType: m.Doc.ArtifactType, ConfigDesc: m.Doc.Config, Layers: m.Doc.Layers,
		Children: m.Doc.Manifests, Subject: m.Doc.Subject, Annotations: sortedKV(m.Doc.Annotations),
		PullCmd: "docker pull " + ref, RunCmd: "dockyard run " + ref,
	}
	if d.ArtifactType == "" && d.Kind == "artifact" && m.Doc.Config != nil {
		d.ArtifactType = m.Doc.Config.MediaType
	}
	var pretty bytes.Buffer
	if json.Indent(&pretty, m.Body, "", "  ") == nil {
		d.Pretty = pretty.String()
	} else {
		d.Pretty = string(m.Body)
	}
	for _, l := range m.Doc.Layers {
		d.LayersTotal += l.Size
	}
	if d.Kind == "image" && m.Doc.Config != nil {
		cfg, err := u.config(ctx, name, m.Doc.Config)
		if err != nil {
			d.ConfigErr = err.Error()
		} else {
			d.Config = &configView{
				imageConfig: cfg,
				Platform:    (&platform{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}).String(),
				Created:     formatTime(cfg.Created),
				Labels:      sortedKV(cfg.Config.Labels),
				Ports:       sortedKeys(cfg.Config.ExposedPorts),
				Volumes:     sortedKeys(cfg.Config.Volumes),
			}
		}
	}
	refs, err := u.reg.referrers(ctx, name, m.Digest)
	if err != nil && !errors.Is(err, ErrNotFound) {
		d.ReferrersErr = err.Error()
	}
	d.Referrers = refs
	return u.render(c, 200, "image", name+"@"+shortDigest(m.Digest), "repos", d)
}

type serverRow struct {
	metaserver.ChunkserverInfo
	Pct       int
	LabelList []string
	Heartbeat string
}

type clusterData struct {
	Status   metaserver.Status
	Leader   string
	Servers  []serverRow
	Capacity int64
	Used     int64
	Pct      int
	Up       int
	Health   string
}

func pct(used, capacity int64) int {
	if capacity <= 0 {
		return 0
	}
	return int(min(100, used*100/capacity))
}

func (u *UI) cluster(c echo.Context) error {
	ctx, cancel := context.WithTimeout(withAuth(c), u.cfg.StatusTimeout)
	defer cancel()
	// The cluster's addresses and health are for the registry's users: a
	// registry with auth asks for a login here as on its own /v2/.
	if err := u.reg.mayUse(ctx); err != nil {
		return u.fail(c, err)
	}
	st, err := u.cfg.Meta.Status(ctx)
	if err != nil {
		return u.fail(c, fmt.Errorf("asking the metaserver for status: %w: %w", ErrMetaserver, err))
	}
	d := clusterData{Status: st, Leader: st.Leader, Health: "healthy"}
	for _, m := range st.Members {
		if m.Leader {
			d.Leader = m.ID + " (" + m.APIAddr + ")"
		}
	}
	switch {
	case st.Lost > 0:
		d.Health = "lost"
	case st.Degraded > 0 || st.RepairsQueued > 0:
		d.Health = "degraded"
	}
	now := u.cfg.Now()
	servers := append([]metaserver.ChunkserverInfo(nil), st.Chunkservers...)
	sort.Slice(servers, func(i, j int) bool { return servers[i].ID < servers[j].ID })
	for _, cs := range servers {
		row := serverRow{ChunkserverInfo: cs, Pct: pct(cs.Used, cs.Capacity), Heartbeat: "never"}
		for _, l := range sortedKV(cs.Labels) {
			row.LabelList = append(row.LabelList, l.K+"="+l.V)
		}
		if cs.LastHeartbeat > 0 {
			row.Heartbeat = now.Sub(time.Unix(0, cs.LastHeartbeat)).Round(time.Second).String() + " ago"
		}
		if cs.State == metaserver.StateUp {
			d.Up++
		}
		if cs.State != metaserver.StateRemoved {
			d.Capacity += cs.Capacity
			d.Used += cs.Used
		}
		d.Servers = append(d.Servers, row)
	}
	d.Pct = pct(d.Used, d.Capacity)
	return u.render(c, 200, "cluster", "Cluster", "cluster", d)
}

func shortDigest(d string) string {
	algo, hex, ok := strings.Cut(d, ":")
	if !ok || len(hex) <= 12 {
		return d
	}
	return algo + ":" + hex[:12]
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return strconv.FormatInt(n, 10) + " B"
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 5; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// shortType names a media type the way people say it.
func shortType(mt string) string {
	switch mt {
	case mtOCIManifest:
		return "OCI manifest"
	case mtOCIIndex:
		return "OCI index"
	case mtDockerManifest:
		return "Docker manifest v2"
	case mtDockerList:
		return "Docker manifest list"
	}
	return mt
}

func (u *UI) funcs() template.FuncMap {
	return template.FuncMap{
		"bytes":     func(n any) string { return humanBytes(toInt64(n)) },
		"short":     shortDigest,
		"type":      shortType,
		"repoURL":   func(name string) string { return "/ui/r/" + name },
		"volumeURL": func(name string) string { return "/ui/volumes/" + name },
		"imageURL":  func(name, digest string) string { return "/ui/r/" + name + "@" + digest },
		"join":      strings.Join,
		"platform":  func(p *platform) string { return p.String() },
		// Bars are widths in 5% steps from the stylesheet: the CSP forbids
		// inline styles.
		"pclass": func(p int) string {
			c := fmt.Sprintf("p%d", (max(0, min(100, p))+4)/5*5)
			if p >= 90 {
				return c + " full"
			} else if p >= 75 {
				return c + " hot"
			}
			return c
		},
	}
}

func toInt64(n any) int64 {
	switch v := n.(type) {
	case int:
		return int64(v)
	case int64:
		return v
	case uint64:
		return int64(v)
	}
	return 0
}
