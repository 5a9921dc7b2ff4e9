package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/dockyard/dockyard/metaserver"
)

// testEnv is a registry over an in-memory KV and a local-directory blob
// store, served by httptest.
type testEnv struct {
	t     *testing.T
	kv    metaserver.KV
	blobs BlobStore
	reg   *Registry
	srv   *httptest.Server
}

func newTestEnv(t *testing.T, cfg Config) *testEnv {
	t.Helper()
	blobs, err := NewLocalBlobStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{t: t, kv: newMemKV(), blobs: blobs}
	env.start(cfg)
	return env
}

// newDFSEnv is a registry over an in-process Dockyard cluster: blobs in its
// file system, records in its metaserver's KV.
func newDFSEnv(t *testing.T, cfg Config) *testEnv {
	t.Helper()
	s := newDFSStore(t)
	env := &testEnv{t: t, kv: s.c.Meta(), blobs: s}
	env.start(cfg)
	return env
}

// forEachStore runs a test over each blob store and KV pairing.
func forEachStore(t *testing.T, cfg Config, fn func(t *testing.T, env *testEnv)) {
	t.Run("local", func(t *testing.T) { fn(t, newTestEnv(t, cfg)) })
	t.Run("dfs", func(t *testing.T) { fn(t, newDFSEnv(t, cfg)) })
}

// keys returns the registry records with a prefix.
func (e *testEnv) keys(prefix string) []string {
	e.t.Helper()
	pairs, err := e.kv.KVList(context.Background(), bucket, prefix, "", 0)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []string
	for _, p := range pairs {
		out = append(out, p.Key)
	}
	return out
}

// start (re)creates the Registry over the same stores, as a restart does.
func (e *testEnv) start(cfg Config) {
	e.t.Helper()
	if e.srv != nil {
		e.srv.Close()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	reg, err := New(cfg, e.blobs, e.kv)
	if err != nil {
		e.t.Fatal(err)
	}
	e.reg = reg
	e.srv = newServer(e.t, reg)
}

func newServer(t *testing.T, reg *Registry) *httptest.Server {
	srv := httptest.NewServer(reg.Handler())
	t.Cleanup(srv.Close)
	return srv
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

// code returns the first OCI error code of an error body.
func (r resp) code() string {
	var b struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if json.Unmarshal(r.body, &b) != nil || len(b.Errors) == 0 {
		return ""
	}
	return b.Errors[0].Code
}

func (e *testEnv) do(method, path string, hdr map[string]string, body []byte) resp {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

// must fails the test unless the response has the wanted status.
func (e *testEnv) must(r resp, want int) resp {
	e.t.Helper()
	if r.status != want {
		e.t.Fatalf("status %d, want %d; body %s", r.status, want, r.body)
	}
	return r
}

func sha(b []byte) string { return digestOf("sha256", b).String() }

// pushBlob uploads b monolithically into repo.
func (e *testEnv) pushBlob(repo string, b []byte) string {
	e.t.Helper()
	d := sha(b)
	e.must(e.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d, nil, b), http.StatusCreated)
	return d
}

// imageManifest builds an OCI image manifest over config and layers.
func imageManifest(config string, configSize int, layers map[string]int, extra map[string]any) []byte {
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaTypeOCIManifest,
		"config":        map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": configSize},
	}
	var ls []any
	for d, n := range layers {
		ls = append(ls, map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": n})
	}
	if ls == nil {
		ls = []any{}
	}
	m["layers"] = ls
	for k, v := range extra {
		m[k] = v
	}
	b, _ := json.Marshal(m)
	return b
}

// pushImage uploads a config and one layer and puts a manifest tagged tag;
// it returns the manifest digest and the layer digest.
func (e *testEnv) pushImage(repo, tag string, layer []byte) (manifest, layerDigest string) {
	e.t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	cd := e.pushBlob(repo, cfg)
	ld := e.pushBlob(repo, layer)
	body := imageManifest(cd, len(cfg), map[string]int{ld: len(layer)}, nil)
	r := e.must(e.do("PUT", "/v2/"+repo+"/manifests/"+tag, map[string]string{"Content-Type": MediaTypeOCIManifest}, body), http.StatusCreated)
	return r.header.Get("Docker-Content-Digest"), ld
}

// fakeClock is a settable clock for the collector's grace periods.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}
