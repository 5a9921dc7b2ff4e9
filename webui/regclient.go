package webui

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// ErrNotFound reports a repository, tag or digest the registry does not know.
var ErrNotFound = errors.New("not found")

// ErrTooLarge reports a registry response bigger than the UI is willing to
// hold in memory (a config blob that is really a layer, say).
var ErrTooLarge = errors.New("response too large")

// RegistryError is a registry answer the UI did not expect, with the OCI
// error code when the body carried one.
type RegistryError struct {
	Status  int
	Code    string
	Message string
	Path    string
}

func (e *RegistryError) Error() string {
	s := fmt.Sprintf("registry answered %d for %s", e.Status, e.Path)
	if e.Code != "" {
		s += ": " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Media types the UI asks for and tells apart.
const (
	mtOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mtOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mtDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mtDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtOCIConfig      = "application/vnd.oci.image.config.v1+json"
	mtDockerConfig   = "application/vnd.docker.container.image.v1+json"
)

var manifestAccept = strings.Join([]string{mtOCIManifest, mtOCIIndex, mtDockerManifest, mtDockerList}, ", ")

// Limits on what one call may return: manifests are bounded by the registry
// itself (a few MiB); configs are small JSON documents in practice.
const (
	maxManifestBytes = 8 << 20
	maxConfigBytes   = 4 << 20
	maxListBytes     = 16 << 20
	listPage         = 1000
)

// authKey carries the browser's Authorization header in a page's context:
// the UI calls the registry as the visitor, so a registry with auth shows
// each visitor what they may pull, and nothing to a visitor who did not
// log in.
type authKey struct{}

// regClient calls the registry's HTTP handler in process. It goes through the
// same router, middleware and error table as a remote client would.
type regClient struct{ h http.Handler }

// capWriter is an http.ResponseWriter that keeps at most limit body bytes;
// a longer body fails the handler's write instead of growing without bound.
type capWriter struct {
	hdr    http.Header
	status int
	body   bytes.Buffer
	limit  int
	over   bool
}

func (w *capWriter) Header() http.Header { return w.hdr }

func (w *capWriter) WriteHeader(s int) {
	if w.status == 0 {
		w.status = s
	}
}

func (w *capWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.body.Len()+len(p) > w.limit {
		w.over = true
		return 0, ErrTooLarge
	}
	return w.body.Write(p)
}

type regResp struct {
	status int
	header http.Header
	body   []byte
}

// get performs one GET. 404s become ErrNotFound, other non-2xx answers a
// *RegistryError.
func (rc regClient) get(ctx context.Context, path, accept string, limit int) (regResp, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, path, nil)
	if err != nil {
		return regResp{}, fmt.Errorf("building request %s: %w", path, err)
	}
	req.RemoteAddr = "127.0.0.1:0"
	req.Host = "webui.internal"
	if a, ok := ctx.Value(authKey{}).(string); ok {
		req.Header.Set("Authorization", a)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	w := &capWriter{hdr: http.Header{}, limit: limit}
	rc.h.ServeHTTP(w, req)
	if w.over {
		return regResp{}, fmt.Errorf("%s: %w (over %d bytes)", path, ErrTooLarge, limit)
	}
	if w.status == 0 {
		w.status = http.StatusOK
	}
	if w.status == http.StatusNotFound {
		return regResp{}, fmt.Errorf("%s: %w", path, ErrNotFound)
	}
	if w.status < 200 || w.status > 299 {
		re := &RegistryError{Status: w.status, Path: path}
		var b struct {
			Errors []struct{ Code, Message string } `json:"errors"`
		}
		if json.Unmarshal(w.body.Bytes(), &b) == nil && len(b.Errors) > 0 {
			re.Code, re.Message = b.Errors[0].Code, b.Errors[0].Message
		}
		// An invalid name or reference cannot exist: to a browser that is a 404.
		if re.Code == "NAME_INVALID" || re.Code == "DIGEST_INVALID" || re.Code == "MANIFEST_INVALID" {
			return regResp{}, fmt.Errorf("%w: %w", ErrNotFound, re)
		}
		return regResp{}, re
	}
	return regResp{status: w.status, header: w.hdr, body: w.body.Bytes()}, nil
}

// catalog returns every repository name, following the registry's pages.
func (rc regClient) catalog(ctx context.Context) ([]string, error) {
	var all []string
	last := ""
	for {
		q := url.Values{"n": {strconv.Itoa(listPage)}}
		if last != "" {
			q.Set("last", last)
		}
		r, err := rc.get(ctx, "/v2/_catalog?"+q.Encode(), "", maxListBytes)
		if err != nil {
			return nil, fmt.Errorf("listing repositories: %w", err)
		}
		var b struct {
			Repositories []string `json:"repositories"`
		}
		if err := json.Unmarshal(r.body, &b); err != nil {
			return nil, fmt.Errorf("decoding catalog: %w", err)
		}
		all = append(all, b.Repositories...)
		if len(b.Repositories) < listPage || r.header.Get("Link") == "" {
			return all, nil
		}
		last = b.Repositories[len(b.Repositories)-1]
	}
}

// tags returns every tag of a repository; ErrNotFound when it does not exist.
func (rc regClient) tags(ctx context.Context, name string) ([]string, error) {
	var all []string
	last := ""
	for {
		q := url.Values{"n": {strconv.Itoa(listPage)}}
		if last != "" {
			q.Set("last", last)
		}
		r, err := rc.get(ctx, "/v2/"+name+"/tags/list?"+q.Encode(), "", maxListBytes)
		if err != nil {
			return nil, fmt.Errorf("listing tags of %s: %w", name, err)
		}
		var b struct {
			Tags []string `json:"tags"`
		}
		if err := json.Unmarshal(r.body, &b); err != nil {
			return nil, fmt.Errorf("decoding tags of %s: %w", name, err)
		}
		all = append(all, b.Tags...)
		if len(b.Tags) < listPage || r.header.Get("Link") == "" {
			return all, nil
		}
		last = b.Tags[len(b.Tags)-1]
	}
}

// manifestDoc is the union of the manifest and index fields the UI shows;
// Docker schema 2 documents have the same shape.
type manifestDoc struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        *descriptor       `json:"config"`
	Layers        []descriptor      `json:"layers"`
	Manifests     []descriptor      `json:"manifests"`
	Subject       *descriptor       `json:"subject"`
	Annotations   map[string]string `json:"annotations"`
}

type descriptor struct {
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	Platform     *platform         `json:"platform"`
	Annotations  map[string]string `json:"annotations"`
}

type platform struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant"`
	OSVersion    string `json:"os.version"`
}

func (p *platform) String() string {
	if p == nil || (p.OS == "" && p.Architecture == "") {
		return ""
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// manifest is one fetched manifest with what the registry said about it.
type manifest struct {
	Digest    string
	MediaType string
	Size      int
	Body      []byte
	Doc       manifestDoc
}

func (m *manifest) isIndex() bool {
	return m.MediaType == mtOCIIndex || m.MediaType == mtDockerList
}

func (rc regClient) manifest(ctx context.Context, name, ref string) (*manifest, error) {
	r, err := rc.get(ctx, "/v2/"+name+"/manifests/"+ref, manifestAccept, maxManifestBytes)
	if err != nil {
		return nil, fmt.Errorf("fetching manifest %s of %s: %w", ref, name, err)
	}
	m := &manifest{
		Digest:    r.header.Get("Docker-Content-Digest"),
		MediaType: r.header.Get("Content-Type"),
		Size:      len(r.body),
		Body:      r.body,
	}
	if err := json.Unmarshal(r.body, &m.Doc); err != nil {
		return nil, fmt.Errorf("decoding manifest %s of %s: %w", ref, name, err)
	}
	if m.Doc.MediaType != "" {
		m.MediaType = m.Doc.MediaType
	}
	return m, nil
}

// blob fetches a small blob (an image config) whole.
func (rc regClient) blob(ctx context.Context, name, digest string, limit int) ([]byte, error) {
	r, err := rc.get(ctx, "/v2/"+name+"/blobs/"+digest, "", limit)
	if err != nil {
		return nil, fmt.Errorf("fetching blob %s of %s: %w", digest, name, err)
	}
	return r.body, nil
}

// referrers lists the manifests whose subject is digest.
func (rc regClient) referrers(ctx context.Context, name, digest string) ([]descriptor, error) {
	r, err := rc.get(ctx, "/v2/"+name+"/referrers/"+digest, "", maxListBytes)
	if err != nil {
		return nil, fmt.Errorf("listing referrers of %s: %w", digest, err)
	}
	var idx manifestDoc
	if err := json.Unmarshal(r.body, &idx); err != nil {
		return nil, fmt.Errorf("decoding referrers of %s: %w", digest, err)
	}
	return idx.Manifests, nil
}

// mayUse asks the registry's /v2/ whether the visitor may use it at all:
// it returns the registry's 401 or 403, and nil for anything else, so a
// failing registry does not hide the cluster's state.
func (rc regClient) mayUse(ctx context.Context) error {
	_, err := rc.get(ctx, "/v2/", "", 1<<10)
	var re *RegistryError
	if errors.As(err, &re) && (re.Status == http.StatusUnauthorized || re.Status == http.StatusForbidden) {
		return err
	}
	return nil
}
