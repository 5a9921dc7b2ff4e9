package fuse

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dockyard/dockyard/metaserver"
)

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// overwrite writes data at offset 0 of an existing file without truncating
// it, so the size stays the same and only the content generation changes.
func overwrite(t *testing.T, path string, data []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCloseToOpen: a file written and closed on one mount is read fresh by
// the next open on another, even though that mount caches names and
// attributes for a minute and holds the old content in its page cache.
func TestCloseToOpen(t *testing.T) {
	c := newCluster(t)
	a, _ := c.mount(t, Options{})
	b, _ := c.mount(t, Options{EntryTimeout: time.Minute, AttrTimeout: time.Minute})

	v1 := randomBytes(t, 300<<10)
	if err := os.WriteFile(filepath.Join(a, "f"), v1, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(b, "f")); !bytes.Equal(got, v1) {
		t.Fatalf("mount B read %d bytes, not what A wrote", len(got))
	}

	// Same size, new content: only the generation tells the page cache is
	// stale.
	v2 := randomBytes(t, len(v1))
	overwrite(t, filepath.Join(a, "f"), v2)
	if got := readFile(t, filepath.Join(b, "f")); !bytes.Equal(got, v2) {
		t.Fatal("mount B served its stale page cache after A rewrote the file")
	}

	// Grown: B's cached size would cut the read short.
	v3 := append(v2, randomBytes(t, 5<<20)...)
	if err := os.WriteFile(filepath.Join(a, "f"), v3, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(b, "f")); !bytes.Equal(got, v3) {
		t.Fatalf("mount B read %d bytes after A grew the file to %d", len(got), len(v3))
	}

	// Shrunk.
	v4 := v3[:1000]
	if err := os.WriteFile(filepath.Join(a, "f"), v4, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(b, "f")); !bytes.Equal(got, v4) {
		t.Fatalf("mount B read %d bytes after A shrank the file to %d", len(got), len(v4))
	}
}

// TestRenameUnlinkSeenByOtherMount: namespace changes on one mount show on
// the other once its entry cache expires.
func TestRenameUnlinkSeenByOtherMount(t *testing.T) {
	c := newCluster(t)
	a, _ := c.mount(t, Options{})
	b, _ := c.mount(t, Options{EntryTimeout: 200 * time.Millisecond, AttrTimeout: 200 * time.Millisecond})

	if err := os.MkdirAll(filepath.Join(a, "d/e"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := []byte("hello from a")
	if err := os.WriteFile(filepath.Join(a, "d/old"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(b, "d/old")); !bytes.Equal(got, want) {
		t.Fatalf("B read %q", got)
	}
	if err := os.Rename(filepath.Join(a, "d/old"), filepath.Join(a, "d/e/new")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "rename seen on B", func() bool {
		_, errOld := os.Stat(filepath.Join(b, "d/old"))
		got, errNew := os.ReadFile(filepath.Join(b, "d/e/new"))
		return errors.Is(errOld, fs.ErrNotExist) && errNew == nil && bytes.Equal(got, want)
	})
	if err := os.Remove(filepath.Join(a, "d/e/new")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "unlink seen on B", func() bool {
		_, err := os.Stat(filepath.Join(b, "d/e/new"))
		return errors.Is(err, fs.ErrNotExist)
	})
	ents, err := os.ReadDir(filepath.Join(b, "d/e"))
	if err != nil || len(ents) != 0 {
		t.Fatalf("B lists %v (%v), want an empty directory", ents, err)
	}
	// A file created on A is found on B at once: failed lookups are not
	// cached.
	if err := os.WriteFile(filepath.Join(a, "d/fresh"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(b, "d/fresh")); !bytes.Equal(got, want) {
		t.Fatalf("B read %q", got)
	}
}

// orphans lists the orphan links a mount holds.
func orphans(t *testing.T, srv *Server) []metaserver.DirEntry {
	t.Helper()
	o := srv.root.(*node).m.orphans
	o.mu.Lock()
	dir := o.dir
	o.mu.Unlock()
	if dir == 0 {
		return nil
	}
	ents, err := o.m.meta.ReadDir(context.Background(), dir, "", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	return ents
}

// TestOpenUnlinked: a file unlinked (or renamed over) while open stays
// readable and writable through its descriptor, reports no links, and is
// gone for good after the last close.
func TestOpenUnlinked(t *testing.T) {
	c := newCluster(t)
	a, srv := c.mount(t, Options{})
	b, _ := c.mount(t, Options{})
	path := filepath.Join(a, "f")
	data := randomBytes(t, 9<<20)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	ino := metaserver.Ino(st.Ino)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(b, "f")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the other mount still sees the unlinked file: %v", err)
	}
	if ents, err := os.ReadDir(a); err != nil || len(ents) != 0 {
		t.Fatalf("root lists %v (%v) after the unlink; the orphan must not show", ents, err)
	}
	got := make([]byte, len(data))
	if _, err := f.ReadAt(got, 0); err != nil {
		t.Fatalf("reading the unlinked file: %v", err)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the unlinked file's content changed")
	}
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Nlink != 0 || st.Size != int64(len(data)) {
		t.Fatalf("fstat after unlink: nlink %d size %d, want 0 and %d", st.Nlink, st.Size, len(data))
	}
	if n := len(orphans(t, srv)); n != 1 {
		t.Fatalf("%d orphan links held, want 1", n)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// Release runs after close(2) returns, asynchronously to it.
	waitFor(t, 5*time.Second, "the orphan link removed", func() bool { return len(orphans(t, srv)) == 0 })
	if _, err := c.api.GetAttr(context.Background(), ino); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("inode %d still exists after the last close: %v", ino, err)
	}

	// Renamed over while open: the replaced file stays readable.
	old := []byte("the old content")
	if err := os.WriteFile(filepath.Join(a, "dst"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a, "src"), []byte("new"), 0o644); err != nil {
		t.Fatal(err)
	}
	g, err := os.Open(filepath.Join(a, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if err := os.Rename(filepath.Join(a, "src"), filepath.Join(a, "dst")); err != nil {
		t.Fatal(err)
	}
	got = make([]byte, len(old))
	if _, err := g.ReadAt(got, 0); err != nil || !bytes.Equal(got, old) {
		t.Fatalf("replaced file read %q, %v", got, err)
	}
	g.Close()
	waitFor(t, 5*time.Second, "the orphan link removed", func() bool { return len(orphans(t, srv)) == 0 })
}

// TestOrphansSweptAfterCrash: the orphan directory of a mount whose process
// is gone is removed by the next mount on the host.
func TestOrphansSweptAfterCrash(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	o := newOrphanage(&mountState{meta: c.api})
	hostPart, _, _ := strings.Cut(o.name, "-")
	// A pid far above pid_max cannot be running.
	dead := hostPart + "-" + strconv.Itoa(1<<30) + "-0badc0de"
	alive := hostPart + "-" + strconv.Itoa(os.Getpid()) + "-00000001"
	res, err := o.mkdir(ctx, metaserver.RootIno, ReservedName, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	od, err := o.mkdir(ctx, res, OrphanDir, 0o700)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{dead, alive} {
		d, err := o.mkdir(ctx, od, name, 0o700)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.api.Create(ctx, metaserver.CreateIn{Parent: d, Name: "42", Mode: syscall.S_IFREG | 0o600}); err != nil {
			t.Fatal(err)
		}
	}
	c.mount(t, Options{})
	if _, err := c.api.Lookup(ctx, od, dead); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("the dead mount's orphans survived: %v", err)
	}
	if _, err := c.api.Lookup(ctx, od, alive); err != nil {
		t.Fatalf("a live mount's orphans were swept: %v", err)
	}
}

// TestReservedTreeHidden: /.dockyard does not show in a mount of the whole
// namespace unless asked for, and cannot be replaced through it.
func TestReservedTreeHidden(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	res, err := c.api.Create(ctx, metaserver.CreateIn{Parent: metaserver.RootIno, Name: ReservedName, Mode: syscall.S_IFDIR | 0o755})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.api.Create(ctx, metaserver.CreateIn{Parent: res.Ino, Name: "registry", Mode: syscall.S_IFDIR | 0o755}); err != nil {
		t.Fatal(err)
	}
	a, _ := c.mount(t, Options{})
	if err := os.WriteFile(filepath.Join(a, "visible"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(a)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "visible" {
		t.Fatalf("root lists %v, want only \"visible\"", ents)
	}
	if _, err := os.Stat(filepath.Join(a, ReservedName)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("stat of the reserved tree: %v, want ENOENT", err)
	}
	if err := os.Rename(filepath.Join(a, "visible"), filepath.Join(a, ReservedName)); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("rename onto the reserved tree: %v, want EPERM", err)
	}
	if err := os.Mkdir(filepath.Join(a, ReservedName), 0o755); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("mkdir of the reserved name: %v, want EEXIST", err)
	}

	shown, _ := c.mount(t, Options{ShowReserved: true})
	if _, err := os.Stat(filepath.Join(shown, ReservedName, "registry")); err != nil {
		t.Fatalf("with ShowReserved: %v", err)
	}
}

// TestSubtreeReadOnly: a read-only mount of a subtree (what the image mount
// builds on) serves reads and refuses every change.
func TestSubtreeReadOnly(t *testing.T) {
	c := newCluster(t)
	a, _ := c.mount(t, Options{})
	if err := os.MkdirAll(filepath.Join(a, "img/etc"), 0o755); err != nil {
		t.Fatal(err)
	}
	want := []byte("ro content")
	if err := os.WriteFile(filepath.Join(a, "img/etc/hosts"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	attr, err := c.api.ResolvePath(context.Background(), "/img")
	if err != nil {
		t.Fatal(err)
	}
	ro, _ := c.mount(t, Options{Root: attr.Ino, ReadOnly: true})
	if got := readFile(t, filepath.Join(ro, "etc/hosts")); !bytes.Equal(got, want) {
		t.Fatalf("read %q", got)
	}
	for what, err := range map[string]error{
		"create":   os.WriteFile(filepath.Join(ro, "new"), nil, 0o644),
		"write":    os.WriteFile(filepath.Join(ro, "etc/hosts"), []byte("x"), 0o644),
		"mkdir":    os.Mkdir(filepath.Join(ro, "d"), 0o755),
		"remove":   os.Remove(filepath.Join(ro, "etc/hosts")),
		"chmod":    os.Chmod(filepath.Join(ro, "etc/hosts"), 0o600),
		"rename":   os.Rename(filepath.Join(ro, "etc/hosts"), filepath.Join(ro, "etc/h2")),
		"symlink":  os.Symlink("x", filepath.Join(ro, "l")),
		"truncate": os.Truncate(filepath.Join(ro, "etc/hosts"), 0),
	} {
		if !errors.Is(err, syscall.EROFS) {
			t.Errorf("%s on a read-only mount: %v, want EROFS", what, err)
		}
	}
}

// TestMountErrors: the failures a user meets get clear, matchable errors.
func TestMountErrors(t *testing.T) {
	c := newCluster(t)
	ctx := context.Background()
	missing := filepath.Join(t.TempDir(), "missing")
	if _, err := Mount(ctx, missing, c.client(t), Options{}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("mount on a missing directory: %v", err)
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Mount(ctx, file, c.client(t), Options{}); !errors.Is(err, syscall.ENOTDIR) {
		t.Errorf("mount on a file: %v", err)
	}
	a, srv := c.mount(t, Options{})
	if s, err := Mount(ctx, a, c.client(t), Options{}); !errors.Is(err, ErrAlreadyMounted) {
		if err == nil {
			s.Unmount()
		}
		t.Errorf("second mount on one directory: %v", err)
	}
	if err := Unmount(t.TempDir(), false); !errors.Is(err, ErrNotMounted) {
		t.Errorf("unmount of a plain directory: %v", err)
	}
	f, err := os.Create(filepath.Join(a, "open"))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Unmount(); !errors.Is(err, ErrBusy) {
		t.Errorf("unmount with a file open: %v", err)
	}
	if err := Unmount(a, false); !errors.Is(err, ErrBusy) {
		t.Errorf("unmount by path with a file open: %v", err)
	}
	f.Close()
}

func TestToErrno(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want syscall.Errno
	}{
		{metaserver.Errf("lookup", syscall.ENOENT, "x"), syscall.ENOENT},
		{errors.Join(errors.New("ctx"), metaserver.Errf("create", syscall.EEXIST, "")), syscall.EEXIST},
		{syscall.ENOTEMPTY, syscall.ENOTEMPTY},
		{metaserver.ErrNoSpace, syscall.ENOSPC},
		{context.Canceled, syscall.EINTR},
		{errors.New("chunk 3: only 2 of 4 shards readable"), syscall.EIO},
	} {
		if got := toErrno(tc.err); got != tc.want {
			t.Errorf("toErrno(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	for in, want := range map[string]string{
		`/mnt/plain`:       "/mnt/plain",
		`/mnt/with\040sp`:  "/mnt/with sp",
		`/mnt/tab\011x`:    "/mnt/tab\tx",
		`/mnt/back\134sl`:  `/mnt/back\sl`,
		`/mnt/trailing\04`: `/mnt/trailing\04`,
	} {
		if got := unescapeMount(in); got != want {
			t.Errorf("unescapeMount(%q) = %q, want %q", in, got, want)
		}
	}
}

// mountFlags returns the per-mount options of dir from mountinfo.
func mountFlags(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 5 && f[4] == dir {
			return f[5]
		}
	}
	t.Fatalf("%s is not in the mount table", dir)
	return ""
}

// TestMountFlags: mounts are nosuid, nodev and noatime unless asked for
// setuid programs.
func TestMountFlags(t *testing.T) {
	c := newCluster(t)
	plain, _ := c.mount(t, Options{})
	flags := mountFlags(t, plain)
	for _, want := range []string{"nosuid", "nodev", "noatime"} {
		if !strings.Contains(flags, want) {
			t.Errorf("default mount flags %q lack %s", flags, want)
		}
	}
	suid, _ := c.mount(t, Options{Suid: true})
	if flags := mountFlags(t, suid); strings.Contains(flags, "nosuid") || !strings.Contains(flags, "nodev") {
		t.Errorf("Suid mount flags %q, want suid and nodev", flags)
	}
}
