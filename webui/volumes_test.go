package webui

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/local"
	msserver "github.com/dockyard/dockyard/metaserver/server"
	"github.com/dockyard/dockyard/registry"
	"github.com/dockyard/dockyard/volume"
)

// volumeCluster starts an in-process cluster holding two volumes: web
// (a: 11 bytes, sub/b: 5 bytes) and db (data: 7 bytes, with snapshot
// before-upgrade).
func volumeCluster(t *testing.T) *dfs.Client {
	t.Helper()
	cl, err := local.Start(local.Config{Dir: t.TempDir(), HeartbeatInterval: 100 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	ctx := context.Background()
	for p, s := range map[string]string{"/volumes/web/a": "hello world", "/volumes/web/sub/b": "12345", "/volumes/db/data": "rows..."} {
		if _, err := cl.FS.MkdirAll(ctx, p[:strings.LastIndex(p, "/")], 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.FS.WriteFile(ctx, p, strings.NewReader(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := volume.CreateSnapshot(ctx, cl.FS, "db", "before-upgrade"); err != nil {
		t.Fatal(err)
	}
	return cl.FS
}

// uiEnv serves the UI over an open registry with cfg's volume settings.
func uiEnv(t *testing.T, cfg Config, auth *registry.AuthConfig) *env {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	blobs, err := registry.NewLocalBlobStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	reg, err := registry.New(registry.Config{Logger: quiet, Auth: auth}, blobs, msserver.NewMemory().API())
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, meta: &fakeMeta{}}
	cfg.Registry, cfg.Meta, cfg.Logger = reg.Handler(), e.meta, quiet
	ui, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ui.Register(reg.Echo())
	e.srv = httptest.NewServer(reg.Handler())
	t.Cleanup(e.srv.Close)
	return e
}

func TestVolumesPages(t *testing.T) {
	e := uiEnv(t, Config{FS: volumeCluster(t)}, nil)
	list := e.page("/ui/volumes", 200)
	mustContain(t, "volumes page", list, `href="/ui/volumes" class="on">Volumes</a>`, "2 volumes in this cluster",
		`href="/ui/volumes/web"`, `href="/ui/volumes/db"`, `title="16 bytes">16 B</td>`, `title="7 bytes">7 B</td>`,
		`<td class="num">2</td>`, `<td class="num">1</td>`, `<span class="badge">before-upgrade</span>`, " UTC")
	mustNotContain(t, "volumes page", list, ".snapshots", ">≥ ")
	if strings.Index(list, "/ui/volumes/db") > strings.Index(list, "/ui/volumes/web") {
		t.Error("volumes not sorted by name")
	}

	db := e.page("/ui/volumes/db", 200)
	mustContain(t, "db page", db, "<h1>db</h1>", "7 bytes", "<b>1</b>", "<b>before-upgrade</b>",
		"docker run -v db:/data --volume-driver dockyard IMAGE", "dockyard run -v db:/data IMAGE",
		"dockyard volume snapshot db SNAPSHOT", "dockyard volume restore db SNAPSHOT --to NEWNAME")
	mustNotContain(t, "db page", db, "<form", "method=\"post\"")
	web := e.page("/ui/volumes/web/", 200)
	mustContain(t, "web page", web, "16 bytes", "<b>2</b>", "No snapshots")
	mustContain(t, "trailing slash", e.page("/ui/volumes/", 200), "2 volumes in this cluster")

	mustContain(t, "missing volume", e.page("/ui/volumes/gone", http.StatusNotFound), "404 · Not found", "no volume named gone")
	mustContain(t, "snapshot dir", e.page("/ui/volumes/.snapshots", http.StatusNotFound), "no volume named .snapshots")
	evil := e.page("/ui/volumes/%3Cscript%3Ealert(1)%3C%2Fscript%3E", http.StatusNotFound)
	mustContain(t, "hostile name", evil, "no volume named &lt;script&gt;alert(1)&lt;/script&gt;")
	mustNotContain(t, "hostile name", evil, "<script>alert")
}

// TestVolumeWalkCap: a volume bigger than the walk limit shows the partial
// sum marked "≥" instead of walking it all.
func TestVolumeWalkCap(t *testing.T) {
	fc := volumeCluster(t)
	ctx := context.Background()
	if _, err := fc.MkdirAll(ctx, "/volumes/web/many", 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if _, err := fc.WriteFile(ctx, fmt.Sprintf("/volumes/web/many/f%02d", i), strings.NewReader("xyz"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	v, err := volume.Lookup(ctx, fc, "web")
	if err != nil {
		t.Fatal(err)
	}
	full, err := walkUsage(ctx, fc.Meta(), v.Ino, defaultWalkLimit)
	if err != nil || full != (usage{Bytes: 16 + 60, Files: 22}) {
		t.Fatalf("full walk = %+v, %v", full, err)
	}
	// Root: a, many, sub (3 entries); then the last directory pushed,
	// sub: b (1); then many: 6 of its 20 files.
	capped, err := walkUsage(ctx, fc.Meta(), v.Ino, 10)
	if err != nil || capped != (usage{Bytes: 11 + 5 + 6*3, Files: 8, Partial: true}) {
		t.Fatalf("walk capped at 10 = %+v, %v", capped, err)
	}

	e := uiEnv(t, Config{FS: fc, VolumeWalkLimit: 10}, nil)
	list := e.page("/ui/volumes", 200)
	mustContain(t, "capped list", list, `title="34 bytes">≥ 34 B</td>`, `<td class="num">≥ 8</td>`, "stopped after 10 entries",
		`title="7 bytes">7 B</td>`)
	mustContain(t, "capped page", e.page("/ui/volumes/web", 200), "≥ 34 bytes", "lower bounds")
}

// TestVolumesWithoutFS: a UI given no file system says so on the volumes
// pages and keeps serving the others.
func TestVolumesWithoutFS(t *testing.T) {
	e := uiEnv(t, Config{}, nil)
	for _, p := range []string{"/ui/volumes", "/ui/volumes/db"} {
		mustContain(t, p, e.page(p, 200), "without access to the cluster&#39;s file system")
	}
	e.page("/ui/", 200)
}

// TestVolumesNeedAdmin: with registry auth on, volumes are for admins.
func TestVolumesNeedAdmin(t *testing.T) {
	fc := volumeCluster(t)
	users := registry.NewUserStore(msserver.NewMemory().API())
	ctx := context.Background()
	if err := users.Add(ctx, "alice", "password of alice", false); err != nil {
		t.Fatal(err)
	}
	if err := users.Add(ctx, "root", "password of root", true); err != nil {
		t.Fatal(err)
	}
	auth := &registry.AuthConfig{Users: users}
	e := uiEnv(t, Config{FS: fc, Users: users}, auth)
	login := func(u, pw string) map[string]string {
		return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(u+":"+pw))}
	}
	for _, p := range []string{"/ui/volumes", "/ui/volumes/db", "/ui/volumes/gone"} {
		r := e.do("GET", p, nil, nil)
		if r.status != http.StatusUnauthorized || !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic ") {
			t.Errorf("%s without login: %d, challenge %q", p, r.status, r.header.Get("WWW-Authenticate"))
		}
		if r := e.do("GET", p, login("root", "wrong"), nil); r.status != http.StatusUnauthorized {
			t.Errorf("%s with a wrong password: %d", p, r.status)
		}
		r = e.do("GET", p, login("alice", "password of alice"), nil)
		if r.status != http.StatusForbidden || strings.Contains(r.body, "before-upgrade") {
			t.Errorf("%s as non-admin alice: %d", p, r.status)
		}
		mustContain(t, p+" as alice", r.body, "registry admins only")
	}
	r := e.do("GET", "/ui/volumes/db", login("root", "password of root"), nil)
	if r.status != 200 {
		t.Fatalf("db as admin: %d %s", r.status, r.body)
	}
	mustContain(t, "db as admin", r.body, "before-upgrade", "7 bytes")

	// A UI wired without the user store cannot tell admins: it refuses
	// everyone rather than showing volumes to anyone the registry lets in.
	blind := uiEnv(t, Config{FS: fc}, auth)
	r = blind.do("GET", "/ui/volumes", login("root", "password of root"), nil)
	if r.status != http.StatusForbidden || strings.Contains(r.body, "before-upgrade") {
		t.Errorf("volumes without a user store behind auth: %d", r.status)
	}
}
