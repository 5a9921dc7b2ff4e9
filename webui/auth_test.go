package webui

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/dockyard/dockyard/metaserver"
	msserver "github.com/dockyard/dockyard/metaserver/server"
	"github.com/dockyard/dockyard/registry"
)

// TestPagesWithRegistryAuth: with auth on, the UI asks the browser for a
// login (Basic, which the registry accepts on /v2/) and shows each visitor
// only the repositories they may pull.
func TestPagesWithRegistryAuth(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	kv := msserver.NewMemory().API()
	blobs, err := registry.NewLocalBlobStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	users := registry.NewUserStore(kv)
	ctx := context.Background()
	for _, u := range []string{"alice", "bob"} {
		if err := users.Add(ctx, u, "password of "+u, false); err != nil {
			t.Fatal(err)
		}
	}
	// Push while the registry is open, then serve the same records with auth.
	open, err := registry.New(registry.Config{Logger: quiet}, blobs, kv)
	if err != nil {
		t.Fatal(err)
	}
	pushSrv := httptest.NewServer(open.Handler())
	pusher := &env{t: t, srv: pushSrv, meta: &fakeMeta{}}
	aliceImage, _ := pusher.pushImage("alice/app", "v1", "amd64", nil)
	pusher.pushImage("bob/app", "v1", "amd64", nil)
	pushSrv.Close()

	reg, err := registry.New(registry.Config{Logger: quiet, Auth: &registry.AuthConfig{Users: users}}, blobs, kv)
	if err != nil {
		t.Fatal(err)
	}
	meta := &fakeMeta{st: metaserver.Status{Leader: "127.0.0.1:9501"}}
	ui, err := New(Config{Registry: reg.Handler(), Meta: meta, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ui.Register(reg.Echo())
	srv := httptest.NewServer(reg.Handler())
	t.Cleanup(srv.Close)
	ui2 := &env{t: t, srv: srv, meta: meta}

	login := func(u string) map[string]string {
		return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":password of "+u))}
	}
	for _, path := range []string{"/", "/ui/r/alice/app", "/ui/r/alice/app@" + aliceImage, "/ui/cluster"} {
		r := ui2.do("GET", path, nil, nil)
		if r.status != http.StatusUnauthorized || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("%s without login: %d, challenge %q", path, r.status, r.header.Get("WWW-Authenticate"))
		}
		r = ui2.do("GET", path, map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:wrong password"))}, nil)
		if r.status != http.StatusUnauthorized {
			t.Errorf("%s with a wrong password: %d", path, r.status)
		}
	}
	r := ui2.do("GET", "/", login("alice"), nil)
	if r.status != 200 {
		t.Fatalf("repos as alice: %d %s", r.status, r.body)
	}
	mustContain(t, "repos as alice", r.body, "alice/app")
	mustNotContain(t, "repos as alice", r.body, "bob/app")
	for _, path := range []string{"/ui/r/alice/app", "/ui/r/alice/app@" + aliceImage, "/ui/cluster"} {
		if r := ui2.do("GET", path, login("alice"), nil); r.status != 200 {
			t.Errorf("%s as alice: %d", path, r.status)
		}
	}
	if r := ui2.do("GET", "/ui/r/bob/app", login("alice"), nil); r.status != http.StatusForbidden {
		t.Errorf("bob's repository as alice: %d", r.status)
	}
}
