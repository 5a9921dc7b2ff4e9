package fuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dockyard/dockyard/metaserver"
)

// TestOperations covers what posixtest does not: special files, rename
// flags, timestamps, ownership, link counts, name limits, xattrs and statfs.
func TestOperations(t *testing.T) {
	c := newCluster(t)
	mnt, _ := c.mount(t, Options{})
	p := func(name string) string { return filepath.Join(mnt, name) }
	// must stops the running subtest at its first broken step.
	var must func(err error)
	stat := func(name string) unix.Stat_t {
		t.Helper()
		var st unix.Stat_t
		must(unix.Lstat(p(name), &st))
		return st
	}
	run := func(name string, fn func(t *testing.T)) {
		t.Run(name, func(t *testing.T) {
			must = func(err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
			}
			fn(t)
		})
	}

	run("mknod", func(t *testing.T) {
		must(unix.Mkfifo(p("fifo"), 0o640))
		if st := stat("fifo"); st.Mode != syscall.S_IFIFO|0o640 {
			t.Errorf("fifo mode %o", st.Mode)
		}
		for _, tc := range []struct {
			name string
			typ  uint32
			dev  uint64
		}{
			{"null", syscall.S_IFCHR, unix.Mkdev(1, 3)},
			{"loop", syscall.S_IFBLK, unix.Mkdev(7, 300)},
		} {
			must(unix.Mknod(p(tc.name), tc.typ|0o600, int(tc.dev)))
			st := stat(tc.name)
			if st.Mode&syscall.S_IFMT != tc.typ || st.Rdev != tc.dev {
				t.Errorf("%s: mode %o rdev %d:%d, want type %o rdev %d:%d", tc.name, st.Mode, unix.Major(st.Rdev), unix.Minor(st.Rdev),
					tc.typ, unix.Major(tc.dev), unix.Minor(tc.dev))
			}
		}
		// Like fusermount, the mount is nodev: a device node on a network
		// file system must not open the host's devices.
		if f, err := os.OpenFile(p("null"), os.O_WRONLY, 0); !errors.Is(err, syscall.EACCES) {
			if err == nil {
				f.Close()
			}
			t.Errorf("opening a device node: %v, want EACCES (nodev)", err)
		}
	})

	run("rename flags", func(t *testing.T) {
		must(os.WriteFile(p("x"), []byte("x"), 0o644))
		must(os.WriteFile(p("y"), []byte("yy"), 0o644))
		if err := unix.Renameat2(unix.AT_FDCWD, p("x"), unix.AT_FDCWD, p("y"), unix.RENAME_NOREPLACE); !errors.Is(err, syscall.EEXIST) {
			t.Errorf("RENAME_NOREPLACE onto an existing name: %v, want EEXIST", err)
		}
		must(unix.Renameat2(unix.AT_FDCWD, p("x"), unix.AT_FDCWD, p("y"), unix.RENAME_EXCHANGE))
		if x, y := readFile(t, p("x")), readFile(t, p("y")); string(x) != "yy" || string(y) != "x" {
			t.Errorf("after RENAME_EXCHANGE x=%q y=%q", x, y)
		}
		must(unix.Renameat2(unix.AT_FDCWD, p("x"), unix.AT_FDCWD, p("z"), unix.RENAME_NOREPLACE))
		if _, err := os.Stat(p("x")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("x after rename: %v", err)
		}
	})

	run("attributes", func(t *testing.T) {
		must(os.WriteFile(p("a"), []byte("abc"), 0o644))
		must(unix.Chmod(p("a"), 0o4751))
		must(os.Chown(p("a"), 123, 456))
		// chown clears set-user-ID, as on any Linux file system.
		if st := stat("a"); st.Mode != syscall.S_IFREG|0o751 {
			t.Errorf("mode %o after chown, want %o", st.Mode, syscall.S_IFREG|0o751)
		}
		must(unix.Chmod(p("a"), 0o4751))
		when := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
		must(os.Chtimes(p("a"), when, when))
		st := stat("a")
		if st.Mode != syscall.S_IFREG|0o4751 || st.Uid != 123 || st.Gid != 456 {
			t.Errorf("mode %o uid %d gid %d", st.Mode, st.Uid, st.Gid)
		}
		if got := time.Unix(st.Mtim.Unix()); !got.Equal(when) {
			t.Errorf("mtime %v, want %v", got, when)
		}
		if got := time.Unix(st.Atim.Unix()); !got.Equal(when) {
			t.Errorf("atime %v, want %v", got, when)
		}
		// Times set while the file is open with writes buffered (tar and
		// rsync -t set them before the last close, and the kernel sends
		// the release of an earlier close later) stick: neither the
		// commit of those writes nor the open handle's view undoes them.
		held, err := os.OpenFile(p("held"), os.O_CREATE|os.O_WRONLY, 0o644)
		must(err)
		if _, err := held.Write([]byte("buffered")); err != nil {
			t.Fatal(err)
		}
		must(os.Chtimes(p("held"), when, when))
		st = stat("held")
		if got := time.Unix(st.Mtim.Unix()); !got.Equal(when) {
			t.Errorf("mtime of an open file after utimes: %v, want %v", got, when)
		}
		must(held.Close())
		st = stat("held")
		if got := time.Unix(st.Mtim.Unix()); !got.Equal(when) || st.Size != 8 {
			t.Errorf("after close: mtime %v size %d, want %v and 8", got, st.Size, when)
		}
		before := stat("a")
		time.Sleep(10 * time.Millisecond) // timestamps must be seen to move
		must(os.WriteFile(p("a"), []byte("abcd"), 0o644))
		after := stat("a")
		if after.Mtim == before.Mtim || after.Ctim == before.Ctim || after.Size != 4 {
			t.Errorf("write did not move mtime/ctime or size: %+v -> %+v", before.Mtim, after.Mtim)
		}
	})

	run("links", func(t *testing.T) {
		must(os.WriteFile(p("l1"), []byte("l"), 0o644))
		must(os.Link(p("l1"), p("l2")))
		if st := stat("l1"); st.Nlink != 2 {
			t.Errorf("nlink %d after link, want 2", st.Nlink)
		}
		if a, b := stat("l1"), stat("l2"); a.Ino != b.Ino {
			t.Errorf("hard links have inodes %d and %d", a.Ino, b.Ino)
		}
		must(os.Remove(p("l1")))
		if st := stat("l2"); st.Nlink != 1 {
			t.Errorf("nlink %d after unlink, want 1", st.Nlink)
		}
		must(os.Mkdir(p("dir"), 0o755))
		must(os.Mkdir(p("dir/sub"), 0o755))
		if st := stat("dir"); st.Nlink != 3 {
			t.Errorf("directory with one subdirectory has nlink %d, want 3", st.Nlink)
		}
		if err := os.Remove(p("dir")); !errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.EEXIST) {
			t.Errorf("rmdir of a non-empty directory: %v", err)
		}
	})

	run("names", func(t *testing.T) {
		long := strings.Repeat("n", 255)
		must(os.WriteFile(p(long), nil, 0o644))
		ents, err := os.ReadDir(mnt)
		must(err)
		found := false
		for _, e := range ents {
			found = found || e.Name() == long
		}
		if !found {
			t.Error("a 255-byte name is not listed")
		}
		if err := os.WriteFile(p(long+"x"), nil, 0o644); !errors.Is(err, syscall.ENAMETOOLONG) {
			t.Errorf("256-byte name: %v, want ENAMETOOLONG", err)
		}
	})

	run("xattrs", func(t *testing.T) {
		must(os.WriteFile(p("xa"), nil, 0o644))
		must(unix.Setxattr(p("xa"), "user.one", []byte("1"), 0))
		must(unix.Setxattr(p("xa"), "user.two", []byte("22"), 0))
		if err := unix.Setxattr(p("xa"), "user.one", []byte("x"), unix.XATTR_CREATE); !errors.Is(err, syscall.EEXIST) {
			t.Errorf("XATTR_CREATE on an existing name: %v", err)
		}
		if err := unix.Setxattr(p("xa"), "user.three", []byte("x"), unix.XATTR_REPLACE); !errors.Is(err, syscall.ENODATA) {
			t.Errorf("XATTR_REPLACE on a missing name: %v", err)
		}
		buf := make([]byte, 64)
		n, err := unix.Listxattr(p("xa"), buf)
		must(err)
		names := strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00")
		if len(names) != 2 {
			t.Errorf("listxattr %q", names)
		}
		must(unix.Removexattr(p("xa"), "user.one"))
		if _, err := unix.Getxattr(p("xa"), "user.one", buf); !errors.Is(err, syscall.ENODATA) {
			t.Errorf("getxattr after remove: %v", err)
		}
		// A capability set through the mount is seen at once, though its
		// absence is cached.
		if _, err := unix.Getxattr(p("xa"), "security.capability", buf); !errors.Is(err, syscall.ENODATA) {
			t.Errorf("security.capability: %v", err)
		}
		capv := []byte{0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
		must(unix.Setxattr(p("xa"), "security.capability", capv, 0))
		n, err = unix.Getxattr(p("xa"), "security.capability", buf)
		if err != nil || !bytes.Equal(buf[:n], capv) {
			t.Errorf("security.capability after set: %x, %v", buf[:n], err)
		}
	})

	run("statfs", func(t *testing.T) {
		var st unix.Statfs_t
		must(unix.Statfs(mnt, &st))
		if st.Blocks == 0 || st.Bsize == 0 || st.Namelen != 255 {
			t.Errorf("statfs: %+v", st)
		}
	})

	run("large write requests", func(t *testing.T) {
		// One write(2) of 3 MiB arrives as 1 MiB requests; the file must
		// come back whole.
		data := randomBytes(t, 3<<20+12345)
		must(os.WriteFile(p("big"), data, 0o644))
		if got := readFile(t, p("big")); !bytes.Equal(got, data) {
			t.Error("3 MiB file read back differs")
		}
	})
}

// TestBufferedSizeVisible: while writes sit in the client's buffer, every
// answer the kernel gets (lookup, getattr, listing) carries their size;
// otherwise a stat in between would reset the kernel's size and the next
// O_APPEND write would land at the wrong offset.
func TestBufferedSizeVisible(t *testing.T) {
	c := newCluster(t)
	// Names are never cached, attributes for long: every stat is a lookup
	// whose attributes the kernel then trusts.
	mnt, _ := c.mount(t, Options{EntryTimeout: -1, AttrTimeout: time.Minute})
	path := filepath.Join(mnt, "log")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a, b := bytes.Repeat([]byte("a"), 1000), bytes.Repeat([]byte("b"), 1000)
	if _, err := f.Write(a); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(path); err != nil || st.Size() != 1000 {
		t.Fatalf("stat while buffered: %v, %v; want size 1000", st, err)
	}
	ents, err := os.ReadDir(mnt)
	if err != nil || len(ents) != 1 {
		t.Fatalf("listing: %v, %v", ents, err)
	}
	if info, err := ents[0].Info(); err != nil || info.Size() != 1000 {
		t.Fatalf("listing info while buffered: %v, %v; want size 1000", info, err)
	}
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); !bytes.Equal(got, append(a, b...)) {
		t.Fatalf("appended file reads %d bytes %q...", len(got), got[:min(len(got), 20)])
	}
}

// TestLargeDirectory lists a directory of several metaserver pages, with
// attributes (READDIRPLUS) and without, and rewinds it.
func TestLargeDirectory(t *testing.T) {
	c := newCluster(t)
	const n = 2*dirPage + 17
	entries := make([]metaserver.TreeEntry, 0, n+1)
	entries = append(entries, metaserver.TreeEntry{ParentIdx: -1, CreateIn: metaserver.CreateIn{Name: "big", Mode: syscall.S_IFDIR | 0o755}})
	want := map[string]bool{}
	for i := range n {
		name := fmt.Sprintf("f%05d", i)
		want[name] = true
		entries = append(entries, metaserver.TreeEntry{ParentIdx: 0, Size: uint64(i), CreateIn: metaserver.CreateIn{Name: name, Mode: syscall.S_IFREG | 0o644}})
	}
	if _, err := c.api.CreateTree(context.Background(), metaserver.RootIno, entries); err != nil {
		t.Fatal(err)
	}
	mnt, _ := c.mount(t, Options{})
	dir := filepath.Join(mnt, "big")
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != n {
		t.Fatalf("listed %d entries, want %d", len(ents), n)
	}
	for _, e := range ents {
		if !want[e.Name()] {
			t.Fatalf("unexpected entry %q", e.Name())
		}
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		var i int64
		fmt.Sscanf(e.Name(), "f%05d", &i)
		if info.Size() != i {
			t.Fatalf("%s has size %d, want %d", e.Name(), info.Size(), i)
		}
	}
	// Rewinding an open directory lists it again, including what changed.
	d, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	first, err := d.Readdirnames(10)
	if err != nil || len(first) != 10 {
		t.Fatalf("first names: %v, %v", first, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "zz-new"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	all, err := d.Readdirnames(-1)
	if err != nil || len(all) != n+1 {
		t.Fatalf("after rewind listed %d names (%v), want %d", len(all), err, n+1)
	}
}
