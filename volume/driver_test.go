package volume_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/local"
	"github.com/dockyard/dockyard/volume"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func needFUSE(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("FUSE is not available: %v", err)
	}
	f.Close()
	if os.Geteuid() != 0 {
		t.Skip("mounting needs root")
	}
}

// startCluster runs a local cluster for the test's length.
func startCluster(t *testing.T) *local.Cluster {
	t.Helper()
	cl, err := local.Start(local.Config{Dir: t.TempDir(), HeartbeatInterval: 100 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// newDriver runs a local cluster and a driver on it.
func newDriver(t *testing.T) (*volume.Driver, *local.Cluster) {
	t.Helper()
	cl := startCluster(t)
	// Relative, as `dockyard serve --data dir` gives it.
	t.Chdir(t.TempDir())
	d, err := volume.New(context.Background(), cl.FS, volume.Options{MountDir: "mnt", Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d, cl
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	d, cl := newDriver(t)
	if err := d.Create(ctx, "data", map[string]string{"mode": "0750", "uid": "1000", "gid": "1001"}); err != nil {
		t.Fatal(err)
	}
	if err := d.Create(ctx, "data", nil); err != nil {
		t.Errorf("creating an existing volume again: %v", err)
	}
	if err := d.Create(ctx, "logs.v2", nil); err != nil {
		t.Fatal(err)
	}
	a, err := cl.FS.Stat(ctx, "/volumes/data")
	if err != nil {
		t.Fatal(err)
	}
	if a.Mode&0o7777 != 0o750 || a.Uid != 1000 || a.Gid != 1001 {
		t.Errorf("volume root mode %o uid %d gid %d, want 750, 1000, 1001", a.Mode&0o7777, a.Uid, a.Gid)
	}
	v, err := d.Get(ctx, "data")
	if err != nil || v.Name != "data" || v.Mountpoint != "" || v.CreatedAt.IsZero() {
		t.Errorf("Get = %+v, %v", v, err)
	}
	vols, err := d.List(ctx)
	if err != nil || len(vols) != 2 || vols[0].Name != "data" || vols[1].Name != "logs.v2" {
		t.Errorf("List = %+v, %v", vols, err)
	}
	// A volume with files in it goes whole.
	if _, err := cl.FS.MkdirAll(ctx, "/volumes/data/sub/deeper", 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := cl.FS.WriteFile(ctx, "/volumes/data/sub/f", strings.NewReader("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.Remove(ctx, "data"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get(ctx, "data"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Get after Remove = %v, want ErrNotFound", err)
	}
	if err := d.Remove(ctx, "data"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("second Remove = %v, want ErrNotFound", err)
	}
}

func TestBadInput(t *testing.T) {
	ctx := context.Background()
	d, cl := newDriver(t)
	for _, name := range []string{"", "a", "..", "../x", "a/b", ".hidden", "-x", "x y", "x\x00", strings.Repeat("v", 256)} {
		if err := d.Create(ctx, name, nil); !errors.Is(err, volume.ErrBadName) {
			t.Errorf("Create(%q) = %v, want ErrBadName", name, err)
		}
		if _, err := d.Mount(ctx, name, "id"); !errors.Is(err, volume.ErrBadName) {
			t.Errorf("Mount(%q) = %v, want ErrBadName", name, err)
		}
	}
	for _, opts := range []map[string]string{
		{"mode": "rwx"}, {"mode": "99"}, {"mode": "17777"}, {"uid": "-1"}, {"gid": "x"}, {"size": "1G"},
	} {
		if err := d.Create(ctx, "vol", opts); !errors.Is(err, volume.ErrBadOpt) {
			t.Errorf("Create with %v = %v, want ErrBadOpt", opts, err)
		}
	}
	// Refused creates leave nothing behind.
	if _, err := cl.FS.Stat(ctx, "/volumes/vol"); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("a refused create left /volumes/vol: %v", err)
	}
	if _, err := d.Mount(ctx, "missing", "id"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Mount of a missing volume = %v, want ErrNotFound", err)
	}
	if err := d.Unmount(ctx, "missing", "id"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Unmount of a volume not mounted = %v, want ErrNotFound", err)
	}
	// A file where a volume's directory would be is not a volume.
	if _, err := cl.FS.WriteFile(ctx, "/volumes/afile", strings.NewReader("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Get(ctx, "afile"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Get of a plain file under /volumes = %v, want ErrNotFound", err)
	}
	if err := d.Create(ctx, "afile", nil); err == nil {
		t.Error("Create over a plain file succeeded")
	}
	if vols, _ := d.List(ctx); len(vols) != 0 {
		t.Errorf("List shows %+v, want no volumes", vols)
	}
}

func TestMountSharedByContainers(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	d, cl := newDriver(t)
	if err := d.Create(ctx, "shared", nil); err != nil {
		t.Fatal(err)
	}
	p1, err := d.Mount(ctx, "shared", "c1")
	if err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(p1) {
		t.Errorf("mount point %q is relative; dockerd would resolve it from its own directory", p1)
	}
	p2, err := d.Mount(ctx, "shared", "c2")
	if err != nil || p2 != p1 {
		t.Fatalf("second Mount = %q, %v; want the same %q", p2, err, p1)
	}
	if p, err := d.Path(ctx, "shared"); err != nil || p != p1 {
		t.Errorf("Path = %q, %v; want %q", p, err, p1)
	}
	// Written through the mount, stored in the file system, and the mount
	// shows only the volume's own tree.
	if err := os.WriteFile(filepath.Join(p1, "hello"), []byte("from a container"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(p1, "dir"), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := cl.FS.OpenPath(ctx, "/volumes/shared/hello")
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 64)
	n, _ := f.ReadAt(got, 0)
	f.Close()
	if string(got[:n]) != "from a container" {
		t.Errorf("the file system holds %q", got[:n])
	}
	ents, err := os.ReadDir(p1)
	if err != nil || len(ents) != 2 {
		t.Errorf("the volume's mount lists %v, %v; want dir and hello", ents, err)
	}
	if err := d.Remove(ctx, "shared"); !errors.Is(err, volume.ErrInUse) {
		t.Errorf("Remove of a mounted volume = %v, want ErrInUse", err)
	}
	if err := d.Unmount(ctx, "shared", "c1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(p1, "hello")); err != nil {
		t.Errorf("the volume went away while c2 still uses it: %v", err)
	}
	if err := d.Unmount(ctx, "shared", "c2"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(p1); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mount point after the last Unmount: %v, want it gone", err)
	}
	if p, _ := d.Path(ctx, "shared"); p != "" {
		t.Errorf("Path after the last Unmount = %q", p)
	}
	// Mounted again, the data is still there.
	p3, err := d.Mount(ctx, "shared", "c3")
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(p3, "hello")); err != nil || string(b) != "from a container" {
		t.Errorf("after remounting: %q, %v", b, err)
	}
	d.Close()
	if _, err := os.Stat(p3); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("mount point after Close: %v, want it gone", err)
	}
}

// post sends one plugin request to h and decodes the answer.
func post(t *testing.T, h http.Handler, path, body string) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s: answer %q is not JSON: %v", path, rec.Body.String(), err)
	}
	if ct := rec.Header().Get("Content-Type"); ct != volume.ContentType {
		t.Errorf("%s: Content-Type %q", path, ct)
	}
	return rec.Code, out
}

func TestProtocol(t *testing.T) {
	d, _ := newDriver(t)
	h := d.Handler()
	if code, out := post(t, h, "/Plugin.Activate", ""); code != 200 || !strings.Contains(toJSON(out["Implements"]), "VolumeDriver") {
		t.Errorf("Activate = %d %v", code, out)
	}
	if code, out := post(t, h, "/VolumeDriver.Capabilities", "{}"); code != 200 || toJSON(out["Capabilities"]) != `{"Scope":"global"}` {
		t.Errorf("Capabilities = %d %v", code, out)
	}
	if code, out := post(t, h, "/VolumeDriver.Create", `{"Name":"web","Opts":{"mode":"0700"}}`); code != 200 || out["Err"] != "" {
		t.Errorf("Create = %d %v", code, out)
	}
	code, out := post(t, h, "/VolumeDriver.Get", `{"Name":"web"}`)
	vol, _ := out["Volume"].(map[string]any)
	if code != 200 || vol["Name"] != "web" || vol["CreatedAt"] == "" || toJSON(vol["Status"]) != `{"path":"dfs:/volumes/web"}` {
		t.Errorf("Get = %d %v", code, out)
	}
	if code, out := post(t, h, "/VolumeDriver.List", "{}"); code != 200 || !strings.Contains(toJSON(out["Volumes"]), `"Name":"web"`) {
		t.Errorf("List = %d %v", code, out)
	}
	if code, out := post(t, h, "/VolumeDriver.Path", `{"Name":"web"}`); code != 200 || out["Mountpoint"] != "" {
		t.Errorf("Path of an unmounted volume = %d %v", code, out)
	}
	// Failures: status 500 and the reason in Err, which dockerd shows.
	for _, c := range []struct{ path, body, want string }{
		{"/VolumeDriver.Create", `{"Name":"../etc"}`, "invalid volume name"},
		{"/VolumeDriver.Create", `{"Name":"x1","Opts":{"size":"1G"}}`, "invalid volume option"},
		{"/VolumeDriver.Get", `{"Name":"nope"}`, "no such volume"},
		{"/VolumeDriver.Mount", `{"Name":"nope","ID":"c"}`, "no such volume"},
		{"/VolumeDriver.Remove", `{"Name":"nope"}`, "no such volume"},
		{"/VolumeDriver.Create", `{"Name":`, "malformed request"},
		{"/VolumeDriver.Create", `{"Name":"big","Opts":{"mode":"` + strings.Repeat("7", 2<<20) + `"}}`, "too large"},
	} {
		code, out := post(t, h, c.path, c.body)
		if code != 500 || !strings.Contains(out["Err"].(string), c.want) {
			t.Errorf("%s %.60s = %d %v, want 500 and %q", c.path, c.body, code, out, c.want)
		}
	}
	if code, out := post(t, h, "/VolumeDriver.Remove", `{"Name":"web"}`); code != 200 || out["Err"] != "" {
		t.Errorf("Remove = %d %v", code, out)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/VolumeDriver.List", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET of an operation = %d, want 405", rec.Code)
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(bytes.TrimSpace(b))
}

func TestListen(t *testing.T) {
	dir, err := os.MkdirTemp("", "vp")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "plugins", "dy.sock")
	ln, err := volume.Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: %v, %v; want 0600", fi.Mode(), err)
	}
	go http.Serve(ln, http.NotFoundHandler())
	if _, err := volume.Listen(sock); err == nil || !strings.Contains(err.Error(), "another plugin") {
		t.Errorf("Listen on a live socket = %v, want a refusal", err)
	}
	ln.Close()
	// Left by a plugin that died: replaced.
	stale, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	ln, err = volume.Listen(sock)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln.Close()
	plain := filepath.Join(dir, "plain")
	if err := os.WriteFile(plain, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := volume.Listen(plain); err == nil {
		t.Error("Listen replaced a regular file")
	}
	if b, _ := os.ReadFile(plain); string(b) != "x" {
		t.Error("the regular file was touched")
	}
}

func TestStaleMountsCleared(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	cl := startCluster(t)
	mountDir := t.TempDir()
	d, err := volume.New(ctx, cl.FS, volume.Options{MountDir: mountDir, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Create(ctx, "v1", nil); err != nil {
		t.Fatal(err)
	}
	p, err := d.Mount(ctx, "v1", "c")
	if err != nil {
		t.Fatal(err)
	}
	// A second driver on the same directory, as after a crash of the
	// first: the mount it finds there is detached and removed, and the
	// volume mounts again.
	d2, err := volume.New(ctx, cl.FS, volume.Options{MountDir: mountDir, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale mount point: %v, want it gone", err)
	}
	p2, err := d2.Mount(ctx, "v1", "c")
	if err != nil || p2 != p {
		t.Fatalf("Mount after the restart = %q, %v", p2, err)
	}
	if err := os.WriteFile(filepath.Join(p2, "f"), []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
	d.Close() // the first driver's server; its mount was already detached
}

// TestVolumeSurvivesChunkserverLoss: a file written into a volume through its
// mount reads back whole, through a fresh mount, with two of the six
// chunkservers down (4+2).
func TestVolumeSurvivesChunkserverLoss(t *testing.T) {
	needFUSE(t)
	ctx := context.Background()
	d, cl := newDriver(t)
	if err := d.Create(ctx, "durable", nil); err != nil {
		t.Fatal(err)
	}
	p, err := d.Mount(ctx, "durable", "writer")
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 9<<20+12345) // several chunks and a partial one
	for i := range data {
		data[i] = byte(i*31 + i>>11)
	}
	f, err := os.Create(filepath.Join(p, "blob"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Unmount(ctx, "durable", "writer"); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{1, 4} {
		if err := cl.Kill(i); err != nil {
			t.Fatal(err)
		}
	}
	// Another host's plugin: its own client, no block cache, so every byte
	// comes from the four chunkservers left.
	d2, err := volume.New(ctx, dfs.New(cl.Meta, cl.Shards, dfs.Options{CacheBytes: -1, Logger: quiet()}),
		volume.Options{MountDir: t.TempDir(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	p, err = d2.Mount(ctx, "durable", "reader")
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(p, "blob"))
	if err != nil {
		t.Fatalf("reading with two chunkservers down: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, not the %d written", len(got), len(data))
	}
}
