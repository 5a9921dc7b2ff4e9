package webui

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/dockyard/dockyard/metaserver"
	msserver "github.com/dockyard/dockyard/metaserver/server"
	"github.com/dockyard/dockyard/registry"
)

// fakeMeta answers Status with a fixed value or error.
type fakeMeta struct {
	st  metaserver.Status
	err error
}

func (f *fakeMeta) Status(context.Context) (metaserver.Status, error) { return f.st, f.err }

type env struct {
	t    *testing.T
	srv  *httptest.Server
	meta *fakeMeta
	now  time.Time
}

func newEnv(t *testing.T, pageSize int) *env {
	t.Helper()
	blobs, err := registry.NewLocalBlobStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	reg, err := registry.New(registry.Config{Logger: quiet}, blobs, msserver.NewMemory().API())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, meta: &fakeMeta{}, now: time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)}
	ui, err := New(Config{Registry: reg.Handler(), Meta: e.meta, Logger: quiet, PageSize: pageSize, Now: func() time.Time { return e.now }})
	if err != nil {
		t.Fatal(err)
	}
	ui.Register(reg.Echo())
	e.srv = httptest.NewServer(reg.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

type result struct {
	status int
	header http.Header
	body   string
}

func (e *env) do(method, path string, hdr map[string]string, body []byte) result {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	// Redirects are part of what is tested.
	cl := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	res, err := cl.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return result{res.StatusCode, res.Header, string(b)}
}

// page fetches a UI page and fails unless it has the wanted status and is HTML.
func (e *env) page(path string, want int) string {
	e.t.Helper()
	r := e.do("GET", path, nil, nil)
	if r.status != want {
		e.t.Fatalf("GET %s: status %d, want %d; body:\n%s", path, r.status, want, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		e.t.Fatalf("GET %s: Content-Type %q", path, ct)
	}
	// html/template writes '+' (media types) as &#43;; read it back as text.
	return strings.ReplaceAll(r.body, "&#43;", "+")
}

func digestOf(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func (e *env) pushBlob(repo string, b []byte) string {
	e.t.Helper()
	d := digestOf(b)
	if r := e.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d, nil, b); r.status != http.StatusCreated {
		e.t.Fatalf("blob upload: %d %s", r.status, r.body)
	}
	return d
}

func (e *env) putManifest(repo, ref, mediaType string, doc any) (digest string, size int) {
	e.t.Helper()
	b, err := json.Marshal(doc)
	if err != nil {
		e.t.Fatal(err)
	}
	r := e.do("PUT", "/v2/"+repo+"/manifests/"+ref, map[string]string{"Content-Type": mediaType}, b)
	if r.status != http.StatusCreated {
		e.t.Fatalf("manifest put %s:%s: %d %s", repo, ref, r.status, r.body)
	}
	return r.header.Get("Docker-Content-Digest"), len(b)
}

func desc(mediaType, digest string, size int) map[string]any {
	return map[string]any{"mediaType": mediaType, "digest": digest, "size": size}
}

// pushImage pushes a one-layer image whose config carries cfg; it returns
// the manifest digest and size.
func (e *env) pushImage(repo, tag, arch string, cfg map[string]any) (string, int) {
	e.t.Helper()
	conf, err := json.Marshal(map[string]any{
		"architecture": arch, "os": "linux", "created": "2026-11-20T10:30:00Z",
		"config": cfg, "rootfs": map[string]any{"type": "layers", "diff_ids": []string{}},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	layer := []byte("layer of " + repo + ":" + tag + ":" + arch)
	cd, ld := e.pushBlob(repo, conf), e.pushBlob(repo, layer)
	return e.putManifest(repo, tag, mtOCIManifest, map[string]any{
		"schemaVersion": 2, "mediaType": mtOCIManifest,
		"config": desc(mtOCIConfig, cd, len(conf)),
		"layers": []any{desc("application/vnd.oci.image.layer.v1.tar+gzip", ld, len(layer))},
	})
}

// pushArtifact pushes an SBOM-like artifact whose subject is subject.
func (e *env) pushArtifact(repo, subject string, subjectSize int) string {
	e.t.Helper()
	empty := []byte("{}")
	ed := e.pushBlob(repo, empty)
	sbom := []byte(`{"spdxVersion":"SPDX-2.3"}`)
	sd := e.pushBlob(repo, sbom)
	d, _ := e.putManifest(repo, "sha256-sbom", mtOCIManifest, map[string]any{
		"schemaVersion": 2, "mediaType": mtOCIManifest, "artifactType": "application/spdx+json",
		"config":  desc("application/vnd.oci.empty.v1+json", ed, len(empty)),
		"layers":  []any{desc("application/spdx+json", sd, len(sbom))},
		"subject": desc(mtOCIManifest, subject, subjectSize),
	})
	return d
}

func mustContain(t *testing.T, what, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("%s lacks %q", what, w)
		}
	}
}

func mustNotContain(t *testing.T, what, body string, bad ...string) {
	t.Helper()
	for _, w := range bad {
		if strings.Contains(body, w) {
			t.Errorf("%s contains %q", what, w)
		}
	}
}

func TestPagesRenderPushedImages(t *testing.T) {
	e := newEnv(t, 50)
	img, imgSize := e.pushImage("demo/app", "1", "amd64", map[string]any{
		"Entrypoint": []string{"/bin/app", "--serve"}, "Cmd": []string{"--port=80"},
		"Env": []string{"PATH=/usr/bin", "MODE=prod"}, "WorkingDir": "/srv", "User": "app:app",
		"Labels": map[string]string{"org.example.team": "storage"}, "ExposedPorts": map[string]any{"80/tcp": map[string]any{}},
	})
	amd, amdSize := e.pushImage("multi", "amd64", "amd64", nil)
	arm, armSize := e.pushImage("multi", "arm64", "arm64", nil)
	idx, _ := e.putManifest("multi", "latest", mtOCIIndex, map[string]any{
		"schemaVersion": 2, "mediaType": mtOCIIndex,
		"manifests": []any{
			map[string]any{"mediaType": mtOCIManifest, "digest": amd, "size": amdSize, "platform": map[string]string{"os": "linux", "architecture": "amd64"}},
			map[string]any{"mediaType": mtOCIManifest, "digest": arm, "size": armSize, "platform": map[string]string{"os": "linux", "architecture": "arm64", "variant": "v8"}},
		},
	})
	sbom := e.pushArtifact("demo/app", img, imgSize)
	// A cosign-style signature of img, under the tag cosign gives it.
	payload := []byte(`{"critical":{"image":{"docker-manifest-digest":"` + img + `"},"type":"cosign container image signature"}}`)
	pd := e.pushBlob("demo/app", payload)
	sigConf := []byte(`{"rootfs":{"type":"layers","diff_ids":["` + pd + `"]}}`)
	scd := e.pushBlob("demo/app", sigConf)
	e.putManifest("demo/app", "sha256-"+strings.TrimPrefix(img, "sha256:")+".sig", mtOCIManifest, map[string]any{
		"schemaVersion": 2, "mediaType": mtOCIManifest,
		"config": desc(mtOCIConfig, scd, len(sigConf)),
		"layers": []any{desc("application/vnd.dev.cosign.simplesigning.v1+json", pd, len(payload))},
	})
	host := strings.TrimPrefix(e.srv.URL, "http://")

	for _, path := range []string{"/", "/ui/"} {
		body := e.page(path, 200)
		mustContain(t, path, body, `href="/ui/r/demo/app"`, `href="/ui/r/multi"`, "2 in this registry")
		// multi has three tags; demo/app has "1", the artifact's tag and
		// the signature's.
		mustContain(t, path, body, `<td class="num">3</td>`)
	}
	if r := e.do("HEAD", "/ui/r/demo/app", nil, nil); r.status != 200 || r.body != "" {
		t.Errorf("HEAD repo page: %d, %d bytes", r.status, len(r.body))
	}
	if r := e.do("GET", "/ui", nil, nil); r.status != http.StatusMovedPermanently || r.header.Get("Location") != "/ui/" {
		t.Errorf("/ui: %d %q", r.status, r.header.Get("Location"))
	}

	repo := e.page("/ui/r/demo/app", 200)
	mustContain(t, "repo page", repo,
		"docker pull "+host+"/demo/app:1", "dockyard run "+host+"/demo/app:1",
		`href="/ui/r/demo/app@`+img+`"`, shortDigest(img), "linux/amd64", "2026-11-20 10:30 UTC", "OCI manifest", ">image<", ">artifact<",
		"<b>1</b> <span class=\"badge\" title=\"the repository holds a signature of this digest\">signed</span>", ">signature<")
	if n := strings.Count(repo, ">signed</span>"); n != 1 {
		t.Errorf("repo page marks %d tags signed, want only tag 1", n)
	}

	multi := e.page("/ui/r/multi", 200)
	mustContain(t, "index repo page", multi, ">index<", "linux/amd64", "linux/arm64/v8", "OCI index",
		"docker pull "+host+"/multi:latest", `href="/ui/r/multi@`+idx+`"`)

	image := e.page("/ui/r/demo/app@"+img, 200)
	mustContain(t, "image page", image,
		"<code>/bin/app --serve</code>", "<code>--port=80</code>", "<code>PATH=/usr/bin</code>", "<code>MODE=prod</code>",
		"<code>/srv</code>", "<code>app:app</code>", "org.example.team", "storage", "80/tcp", "linux/amd64",
		"application/vnd.oci.image.layer.v1.tar+gzip", "application/spdx+json", `href="/ui/r/demo/app@`+sbom+`"`,
		"&#34;schemaVersion&#34;: 2", "docker pull "+host+"/demo/app@"+img)

	index := e.page("/ui/r/multi@"+idx, 200)
	mustContain(t, "index page", index, "Manifests in this index", `href="/ui/r/multi@`+amd+`"`, `href="/ui/r/multi@`+arm+`"`, "linux/arm64/v8")

	art := e.page("/ui/r/demo/app@"+sbom, 200)
	mustContain(t, "artifact page", art, ">artifact<", "Artifact type", "application/spdx+json", "Subject", `href="/ui/r/demo/app@`+img+`"`)
	mustNotContain(t, "artifact page", art, "docker pull")
}

func TestSearchAndPaging(t *testing.T) {
	e := newEnv(t, 2)
	for _, n := range []string{"team/alpha", "team/beta", "team/gamma", "other/delta", "other/team-x"} {
		e.pushImage(n, "v1", "amd64", nil)
	}
	p1 := e.page("/ui/?q=TEAM", 200)
	// Matches, sorted: other/team-x, team/alpha, team/beta, team/gamma.
	mustContain(t, "search page 1", p1, "4 matching", "other/team-x", "team/alpha", "Page 1 of 2", `href="/ui/?page=2&amp;q=TEAM"`)
	mustNotContain(t, "search page 1", p1, "team/beta", "other/delta", "Previous")
	p2 := e.page("/ui/?q=TEAM&page=2", 200)
	mustContain(t, "search page 2", p2, "team/beta", "team/gamma", "Page 2 of 2", "Previous")
	mustNotContain(t, "search page 2", p2, "team/alpha", "Next")
	// A page past the end shows the last one rather than nothing.
	mustContain(t, "page 99", e.page("/?page=99", 200), "Page 3 of 3", "team/gamma")
	mustContain(t, "no match", e.page("/ui/?q=nothing-here", 200), "No repository matches")

	for _, tag := range []string{"v2", "v3"} {
		e.pushImage("team/alpha", tag, "amd64", nil)
	}
	tags2 := e.page("/ui/r/team/alpha?page=2", 200)
	mustContain(t, "tags page 2", tags2, "<b>v3</b>", "Page 2 of 2")
	mustNotContain(t, "tags page 2", tags2, "<b>v1</b>", "<b>v2</b>")
}

func TestEscapesHostileInput(t *testing.T) {
	e := newEnv(t, 50)
	const evil = `<script>alert("x")</script>`
	img, _ := e.pushImage("demo/app", "1", "amd64", map[string]any{
		"Labels": map[string]string{"x" + evil: evil}, "Env": []string{"A=" + evil}, "Cmd": []string{evil},
	})
	for _, path := range []string{"/ui/r/demo/app@" + img, "/ui/?q=" + evil, "/ui/r/%3Cscript%3E"} {
		r := e.do("GET", path, nil, nil)
		mustNotContain(t, path, r.body, "<script>alert")
		if !strings.Contains(r.body, "&lt;script&gt;") {
			t.Errorf("%s: hostile text not shown escaped", path)
		}
		if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("%s: CSP %q", path, csp)
		}
	}
}

func TestNotFound(t *testing.T) {
	e := newEnv(t, 50)
	img, _ := e.pushImage("demo/app", "1", "amd64", nil)
	missing := digestOf([]byte("nothing"))
	for path, want := range map[string]string{
		"/ui/r/nope":                  "no repository named nope",
		"/ui/r/demo/app@" + missing:   "repository demo/app has no manifest " + missing,
		"/ui/r/other@" + img:          "other",
		"/ui/r/demo/app@not-a-digest": "not a digest",
		"/ui/r/Bad..Name":             "no repository named",
		"/ui/nothing":                 "/ui/nothing",
	} {
		body := e.page(path, http.StatusNotFound)
		mustContain(t, path, body, "404 · Not found", want)
	}
}

func TestClusterPage(t *testing.T) {
	e := newEnv(t, 50)
	e.meta.st = metaserver.Status{
		Leader: "127.0.0.1:9501",
		Members: []metaserver.Member{
			{ID: "m1", RaftAddr: "127.0.0.1:9501", APIAddr: "127.0.0.1:9500", Leader: true, Voter: true},
			{ID: "m2", RaftAddr: "127.0.0.1:9511", APIAddr: "127.0.0.1:9510", Voter: true},
		},
		Chunkservers: []metaserver.ChunkserverInfo{
			{ID: "cs2", Addr: "127.0.0.1:9602", State: metaserver.StateDown, Capacity: 100 << 30, Used: 95 << 30, Shards: 7,
				LastHeartbeat: e.now.Add(-2 * time.Minute).UnixNano()},
			{ID: "cs1", Addr: "127.0.0.1:9601", State: metaserver.StateUp, Capacity: 100 << 30, Used: 25 << 30, Shards: 42,
				Labels: map[string]string{"zone": "a<b>"}, LastHeartbeat: e.now.Add(-3 * time.Second).UnixNano()},
		},
		Chunks: 40, Inodes: 12, Degraded: 3, RepairsQueued: 2, AppliedIndex: 77,
	}
	body := e.page("/ui/cluster", 200)
	mustContain(t, "cluster page", body, "m1 (127.0.0.1:9500)", ">leader<", ">follower<",
		"cs1", "cs2", `badge up`, `badge down`, "zone=a&lt;b&gt;", "3s ago", "2m0s ago",
		`class="p25"`, `class="p95 full"`, "120.0 GiB", "200.0 GiB", ">42<", "badge degraded", ">3<", ">2<", "1 / 2")
	if strings.Index(body, "cs1") > strings.Index(body, "cs2") {
		t.Error("chunkservers not sorted by ID")
	}
	e.meta.st.Lost = 1
	mustContain(t, "cluster with loss", e.page("/ui/cluster", 200), "badge lost")
}

func TestClusterPageMetaserverDown(t *testing.T) {
	e := newEnv(t, 50)
	e.meta.err = fmt.Errorf("dial tcp 127.0.0.1:9500: %w", errors.New("connection refused"))
	body := e.page("/ui/cluster", http.StatusBadGateway)
	mustContain(t, "502 page", body, "The metaserver cannot be reached", "connection refused")
	// The registry pages do not depend on the metaserver's Status call.
	e.page("/ui/", 200)
}

func TestDoesNotShadowRegistry(t *testing.T) {
	e := newEnv(t, 50)
	e.pushImage("ui/static", "1", "amd64", nil)
	if r := e.do("GET", "/v2/", nil, nil); r.status != 200 || r.body != "{}" {
		t.Errorf("/v2/: %d %q", r.status, r.body)
	}
	if r := e.do("GET", "/v2/_catalog", nil, nil); r.status != 200 || !strings.Contains(r.body, `"ui/static"`) {
		t.Errorf("/v2/_catalog: %d %q", r.status, r.body)
	}
	if r := e.do("GET", "/metrics", nil, nil); r.status != 200 || strings.Contains(r.body, "<html") {
		t.Errorf("/metrics: %d", r.status)
	}
	r := e.do("GET", "/ui/static/style.css", nil, nil)
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/css") || !strings.Contains(r.body, ".badge") {
		t.Errorf("style.css: %d %q", r.status, r.header.Get("Content-Type"))
	}
	if r := e.do("GET", "/ui/static/copy.js", nil, nil); r.status != 200 || !strings.Contains(r.body, "data-copy") {
		t.Errorf("copy.js: %d", r.status)
	}
}

func TestNewRequiresBackends(t *testing.T) {
	if _, err := New(Config{Meta: &fakeMeta{}}); !errors.Is(err, ErrConfig) {
		t.Errorf("no registry: %v", err)
	}
	if _, err := New(Config{Registry: http.NotFoundHandler()}); !errors.Is(err, ErrConfig) {
		t.Errorf("no metaserver: %v", err)
	}
}

func TestConfigTooLargeIsAnError(t *testing.T) {
	rc := regClient{h: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write(bytes.Repeat([]byte("x"), 2048))
	})}
	if _, err := rc.blob(context.Background(), "a", "sha256:00", 1024); !errors.Is(err, ErrTooLarge) {
		t.Errorf("got %v, want ErrTooLarge", err)
	}
}

func TestFormatTime(t *testing.T) {
	for in, want := range map[string]string{
		"2026-11-20T10:30:59.5+01:00": "2026-11-20 09:30 UTC",
		"0001-01-01T00:00:00Z":        "",
		"last tuesday":                "last tuesday",
		"":                            "",
	} {
		if got := formatTime(in); got != want {
			t.Errorf("formatTime(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestRegistryFailureIsBadGateway(t *testing.T) {
	failing := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		w.Write([]byte(`{"errors":[{"code":"UNKNOWN","message":"metaserver unavailable"}]}`))
	})
	ui, err := New(Config{Registry: failing, Meta: &fakeMeta{}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	e := echo.New()
	ui.Register(e)
	srv := httptest.NewServer(e)
	defer srv.Close()
	for _, path := range []string{"/", "/ui/r/demo/app", "/ui/r/demo/app@" + digestOf(nil)} {
		res, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusBadGateway {
			t.Errorf("%s: status %d, want 502", path, res.StatusCode)
		}
		mustContain(t, path, string(b), "The registry could not answer", "UNKNOWN: metaserver unavailable")
	}
}

func TestStatusTimeout(t *testing.T) {
	slow := &blockingMeta{}
	ui, err := New(Config{Registry: http.NotFoundHandler(), Meta: slow, StatusTimeout: 50 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ec := echo.New()
	ui.Register(ec)
	rec := httptest.NewRecorder()
	ec.ServeHTTP(rec, httptest.NewRequest("GET", "/ui/cluster", nil))
	if rec.Code != http.StatusBadGateway || !strings.Contains(rec.Body.String(), "deadline exceeded") {
		t.Errorf("status %d, body %s", rec.Code, rec.Body)
	}
}

// blockingMeta answers Status only when the caller gives up.
type blockingMeta struct{}

func (blockingMeta) Status(ctx context.Context) (metaserver.Status, error) {
	<-ctx.Done()
	return metaserver.Status{}, ctx.Err()
}
