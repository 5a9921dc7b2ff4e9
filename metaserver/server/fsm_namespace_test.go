package server

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	ms "github.com/dockyard/dockyard/metaserver"
)

// fakeClock is a settable clock for Memory.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func newMem(t *testing.T) (*Memory, *ms.Client, *fakeClock) {
	t.Helper()
	m := NewMemory()
	clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
	m.Now = clk.now
	return m, m.API(), clk
}

func mustCreate(t *testing.T, c *ms.Client, parent ms.Ino, name string, mode uint32) ms.Attr {
	t.Helper()
	a, err := c.Create(context.Background(), ms.CreateIn{Parent: parent, Name: name, Mode: mode, Uid: 1000, Gid: 1000, Exclusive: true})
	if err != nil {
		t.Fatalf("create %q: %v", name, err)
	}
	return a
}

func wantErrno(t *testing.T, what string, err error, want syscall.Errno) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
	var e *ms.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: %v is not a *metaserver.Error", what, err)
	}
}

func TestNamespaceErrors(t *testing.T) {
	ctx := context.Background()
	_, c, _ := newMem(t)
	dir := mustCreate(t, c, ms.RootIno, "dir", syscall.S_IFDIR|0o755)
	file := mustCreate(t, c, ms.RootIno, "file", syscall.S_IFREG|0o644)
	mustCreate(t, c, dir.Ino, "inner", syscall.S_IFREG|0o644)
	empty := mustCreate(t, c, ms.RootIno, "empty", syscall.S_IFDIR|0o755)
	long := strings.Repeat("x", ms.MaxNameLen+1)

	cases := []struct {
		name string
		op   func() error
		want syscall.Errno
	}{
		{"lookup missing", func() error { _, err := c.Lookup(ctx, ms.RootIno, "nope"); return err }, syscall.ENOENT},
		{"lookup in file", func() error { _, err := c.Lookup(ctx, file.Ino, "x"); return err }, syscall.ENOTDIR},
		{"lookup in missing dir", func() error { _, err := c.Lookup(ctx, 999, "x"); return err }, syscall.ENOENT},
		{"lookup slash", func() error { _, err := c.Lookup(ctx, ms.RootIno, "a/b"); return err }, syscall.EINVAL},
		{"lookup too long", func() error { _, err := c.Lookup(ctx, ms.RootIno, long); return err }, syscall.ENAMETOOLONG},
		{"getattr missing", func() error { _, err := c.GetAttr(ctx, 999); return err }, syscall.ENOENT},
		{"create exists", func() error {
			_, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "file", Mode: syscall.S_IFREG, Exclusive: true})
			return err
		}, syscall.EEXIST},
		{"mkdir exists", func() error {
			_, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "file", Mode: syscall.S_IFDIR})
			return err
		}, syscall.EEXIST},
		{"create over dir", func() error {
			_, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "dir", Mode: syscall.S_IFREG})
			return err
		}, syscall.EISDIR},
		{"create in file", func() error {
			_, err := c.Create(ctx, ms.CreateIn{Parent: file.Ino, Name: "x", Mode: syscall.S_IFREG})
			return err
		}, syscall.ENOTDIR},
		{"create in missing", func() error {
			_, err := c.Create(ctx, ms.CreateIn{Parent: 999, Name: "x", Mode: syscall.S_IFREG})
			return err
		}, syscall.ENOENT},
		{"create empty name", func() error {
			_, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "", Mode: syscall.S_IFREG})
			return err
		}, syscall.EINVAL},
		{"create dot", func() error {
			_, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: ".", Mode: syscall.S_IFREG})
			return err
		}, syscall.EINVAL},
		{"create dotdot", func() error {
			_, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "..", Mode: syscall.S_IFDIR})
			return err
		}, syscall.EINVAL},
		{"create NUL", func() error {
			_, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "a\x00b", Mode: syscall.S_IFREG})
			return err
		}, syscall.EINVAL},
		{"create slash", func() error {
			_, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "a/b", Mode: syscall.S_IFREG})
			return err
		}, syscall.EINVAL},
		{"create too long", func() error {
			_, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: long, Mode: syscall.S_IFREG})
			return err
		}, syscall.ENAMETOOLONG},
		{"create bad type", func() error {
			_, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "t", Mode: 0o170000})
			return err
		}, syscall.EINVAL},
		{"symlink empty target", func() error {
			_, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "l", Mode: syscall.S_IFLNK | 0o777})
			return err
		}, syscall.ENOENT},
		{"unlink missing", func() error { return c.Unlink(ctx, ms.RootIno, "nope") }, syscall.ENOENT},
		{"unlink dir", func() error { return c.Unlink(ctx, ms.RootIno, "dir") }, syscall.EISDIR},
		{"unlink in file", func() error { return c.Unlink(ctx, file.Ino, "x") }, syscall.ENOTDIR},
		{"rmdir file", func() error { return c.Rmdir(ctx, ms.RootIno, "file") }, syscall.ENOTDIR},
		{"rmdir non-empty", func() error { return c.Rmdir(ctx, ms.RootIno, "dir") }, syscall.ENOTEMPTY},
		{"rmdir missing", func() error { return c.Rmdir(ctx, ms.RootIno, "nope") }, syscall.ENOENT},
		{"rmdir dot", func() error { return c.Rmdir(ctx, ms.RootIno, ".") }, syscall.EINVAL},
		{"link dir", func() error { _, err := c.Link(ctx, dir.Ino, ms.RootIno, "d2"); return err }, syscall.EPERM},
		{"link exists", func() error { _, err := c.Link(ctx, file.Ino, ms.RootIno, "dir"); return err }, syscall.EEXIST},
		{"link missing", func() error { _, err := c.Link(ctx, 999, ms.RootIno, "x"); return err }, syscall.ENOENT},
		{"link into file", func() error { _, err := c.Link(ctx, file.Ino, file.Ino, "x"); return err }, syscall.ENOTDIR},
		{"rename missing", func() error { return c.Rename(ctx, ms.RootIno, "nope", ms.RootIno, "x", 0) }, syscall.ENOENT},
		{"rename dir over file", func() error { return c.Rename(ctx, ms.RootIno, "empty", ms.RootIno, "file", 0) }, syscall.ENOTDIR},
		{"rename file over dir", func() error { return c.Rename(ctx, ms.RootIno, "file", ms.RootIno, "empty", 0) }, syscall.EISDIR},
		{"rename over non-empty dir", func() error { return c.Rename(ctx, ms.RootIno, "empty", ms.RootIno, "dir", 0) }, syscall.ENOTEMPTY},
		{"rename into own subtree", func() error { return c.Rename(ctx, ms.RootIno, "dir", dir.Ino, "sub", 0) }, syscall.EINVAL},
		{"rename noreplace", func() error {
			return c.Rename(ctx, ms.RootIno, "file", ms.RootIno, "dir", ms.RenameNoreplace)
		}, syscall.EEXIST},
		{"rename exchange missing", func() error {
			return c.Rename(ctx, ms.RootIno, "file", ms.RootIno, "nope", ms.RenameExchange)
		}, syscall.ENOENT},
		{"rename both flags", func() error {
			return c.Rename(ctx, ms.RootIno, "file", ms.RootIno, "x", ms.RenameExchange|ms.RenameNoreplace)
		}, syscall.EINVAL},
		{"rename to too long", func() error { return c.Rename(ctx, ms.RootIno, "file", ms.RootIno, long, 0) }, syscall.ENAMETOOLONG},
		{"rename into file", func() error { return c.Rename(ctx, ms.RootIno, "file", file.Ino, "x", 0) }, syscall.ENOTDIR},
		{"truncate dir", func() error {
			sz := uint64(0)
			_, err := c.SetAttr(ctx, dir.Ino, ms.SetAttrIn{Size: &sz})
			return err
		}, syscall.EISDIR},
		{"setattr missing", func() error { _, err := c.SetAttr(ctx, 999, ms.SetAttrIn{}); return err }, syscall.ENOENT},
		{"readdir file", func() error { _, err := c.ReadDir(ctx, file.Ino, "", 0, false); return err }, syscall.ENOTDIR},
		{"getxattr missing", func() error { _, err := c.GetXattr(ctx, file.Ino, "user.x"); return err }, syscall.ENODATA},
		{"removexattr missing", func() error { return c.RemoveXattr(ctx, file.Ino, "user.x") }, syscall.ENODATA},
		{"setxattr replace missing", func() error { return c.SetXattr(ctx, file.Ino, "user.x", []byte("v"), xattrReplace) }, syscall.ENODATA},
		{"setxattr empty name", func() error { return c.SetXattr(ctx, file.Ino, "", []byte("v"), 0) }, syscall.EINVAL},
		{"setxattr too big", func() error { return c.SetXattr(ctx, file.Ino, "user.x", make([]byte, maxXattrValue+1), 0) }, syscall.E2BIG},
		{"resolve missing", func() error { _, err := c.ResolvePath(ctx, "/dir/nope"); return err }, syscall.ENOENT},
		{"resolve through file", func() error { _, err := c.ResolvePath(ctx, "/file/x"); return err }, syscall.ENOTDIR},
		{"resolve dotdot of file", func() error { _, err := c.ResolvePath(ctx, "/file/.."); return err }, syscall.ENOTDIR},
		{"resolve relative", func() error { _, err := c.ResolvePath(ctx, "dir"); return err }, syscall.EINVAL},
		{"commit to dir", func() error { _, err := c.CommitExtents(ctx, dir.Ino, nil, nil, 0); return err }, syscall.EISDIR},
		{"commit unknown chunk", func() error {
			_, err := c.CommitExtents(ctx, file.Ino, []ms.Extent{{Off: 0, Len: 1, Chunk: 77}}, nil, 1)
			return err
		}, syscall.ENOENT},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			wantErrno(t, tc.name, tc.op(), tc.want)
		})
	}
	// None of the failures changed the tree.
	es, err := c.ReadDir(ctx, ms.RootIno, "", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range es {
		names = append(names, e.Name)
	}
	if got := strings.Join(names, ","); got != "dir,empty,file" {
		t.Fatalf("root after failures = %s", got)
	}
	if a, _ := c.GetAttr(ctx, empty.Ino); a.Nlink != 2 {
		t.Fatalf("empty dir nlink = %d", a.Nlink)
	}
}

func TestCreateKindsAndNlink(t *testing.T) {
	ctx := context.Background()
	_, c, clk := newMem(t)
	root0, _ := c.GetAttr(ctx, ms.RootIno)
	if root0.Nlink != 2 || !root0.IsDir() {
		t.Fatalf("root = %+v", root0)
	}
	clk.advance(time.Second)
	d := mustCreate(t, c, ms.RootIno, "d", syscall.S_IFDIR|0o750)
	if d.Nlink != 2 || d.Uid != 1000 || d.Mode != syscall.S_IFDIR|0o750 || d.Ctime != clk.t.UnixNano() {
		t.Fatalf("mkdir attr = %+v", d)
	}
	root, _ := c.GetAttr(ctx, ms.RootIno)
	if root.Nlink != 3 || root.Mtime != clk.t.UnixNano() {
		t.Fatalf("root after mkdir: nlink %d mtime %d", root.Nlink, root.Mtime)
	}
	sl, err := c.Create(ctx, ms.CreateIn{Parent: d.Ino, Name: "l", Mode: syscall.S_IFLNK | 0o777, Target: "../x"})
	if err != nil {
		t.Fatal(err)
	}
	in, _ := c.GetInode(ctx, sl.Ino)
	if in.Target != "../x" || in.Size != 4 {
		t.Fatalf("symlink inode = %+v", in)
	}
	dev, err := c.Create(ctx, ms.CreateIn{Parent: d.Ino, Name: "null", Mode: syscall.S_IFCHR | 0o666, Rdev: 0x103})
	if err != nil || dev.Rdev != 0x103 {
		t.Fatalf("mknod: %+v %v", dev, err)
	}
	fifo, err := c.Create(ctx, ms.CreateIn{Parent: d.Ino, Name: "p", Mode: syscall.S_IFIFO | 0o600})
	if err != nil || fifo.Mode&syscall.S_IFMT != syscall.S_IFIFO {
		t.Fatalf("mkfifo: %+v %v", fifo, err)
	}
	// mknod with no type makes a regular file.
	plain, err := c.Create(ctx, ms.CreateIn{Parent: d.Ino, Name: "plain", Mode: 0o644})
	if err != nil || !plain.IsRegular() {
		t.Fatalf("typeless create: %+v %v", plain, err)
	}
	// O_CREAT without O_EXCL on an existing file opens it.
	again, err := c.Create(ctx, ms.CreateIn{Parent: d.Ino, Name: "plain", Mode: syscall.S_IFREG | 0o600})
	if err != nil || again.Ino != plain.Ino || again.Mode != plain.Mode {
		t.Fatalf("non-exclusive re-create: %+v %v", again, err)
	}
	sub := mustCreate(t, c, d.Ino, "sub", syscall.S_IFDIR|0o755)
	if a, _ := c.GetAttr(ctx, d.Ino); a.Nlink != 3 {
		t.Fatalf("d nlink = %d, want 3", a.Nlink)
	}
	if err := c.Rmdir(ctx, d.Ino, "sub"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetAttr(ctx, sub.Ino); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("removed dir still there: %v", err)
	}
	if a, _ := c.GetAttr(ctx, d.Ino); a.Nlink != 2 {
		t.Fatalf("d nlink after rmdir = %d", a.Nlink)
	}
	if p, err := c.ResolvePath(ctx, "/d/./l"); err != nil || p.Ino != sl.Ino {
		t.Fatalf("resolve = %+v %v", p, err)
	}
	if p, err := c.ResolvePath(ctx, "/d/../d"); err != nil || p.Ino != d.Ino {
		t.Fatalf("resolve .. = %+v %v", p, err)
	}
	if p, err := c.ResolvePath(ctx, "/"); err != nil || p.Ino != ms.RootIno {
		t.Fatalf("resolve / = %+v %v", p, err)
	}
	st, err := c.StatFS(ctx)
	if err != nil || st.Files != 6 {
		t.Fatalf("statfs = %+v %v", st, err)
	}
}

func TestSetgidDirectory(t *testing.T) {
	ctx := context.Background()
	_, c, _ := newMem(t)
	g, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "g", Mode: syscall.S_IFDIR | syscall.S_ISGID | 0o775, Uid: 1, Gid: 500})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := c.Create(ctx, ms.CreateIn{Parent: g.Ino, Name: "f", Mode: syscall.S_IFREG | 0o644, Uid: 2, Gid: 2})
	d, _ := c.Create(ctx, ms.CreateIn{Parent: g.Ino, Name: "d", Mode: syscall.S_IFDIR | 0o755, Uid: 2, Gid: 2})
	if f.Gid != 500 || f.Mode&syscall.S_ISGID != 0 {
		t.Fatalf("file in setgid dir: gid %d mode %o", f.Gid, f.Mode)
	}
	if d.Gid != 500 || d.Mode&syscall.S_ISGID == 0 {
		t.Fatalf("dir in setgid dir: gid %d mode %o", d.Gid, d.Mode)
	}
}

func TestLinkUnlink(t *testing.T) {
	ctx := context.Background()
	_, c, clk := newMem(t)
	f := mustCreate(t, c, ms.RootIno, "f", syscall.S_IFREG|0o644)
	d := mustCreate(t, c, ms.RootIno, "d", syscall.S_IFDIR|0o755)
	clk.advance(time.Second)
	a, err := c.Link(ctx, f.Ino, d.Ino, "g")
	if err != nil || a.Nlink != 2 || a.Ctime != clk.t.UnixNano() {
		t.Fatalf("link: %+v %v", a, err)
	}
	if err := c.Unlink(ctx, ms.RootIno, "f"); err != nil {
		t.Fatal(err)
	}
	if a, err := c.GetAttr(ctx, f.Ino); err != nil || a.Nlink != 1 {
		t.Fatalf("after first unlink: %+v %v", a, err)
	}
	if err := c.Unlink(ctx, d.Ino, "g"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetAttr(ctx, f.Ino); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("inode with nlink 0 still there: %v", err)
	}
}

func TestRename(t *testing.T) {
	ctx := context.Background()
	_, c, _ := newMem(t)
	a := mustCreate(t, c, ms.RootIno, "a", syscall.S_IFDIR|0o755)
	b := mustCreate(t, c, ms.RootIno, "b", syscall.S_IFDIR|0o755)
	sub := mustCreate(t, c, a.Ino, "sub", syscall.S_IFDIR|0o755)
	f := mustCreate(t, c, a.Ino, "f", syscall.S_IFREG|0o644)
	g := mustCreate(t, c, b.Ino, "g", syscall.S_IFREG|0o644)

	// Move a directory across parents: nlinks follow "..".
	if err := c.Rename(ctx, a.Ino, "sub", b.Ino, "sub2", 0); err != nil {
		t.Fatal(err)
	}
	if x, _ := c.GetAttr(ctx, a.Ino); x.Nlink != 2 {
		t.Fatalf("a nlink = %d", x.Nlink)
	}
	if x, _ := c.GetAttr(ctx, b.Ino); x.Nlink != 3 {
		t.Fatalf("b nlink = %d", x.Nlink)
	}
	if p, _ := c.ResolvePath(ctx, "/b/sub2/.."); p.Ino != b.Ino {
		t.Fatalf(".. of moved dir = %d", p.Ino)
	}
	// Replace a file: the old target loses its name and, with nlink 0, its inode.
	if err := c.Rename(ctx, a.Ino, "f", b.Ino, "g", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetAttr(ctx, g.Ino); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("replaced inode still there: %v", err)
	}
	if x, _ := c.Lookup(ctx, b.Ino, "g"); x.Ino != f.Ino {
		t.Fatalf("b/g = %d, want %d", x.Ino, f.Ino)
	}
	// Directory over an empty directory.
	e := mustCreate(t, c, a.Ino, "e", syscall.S_IFDIR|0o755)
	if err := c.Rename(ctx, b.Ino, "sub2", a.Ino, "e", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetAttr(ctx, e.Ino); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("replaced dir still there: %v", err)
	}
	if x, _ := c.GetAttr(ctx, a.Ino); x.Nlink != 3 {
		t.Fatalf("a nlink after dir replace = %d", x.Nlink)
	}
	if x, _ := c.GetAttr(ctx, b.Ino); x.Nlink != 2 {
		t.Fatalf("b nlink after dir replace = %d", x.Nlink)
	}
	// Exchange a file and a directory across parents.
	if err := c.Rename(ctx, b.Ino, "g", a.Ino, "e", ms.RenameExchange); err != nil {
		t.Fatal(err)
	}
	if x, _ := c.Lookup(ctx, a.Ino, "e"); x.Ino != f.Ino {
		t.Fatalf("a/e = %d after exchange", x.Ino)
	}
	if x, _ := c.Lookup(ctx, b.Ino, "g"); x.Ino != sub.Ino {
		t.Fatalf("b/g = %d after exchange", x.Ino)
	}
	if x, _ := c.GetAttr(ctx, a.Ino); x.Nlink != 2 {
		t.Fatalf("a nlink after exchange = %d", x.Nlink)
	}
	if x, _ := c.GetAttr(ctx, b.Ino); x.Nlink != 3 {
		t.Fatalf("b nlink after exchange = %d", x.Nlink)
	}
	// Renaming onto another name of the same inode does nothing.
	if _, err := c.Link(ctx, f.Ino, ms.RootIno, "hard"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rename(ctx, ms.RootIno, "hard", a.Ino, "e", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Lookup(ctx, ms.RootIno, "hard"); err != nil {
		t.Fatalf("same-inode rename removed the source: %v", err)
	}
	// Noreplace to a free name works.
	if err := c.Rename(ctx, ms.RootIno, "hard", ms.RootIno, "hard2", ms.RenameNoreplace); err != nil {
		t.Fatal(err)
	}
	// A directory cannot be exchanged into its own subtree.
	inner := mustCreate(t, c, b.Ino, "inner", syscall.S_IFDIR|0o755)
	_ = inner
	err := c.Rename(ctx, ms.RootIno, "b", b.Ino, "inner", ms.RenameExchange)
	wantErrno(t, "exchange into own subtree", err, syscall.EINVAL)
}

func TestSetAttrAndXattrs(t *testing.T) {
	ctx := context.Background()
	_, c, clk := newMem(t)
	f := mustCreate(t, c, ms.RootIno, "f", syscall.S_IFREG|0o644)
	clk.advance(time.Second)
	mode, uid, mt := uint32(0o4755|syscall.S_IFDIR), uint32(7), int64(42)
	a, err := c.SetAttr(ctx, f.Ino, ms.SetAttrIn{Mode: &mode, Uid: &uid, Mtime: &mt})
	if err != nil {
		t.Fatal(err)
	}
	if a.Mode != syscall.S_IFREG|0o4755 || a.Uid != 7 || a.Gid != 1000 || a.Mtime != 42 || a.Ctime != clk.t.UnixNano() {
		t.Fatalf("setattr = %+v", a)
	}
	if err := c.SetXattr(ctx, f.Ino, "user.b", []byte("2"), 0); err != nil {
		t.Fatal(err)
	}
	if err := c.SetXattr(ctx, f.Ino, "user.a", nil, xattrCreate); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "create existing xattr", c.SetXattr(ctx, f.Ino, "user.a", []byte("x"), xattrCreate), syscall.EEXIST)
	if err := c.SetXattr(ctx, f.Ino, "user.a", []byte("1"), xattrReplace); err != nil {
		t.Fatal(err)
	}
	names, _ := c.ListXattr(ctx, f.Ino)
	if strings.Join(names, ",") != "user.a,user.b" {
		t.Fatalf("listxattr = %v", names)
	}
	if v, _ := c.GetXattr(ctx, f.Ino, "user.a"); string(v) != "1" {
		t.Fatalf("getxattr = %q", v)
	}
	if err := c.RemoveXattr(ctx, f.Ino, "user.a"); err != nil {
		t.Fatal(err)
	}
	names, _ = c.ListXattr(ctx, f.Ino)
	if strings.Join(names, ",") != "user.b" {
		t.Fatalf("listxattr after remove = %v", names)
	}
}

func TestReadDirPaging(t *testing.T) {
	ctx := context.Background()
	_, c, _ := newMem(t)
	d := mustCreate(t, c, ms.RootIno, "d", syscall.S_IFDIR|0o755)
	for _, n := range []string{"c", "a", "e", "b", "d"} {
		mustCreate(t, c, d.Ino, n, syscall.S_IFREG|0o644)
	}
	mustCreate(t, c, ms.RootIno, "z", syscall.S_IFREG|0o644) // other directory, must not leak in
	var got []string
	after := ""
	for {
		es, err := c.ReadDir(ctx, d.Ino, after, 2, true)
		if err != nil {
			t.Fatal(err)
		}
		if len(es) == 0 {
			break
		}
		for _, e := range es {
			if e.Attr == nil || e.Attr.Ino != e.Ino || e.Mode != syscall.S_IFREG {
				t.Fatalf("entry %+v", e)
			}
			got = append(got, e.Name)
		}
		after = es[len(es)-1].Name
	}
	if strings.Join(got, "") != "abcde" {
		t.Fatalf("paged listing = %v", got)
	}
	es, _ := c.ReadDir(ctx, d.Ino, "b", 0, false)
	if len(es) != 3 || es[0].Name != "c" || es[0].Attr != nil {
		t.Fatalf("after b = %+v", es)
	}
}

func TestCreateTree(t *testing.T) {
	ctx := context.Background()
	_, c, _ := newMem(t)
	base := mustCreate(t, c, ms.RootIno, "img", syscall.S_IFDIR|0o755)
	entries := []ms.TreeEntry{
		{ParentIdx: -1, CreateIn: ms.CreateIn{Name: "etc", Mode: syscall.S_IFDIR | 0o755}},
		{ParentIdx: 0, CreateIn: ms.CreateIn{Name: "passwd", Mode: syscall.S_IFREG | 0o644}, Size: 100, Mtime: 5,
			Layer: &ms.LayerRef{Blob: 9, Digest: "sha256:x", Offset: 512}},
		{ParentIdx: 0, CreateIn: ms.CreateIn{Name: "pw-link", Mode: syscall.S_IFREG}, LinkToIdx: 2},
		{ParentIdx: -1, CreateIn: ms.CreateIn{Name: "sh", Mode: syscall.S_IFLNK | 0o777, Target: "/bin/busybox"}},
	}
	inos, err := c.CreateTree(ctx, base.Ino, entries)
	if err != nil {
		t.Fatal(err)
	}
	if len(inos) != 4 || inos[2] != inos[1] {
		t.Fatalf("inos = %v", inos)
	}
	pw, _ := c.GetInode(ctx, inos[1])
	if pw.Size != 100 || pw.Mtime != 5 || pw.Nlink != 2 || pw.Layer == nil || pw.Layer.Offset != 512 {
		t.Fatalf("passwd = %+v", pw)
	}
	if a, _ := c.ResolvePath(ctx, "/img/etc/pw-link"); a.Ino != inos[1] {
		t.Fatalf("link resolves to %d", a.Ino)
	}
	if a, _ := c.GetAttr(ctx, base.Ino); a.Nlink != 3 {
		t.Fatalf("img nlink = %d", a.Nlink)
	}
	// A failing batch changes nothing.
	before, _ := c.StatFS(ctx)
	bad := []ms.TreeEntry{
		{ParentIdx: -1, CreateIn: ms.CreateIn{Name: "new", Mode: syscall.S_IFDIR | 0o755}},
		{ParentIdx: -1, CreateIn: ms.CreateIn{Name: "etc", Mode: syscall.S_IFDIR | 0o755}},
	}
	_, err = c.CreateTree(ctx, base.Ino, bad)
	wantErrno(t, "tree over existing name", err, syscall.EEXIST)
	_, err = c.CreateTree(ctx, base.Ino, []ms.TreeEntry{{ParentIdx: 0, CreateIn: ms.CreateIn{Name: "x"}}})
	wantErrno(t, "forward parent", err, syscall.EINVAL)
	_, err = c.CreateTree(ctx, base.Ino, []ms.TreeEntry{
		{ParentIdx: -1, CreateIn: ms.CreateIn{Name: "f", Mode: syscall.S_IFREG}},
		{ParentIdx: 0, CreateIn: ms.CreateIn{Name: "x"}},
	})
	wantErrno(t, "file as parent", err, syscall.ENOTDIR)
	_, err = c.CreateTree(ctx, base.Ino, []ms.TreeEntry{
		{ParentIdx: -1, CreateIn: ms.CreateIn{Name: "f2", Mode: syscall.S_IFREG}},
		{ParentIdx: -1, CreateIn: ms.CreateIn{Name: "l2", Mode: syscall.S_IFDIR}, LinkToIdx: 1},
		{ParentIdx: 1, CreateIn: ms.CreateIn{Name: "x"}},
	})
	wantErrno(t, "hard link as parent", err, syscall.ENOTDIR)
	if after, _ := c.StatFS(ctx); after.Files != before.Files {
		t.Fatalf("failed batches created %d inodes", after.Files-before.Files)
	}
}

func TestKV(t *testing.T) {
	ctx := context.Background()
	_, c, _ := newMem(t)
	if _, ok, err := c.KVGet(ctx, "tags", "a"); ok || err != nil {
		t.Fatalf("get missing: %v %v", ok, err)
	}
	err := c.KVTxn(ctx, []ms.KVCond{{Bucket: "tags", Key: "a", Exists: false}},
		[]ms.KVOp{{Bucket: "tags", Key: "a", Value: []byte("1")}, {Bucket: "tags", Key: "ab", Value: []byte{}}, {Bucket: "tags", Key: "b", Value: []byte("3")}})
	if err != nil {
		t.Fatal(err)
	}
	err = c.KVTxn(ctx, []ms.KVCond{{Bucket: "tags", Key: "a", Exists: true, Value: []byte("2")}},
		[]ms.KVOp{{Bucket: "tags", Key: "c", Value: []byte("x")}})
	if !errors.Is(err, ms.ErrConflict) {
		t.Fatalf("failed condition: %v", err)
	}
	if _, ok, _ := c.KVGet(ctx, "tags", "c"); ok {
		t.Fatal("a failed transaction wrote")
	}
	v, ok, err := c.KVGet(ctx, "tags", "ab")
	if err != nil || !ok || v == nil || len(v) != 0 {
		t.Fatalf("empty value: %q %v %v", v, ok, err)
	}
	ps, _ := c.KVList(ctx, "tags", "a", "", 0)
	if len(ps) != 2 || ps[0].Key != "a" || ps[1].Key != "ab" {
		t.Fatalf("list prefix = %+v", ps)
	}
	ps, _ = c.KVList(ctx, "tags", "", "a", 1)
	if len(ps) != 1 || ps[0].Key != "ab" {
		t.Fatalf("list after = %+v", ps)
	}
	if err := c.KVTxn(ctx, nil, []ms.KVOp{{Bucket: "tags", Key: "a", Delete: true}}); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := c.KVGet(ctx, "tags", "a"); ok {
		t.Fatal("deleted key still there")
	}
}

func TestRetriedMutationAppliesOnce(t *testing.T) {
	ctx := context.Background()
	m, _, _ := newMem(t)
	args := []byte(`{"parent":1,"name":"once","mode":33188,"exclusive":true}`)
	r1, err := m.Exec(ctx, ms.OpCreate, "client-1", args)
	if err != nil {
		t.Fatal(err)
	}
	r2, err := m.Exec(ctx, ms.OpCreate, "client-1", args)
	if err != nil {
		t.Fatalf("retry with the same id failed instead of returning the first result: %v", err)
	}
	if string(r1) != string(r2) {
		t.Fatalf("retry answered %s, first answer %s", r2, r1)
	}
	// A new id is a new request: exclusive create now fails.
	_, err = m.Exec(ctx, ms.OpCreate, "client-2", args)
	wantErrno(t, "second create", err, syscall.EEXIST)
	// The failure is remembered too.
	_, err = m.Exec(ctx, ms.OpCreate, "client-2", args)
	wantErrno(t, "second create retried", err, syscall.EEXIST)
}

func TestDedupTableIsBoundedFIFO(t *testing.T) {
	f := NewFSM()
	for i := range dedupCap + 10 {
		f.remember("x"+strconv.Itoa(i), &result{})
	}
	if len(f.dedup) != dedupCap {
		t.Fatalf("table holds %d ids, cap %d", len(f.dedup), dedupCap)
	}
	if _, ok := f.dedup["x0"]; ok {
		t.Fatal("oldest id not evicted")
	}
	if _, ok := f.dedup["x"+strconv.Itoa(dedupCap+9)]; !ok {
		t.Fatal("newest id missing")
	}
	if _, ok := f.dedup["x10"]; !ok {
		t.Fatal("id evicted out of order")
	}
}

func TestTimestampsNeverGoBackwards(t *testing.T) {
	ctx := context.Background()
	_, c, clk := newMem(t)
	a := mustCreate(t, c, ms.RootIno, "a", syscall.S_IFREG)
	clk.advance(-time.Hour) // a new leader with a slow clock
	b := mustCreate(t, c, ms.RootIno, "b", syscall.S_IFREG)
	if b.Ctime < a.Ctime {
		t.Fatalf("ctime went backwards: %d after %d", b.Ctime, a.Ctime)
	}
	if root, _ := c.GetAttr(ctx, ms.RootIno); root.Mtime != a.Ctime {
		t.Fatalf("root mtime %d, want %d", root.Mtime, a.Ctime)
	}
}
