package registry

import (
	"io"
	"log/slog"
	"net/http/httptest"
	"testing"
)

// testEnv is a registry over an in-memory KV and a local-directory blob
// store, served by httptest.
type testEnv struct {
	t     *testing.T
	kv    *memKV
	blobs *LocalBlobStore
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
	e.srv = httptest.NewServer(reg.Handler())
	e.t.Cleanup(e.srv.Close)
}
