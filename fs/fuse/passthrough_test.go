package fuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dockyard/dockyard/metaserver"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// ptOptions turns passthrough on with a cache of the test's own, copying
// files from 64 KiB up.
func ptOptions(t *testing.T, budget int64) Options {
	return Options{Passthrough: true, FileCacheDir: t.TempDir(), FileCacheBytes: budget, FileCacheMinSize: 64 << 10}
}

// mountPassthrough mounts c with passthrough on, skipping the test where
// the kernel refuses it (not root, Linux before 6.9).
func (c *testCluster) mountPassthrough(t *testing.T, budget int64) (string, *Server) {
	t.Helper()
	dir, srv := c.mount(t, ptOptions(t, budget))
	if srv.root.(*node).m.files.Load() == nil {
		t.Skip("the kernel refuses FUSE passthrough here (needs Linux 6.9+ and root)")
	}
	return dir, srv
}

// readReleased reads path whole and waits for the mount to hear of the
// close, which the kernel sends on its own time: an open before that finds
// the file still open here, and is not given passthrough.
func readReleased(t *testing.T, srv *Server, path string) []byte {
	t.Helper()
	b := readFile(t, path)
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	m := srv.root.(*node).m
	waitFor(t, 5*time.Second, "the mount to release "+path, func() bool { return m.openFile(metaserver.Ino(st.Ino)) == nil })
	return b
}

// waitCopies waits for the mount to have completed n copies: the last
// writes of a copy finish after the read that made it.
func waitCopies(t *testing.T, srv *Server, n int64) {
	t.Helper()
	waitFor(t, 5*time.Second, fmt.Sprintf("%d copies", n), func() bool { return srv.Stats().FileCopies >= n })
	if got := srv.Stats().FileCopies; got != n {
		t.Fatalf("%d copies completed, want %d", got, n)
	}
}

// readCounted reads path whole and returns what reached the mount meanwhile.
func readCounted(t *testing.T, srv *Server, path string) ([]byte, Stats) {
	t.Helper()
	before := srv.Stats()
	b := readReleased(t, srv, path)
	after := srv.Stats()
	return b, Stats{
		ReadRequests:     after.ReadRequests - before.ReadRequests,
		ReadBytes:        after.ReadBytes - before.ReadBytes,
		PassthroughOpens: after.PassthroughOpens - before.PassthroughOpens,
		FileCopies:       after.FileCopies - before.FileCopies,
	}
}

// TestPassthroughServesReopenedFile: a file read whole is read again from
// the local copy: the reopen is a passthrough open, no READ reaches the
// mount (the open dropped the FUSE page cache, so the kernel read the
// copy) and the bytes are the file's. Another host's rewrite makes the next
// open read the new bytes through the mount, and then copy them.
func TestPassthroughServesReopenedFile(t *testing.T) {
	c := newCluster(t)
	a, _ := c.mount(t, Options{})
	b, srvB := c.mountPassthrough(t, 0)

	v1 := randomBytes(t, 5<<20+123)
	if err := os.WriteFile(filepath.Join(a, "f"), v1, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(b, "f")
	got, st := readCounted(t, srvB, path)
	if !bytes.Equal(got, v1) {
		t.Fatal("first read differs")
	}
	if st.PassthroughOpens != 0 || st.ReadBytes < int64(len(v1)) {
		t.Fatalf("first read: %+v, want the bytes read through the mount", st)
	}
	waitCopies(t, srvB, 1)
	for i := range 2 {
		got, st = readCounted(t, srvB, path)
		if !bytes.Equal(got, v1) {
			t.Fatalf("reread %d through passthrough differs", i)
		}
		if st.PassthroughOpens != 1 || st.ReadRequests != 0 {
			t.Fatalf("reread %d: %+v, want one passthrough open and no READ", i, st)
		}
	}

	// Same size, new content: only the generation tells.
	v2 := randomBytes(t, len(v1))
	overwrite(t, filepath.Join(a, "f"), v2)
	got, st = readCounted(t, srvB, path)
	if !bytes.Equal(got, v2) {
		t.Fatal("after the other mount's write, B served the old copy")
	}
	if st.PassthroughOpens != 0 || st.ReadBytes < int64(len(v2)) {
		t.Fatalf("read after the rewrite: %+v, want it read through the mount", st)
	}
	waitCopies(t, srvB, 2)
	got, st = readCounted(t, srvB, path)
	if !bytes.Equal(got, v2) || st.PassthroughOpens != 1 || st.ReadRequests != 0 {
		t.Fatalf("reread of the new generation: %+v, equal %v", st, bytes.Equal(got, v2))
	}
}

// TestPassthroughWriterWhileReading: while a passthrough reader is open, a
// second reader of the same generation shares the passthrough; an open for
// writing on the same mount cannot be served beside it (see passthrough.go)
// and fails with ETXTBSY, leaving the reader's bytes intact; once the
// reader is closed the write goes through and the next open reads it.
func TestPassthroughWriterWhileReading(t *testing.T) {
	c := newCluster(t)
	a, _ := c.mount(t, Options{})
	b, srv := c.mountPassthrough(t, 0)
	path := filepath.Join(b, "f")
	v1 := randomBytes(t, 2<<20)
	// Written through another mount: one written here is in the page
	// cache already, and reading it sends no READ to copy from.
	if err := os.WriteFile(filepath.Join(a, "f"), v1, 0o644); err != nil {
		t.Fatal(err)
	}
	readReleased(t, srv, path) // makes the copy
	waitCopies(t, srv, 1)

	r1, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r1.Close()
	r2, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if n := srv.Stats().PassthroughOpens; n != 2 {
		t.Fatalf("%d passthrough opens, want both readers", n)
	}
	got, err := io.ReadAll(r2)
	r2.Close()
	if err != nil || !bytes.Equal(got, v1) {
		t.Fatalf("second reader: %v, equal %v", err, bytes.Equal(got, v1))
	}

	start := time.Now()
	_, err = os.OpenFile(path, os.O_WRONLY, 0)
	if !errors.Is(err, syscall.ETXTBSY) {
		t.Fatalf("open for writing beside a passthrough reader: %v, want ETXTBSY", err)
	}
	if waited := time.Since(start); waited < ptConflictWait/2 {
		t.Fatalf("the writer gave up after %v, without waiting for the reader", waited)
	}
	if err := os.Truncate(path, 10); !errors.Is(err, syscall.ETXTBSY) {
		t.Fatalf("truncate beside a passthrough reader: %v, want ETXTBSY", err)
	}
	got, err = io.ReadAll(r1)
	if err != nil || !bytes.Equal(got, v1) {
		t.Fatalf("the reader after refused writes: %v, equal %v", err, bytes.Equal(got, v1))
	}

	// A writer that opens while the reader is closing waits for it.
	done := make(chan error, 1)
	v2 := randomBytes(t, 100)
	go func() {
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err == nil {
			_, err = f.WriteAt(v2, 0)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		done <- err
	}()
	time.Sleep(ptConflictWait / 5) // let the writer start waiting; the test holds either way
	r1.Close()
	if err := <-done; err != nil {
		t.Fatalf("writer after the reader closed: %v", err)
	}
	want := append(append([]byte(nil), v2...), v1[len(v2):]...)
	got, st := readCounted(t, srv, path)
	if !bytes.Equal(got, want) {
		t.Fatal("the read after the write differs")
	}
	if st.PassthroughOpens != 0 {
		t.Fatalf("read after a write: %+v, the old copy must not be used", st)
	}
}

// TestPassthroughBudget: a copy is dropped, least recently used first, when
// a new one would exceed the budget; the dropped file is read through the
// mount again, the kept one by passthrough.
func TestPassthroughBudget(t *testing.T) {
	c := newCluster(t)
	a, _ := c.mount(t, Options{})
	b, srv := c.mountPassthrough(t, 5<<20)
	f1, f2 := filepath.Join(b, "f1"), filepath.Join(b, "f2")
	v1, v2 := randomBytes(t, 3<<20), randomBytes(t, 3<<20)
	for name, v := range map[string][]byte{"f1": v1, "f2": v2} {
		if err := os.WriteFile(filepath.Join(a, name), v, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	readReleased(t, srv, f1)
	waitCopies(t, srv, 1)
	readReleased(t, srv, f2)
	waitCopies(t, srv, 2)
	if st := srv.Stats(); st.FileCacheBytes != 3<<20 {
		t.Fatalf("%+v: want one copy kept", st)
	}
	if got, st := readCounted(t, srv, f2); !bytes.Equal(got, v2) || st.PassthroughOpens != 1 {
		t.Fatalf("the newest copy: %+v, equal %v", st, bytes.Equal(got, v2))
	}
	if got, st := readCounted(t, srv, f1); !bytes.Equal(got, v1) || st.PassthroughOpens != 0 {
		t.Fatalf("the dropped copy: %+v, equal %v", st, bytes.Equal(got, v1))
	}
}

// TestPassthroughPartialReads: reads that leave part of the file unread,
// or jump far ahead of the pass from offset 0, never make a complete copy,
// so the next open reads through the mount.
func TestPassthroughPartialReads(t *testing.T) {
	c := newCluster(t)
	a, _ := c.mount(t, Options{})
	b, srv := c.mountPassthrough(t, 0)
	path := filepath.Join(b, "f")
	v := randomBytes(t, 40<<20)
	if err := os.WriteFile(filepath.Join(a, "f"), v, 0o644); err != nil {
		t.Fatal(err)
	}
	readAt := func(f *os.File, off int64, n int) {
		t.Helper()
		buf := make([]byte, n)
		if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
		if !bytes.Equal(buf, v[off:off+int64(n)]) {
			t.Fatalf("read at %d differs", off)
		}
	}
	open := func() *os.File {
		t.Helper()
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		// No kernel read-ahead: the test decides which bytes are read.
		if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM); err != nil {
			t.Fatal(err)
		}
		return f
	}

	// Two ranges within the copy window, a hole between.
	f := open()
	readAt(f, 0, 1<<20)
	readAt(f, 3<<20, 1<<20)
	f.Close()
	f = open()
	readAt(f, 0, 1)
	f.Close()
	if st := srv.Stats(); st.PassthroughOpens != 0 || st.FileCopies != 0 {
		t.Fatalf("%+v after partial reads, want no copy and no passthrough", st)
	}

	// A jump past the copy window gives the copy up. The pages read so
	// far stay in the page cache, so a later pass from the start sends no
	// READ for them and cannot complete a new copy either.
	f = open()
	readAt(f, 2<<20, 1<<20)
	readAt(f, 2<<20+copyWindow+(1<<20), 1<<20)
	for off := int64(0); off < int64(len(v)); off += 1 << 20 {
		readAt(f, off, 1<<20)
	}
	f.Close()
	f = open()
	readAt(f, 0, 1)
	f.Close()
	if st := srv.Stats(); st.PassthroughOpens != 0 || st.FileCopies != 0 {
		t.Fatalf("%+v after a jump ahead, want no copy and no passthrough", st)
	}
}

// TestKernelRefusesDirectIOBesidePassthrough checks the kernel rule the
// design rests on (fs/fuse/iomode.c): while an inode has a passthrough
// open, an open answered without FOPEN_PASSTHROUGH fails with EIO, even
// with FOPEN_DIRECT_IO, so a writer cannot be let in beside passthrough
// readers. Once they are closed it opens.
func TestKernelRefusesDirectIOBesidePassthrough(t *testing.T) {
	needFUSE(t)
	backing := filepath.Join(t.TempDir(), "backing")
	want := []byte("bytes of the backing file")
	if err := os.WriteFile(backing, want, 0o600); err != nil {
		t.Fatal(err)
	}
	root := &probeDir{backing: backing, size: uint64(len(want))}
	mnt := t.TempDir()
	srv, err := gofs.Mount(mnt, root, &gofs.Options{})
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	if err := probePassthrough(srv, t.TempDir()); err != nil {
		t.Skipf("the kernel refuses FUSE passthrough here: %v", err)
	}
	path := filepath.Join(mnt, "f")
	r, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, want) {
		r.Close()
		t.Fatalf("passthrough read: %q, %v", got, err)
	}
	if n := root.reads(); n != 0 {
		r.Close()
		t.Fatalf("%d READs reached the server through a passthrough open", n)
	}
	_, err = os.OpenFile(path, os.O_WRONLY, 0)
	r.Close()
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("direct-I/O open beside a passthrough open: %v, want EIO", err)
	}
	// The kernel forgets the passthrough state at the last close of the
	// reader, before our release is even answered.
	w, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatalf("direct-I/O open after the reader closed: %v", err)
	}
	w.Close()
}

// probeDir is a one-file tree: read-only opens pass through to backing,
// others are direct I/O.
type probeDir struct {
	gofs.Inode
	backing string
	size    uint64
	file    *probeFile
}

var _ gofs.NodeOnAdder = (*probeDir)(nil)

func (d *probeDir) OnAdd(ctx context.Context) {
	d.file = &probeFile{backing: d.backing, size: d.size}
	ch := d.NewPersistentInode(ctx, d.file, gofs.StableAttr{Mode: syscall.S_IFREG})
	d.AddChild("f", ch, false)
}

func (d *probeDir) reads() int64 {
	d.file.mu.Lock()
	defer d.file.mu.Unlock()
	return d.file.nreads
}

type probeFile struct {
	gofs.Inode
	backing string
	size    uint64
	mu      sync.Mutex
	nreads  int64
}

var (
	_ gofs.NodeOpener    = (*probeFile)(nil)
	_ gofs.NodeGetattrer = (*probeFile)(nil)
	_ gofs.NodeReader    = (*probeFile)(nil)
	_ gofs.NodeWriter    = (*probeFile)(nil)
)

func (f *probeFile) Getattr(ctx context.Context, fh gofs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	out.Mode = syscall.S_IFREG | 0o666
	out.Size = f.size
	return 0
}

func (f *probeFile) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return &probePlain{}, gofuse.FOPEN_DIRECT_IO, 0
	}
	fd, err := syscall.Open(f.backing, syscall.O_RDONLY, 0)
	if err != nil {
		return nil, 0, gofs.ToErrno(err)
	}
	return &probePTHandle{fd: fd}, 0, 0
}

func (f *probeFile) Read(ctx context.Context, fh gofs.FileHandle, dest []byte, off int64) (gofuse.ReadResult, syscall.Errno) {
	f.mu.Lock()
	f.nreads++
	f.mu.Unlock()
	return gofuse.ReadResultData(nil), 0
}

func (f *probeFile) Write(ctx context.Context, fh gofs.FileHandle, data []byte, off int64) (uint32, syscall.Errno) {
	return uint32(len(data)), 0
}

type probePlain struct{}

type probePTHandle struct{ fd int }

var (
	_ gofs.FilePassthroughFder = (*probePTHandle)(nil)
	_ gofs.FileReleaser        = (*probePTHandle)(nil)
)

func (p *probePTHandle) PassthroughFd() (int, bool) { return p.fd, true }

func (p *probePTHandle) Release(ctx context.Context) syscall.Errno {
	return gofs.ToErrno(syscall.Close(p.fd))
}

// TestPassthroughReaderAfterRemoteWrite: while a passthrough reader of the
// old generation is open, a read-only open after another host rewrote the
// file can be neither a passthrough open of the old copy (stale bytes) nor
// an ordinary one (the kernel refuses it): it fails with ETXTBSY. The open
// reader keeps the bytes it opened; once it closes, the new ones are read.
func TestPassthroughReaderAfterRemoteWrite(t *testing.T) {
	c := newCluster(t)
	a, _ := c.mount(t, Options{})
	b, srv := c.mountPassthrough(t, 0)
	v1 := randomBytes(t, 2<<20)
	if err := os.WriteFile(filepath.Join(a, "f"), v1, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(b, "f")
	readReleased(t, srv, path)
	r, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if n := srv.Stats().PassthroughOpens; n != 1 {
		t.Fatalf("%d passthrough opens, want 1", n)
	}
	v2 := randomBytes(t, len(v1))
	overwrite(t, filepath.Join(a, "f"), v2)
	if _, err := os.Open(path); !errors.Is(err, syscall.ETXTBSY) {
		t.Fatalf("open of the new generation beside a reader of the old: %v, want ETXTBSY", err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, v1) {
		t.Fatalf("the open reader: %v, equal to what it opened %v", err, bytes.Equal(got, v1))
	}
	r.Close()
	var last error
	waitFor(t, 5*time.Second, "the new generation to be readable", func() bool {
		got, last = os.ReadFile(path)
		return last == nil
	})
	if !bytes.Equal(got, v2) {
		t.Fatal("read after the reader closed is not the new generation")
	}
}
