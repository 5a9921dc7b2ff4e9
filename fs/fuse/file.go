package fuse

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/metaserver"
)

// handle is one open(2) of a file.
type handle struct {
	n *node
	f *dfs.File
	// writer: opened for writing (or O_TRUNC); counted by the file cache,
	// which copies nothing while such a handle is open.
	writer bool
	// pt: the handle of a passthrough open (ptHandle), whose reads the
	// kernel should never send here.
	pt bool
}

var (
	_ gofs.FileReader    = (*handle)(nil)
	_ gofs.FileWriter    = (*handle)(nil)
	_ gofs.FileFlusher   = (*handle)(nil)
	_ gofs.FileFsyncer   = (*handle)(nil)
	_ gofs.FileReleaser  = (*handle)(nil)
	_ gofs.FileAllocater = (*handle)(nil)
)

func (n *node) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	return n.openFlags(ctx, flags, nil)
}

// openFlags opens the inode for a new handle. The first open in this mount
// fetches the inode afresh (close-to-open consistency); later ones share the
// file already open, whose view is coherent with the kernel's page cache.
// created, when set, is the reply of the create this open belongs to: an
// empty file is opened from it without asking the metaserver again.
func (n *node) openFlags(ctx context.Context, flags uint32, created *metaserver.Attr) (gofs.FileHandle, uint32, syscall.Errno) {
	write := flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0
	if n.m.opt.ReadOnly && write {
		return nil, 0, syscall.EROFS
	}
	st := n.m.lockIno(n.ino)
	files := n.m.files.Load()
	waited := false
	for {
		if st.pt > 0 {
			// The kernel takes nothing but passthrough opens of the
			// inode now; see passthrough.go.
			if h, errno, ok := n.sharePassthrough(ctx, st, write); ok {
				n.m.unlockIno(n.ino, st)
				if errno != 0 {
					return nil, 0, errno
				}
				return h, 0, 0
			}
			var errno syscall.Errno
			if st, errno = n.waitPassthroughGone(ctx, st, "open"); errno != 0 {
				return nil, 0, errno
			}
		}
		if waited || write || files == nil || st.open == nil || !files.hasComplete(n.ino) {
			break
		}
		// Another open may have passed through while this one waited:
		// look again.
		st, waited = n.waitIdle(ctx, st), true
	}
	fresh := st.open == nil
	if fresh {
		var f *dfs.File
		var err error
		if created != nil {
			f, err = n.m.client.OpenCreated(ctx, *created)
		} else {
			f, err = n.m.client.Open(quiet(ctx), n.ino)
		}
		if err != nil {
			n.m.unlockIno(n.ino, st)
			return nil, 0, n.m.fail("open", n.ino, err)
		}
		st.open = &openFile{f: f}
	}
	f := st.open.f
	st.open.refs++
	if write && files != nil {
		files.addWriter(n.ino)
	}
	h := &handle{n: n, f: f, writer: write && files != nil}
	if flags&syscall.O_TRUNC != 0 && f.Attr().Size > 0 {
		if err := f.Truncate(ctx, 0); err != nil {
			h.releaseLocked(ctx, st)
			n.m.unlockIno(n.ino, st)
			return nil, 0, n.m.fail("open", n.ino, err)
		}
	}
	var pt *ptHandle
	if fresh && !write && files != nil {
		// No other handle is open here, so the kernel has no cached-I/O
		// open of the inode either: it may pass through.
		if cp, fd := files.pin(n.ino, f.Attr().Gen); cp != nil {
			h.pt = true
			pt = &ptHandle{handle: h, fd: fd, cp: cp}
			st.pt, st.ptCopy, st.ptGone = 1, cp, make(chan struct{})
			n.m.ptOpens.Add(1)
		}
	}
	n.m.unlockIno(n.ino, st)

	gen := f.Attr().Gen
	var fuseFlags uint32
	stale := false
	n.mu.Lock()
	switch {
	case !fresh:
		fuseFlags |= gofuse.FOPEN_KEEP_CACHE
	case n.genKnown && n.cachedGen == gen:
		fuseFlags |= gofuse.FOPEN_KEEP_CACHE
	case n.genKnown:
		stale = true
	}
	n.cachedGen, n.genKnown = gen, true
	n.mu.Unlock()
	if stale {
		// Without KEEP_CACHE the kernel drops the pages itself; the size
		// and mtime it holds are stale too and would cut a read short.
		// Offset -1 invalidates the attributes only.
		if errno := n.NotifyContent(-1, 0); errno != 0 && errno != syscall.ENOENT {
			n.m.log.Debug("invalidating attributes", "ino", uint64(n.ino), "errno", errno.Error())
		}
	}
	if flags&syscall.O_DIRECT != 0 {
		fuseFlags |= gofuse.FOPEN_DIRECT_IO
	}
	if pt != nil {
		// go-fuse adds FOPEN_PASSTHROUGH and drops KEEP_CACHE, which a
		// passthrough open may not carry.
		return pt, fuseFlags, 0
	}
	return h, fuseFlags, 0
}

// releaseLocked drops the handle's reference to the open file; the last one
// closes it (flushing) and removes the orphan link of a file unlinked while
// open. st is locked.
func (h *handle) releaseLocked(ctx context.Context, st *inoState) syscall.Errno {
	n := h.n
	if h.writer {
		if files := n.m.files.Load(); files != nil {
			files.removeWriter(n.ino)
		}
	}
	if st.open == nil || st.open.f != h.f {
		return 0
	}
	o := st.open
	o.refs--
	if o.refs > 0 {
		return 0
	}
	st.open = nil
	if st.idle != nil {
		close(st.idle)
		st.idle = nil
	}
	err := o.f.Close()
	n.keepGen(o.f)
	if rerr := n.m.orphans.release(ctx, n.ino); rerr != nil && err == nil {
		err = rerr
	}
	if err != nil {
		return n.m.fail("release", n.ino, err)
	}
	return 0
}

func (n *node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *gofuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	in := n.newIn(ctx, name, syscall.S_IFREG|mode&07777)
	in.Exclusive = flags&syscall.O_EXCL != 0
	ch, a, errno := n.createAttr(ctx, "create", in, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	c := ch.Operations().(*node)
	fh, fuseFlags, errno := c.openFlags(ctx, flags, &a)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, fh, fuseFlags, 0
}

// Tmpfile makes an O_TMPFILE file: it is born in this mount's orphan
// directory, so it has no name a user can see and is removed at its last
// close, unless linkat(2) gives it one.
func (n *node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *gofuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	if n.m.opt.ReadOnly {
		return nil, nil, 0, syscall.EROFS
	}
	uid, gid := caller(ctx)
	a, err := n.m.orphans.createTemp(ctx, metaserver.CreateIn{Mode: syscall.S_IFREG | mode&07777, Uid: uid, Gid: gid})
	if err != nil {
		return nil, nil, 0, n.m.fail("tmpfile", n.ino, err)
	}
	n.m.fillAttr(a, &out.Attr)
	out.SetAttrTimeout(n.m.opt.AttrTimeout)
	c := &node{m: n.m, ino: a.Ino}
	ch := n.NewInode(ctx, c, gofs.StableAttr{Mode: syscall.S_IFREG, Ino: uint64(a.Ino)})
	fh, fuseFlags, errno := c.openFlags(ctx, flags, &a)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return ch, fh, fuseFlags, 0
}

// Read lends the bytes from the client's cache (see lentData). The kernel
// keeps what it reads in its page cache, so the client need not keep a
// second copy of what a sequential reader consumed (ReadDataKept).
func (h *handle) Read(ctx context.Context, dest []byte, off int64) (gofuse.ReadResult, syscall.Errno) {
	h.n.m.reads.Add(1)
	if h.pt {
		h.n.m.passthroughRefused()
	}
	d, err := h.f.ReadDataKept(dest, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, h.n.m.fail("read", h.n.ino, err)
	}
	h.n.m.readBytes.Add(int64(d.N))
	r := &lentData{d: d}
	if files := h.n.m.files.Load(); files != nil && d.N > 0 {
		// The copy's writer holds the blocks too, until it has
		// written them.
		a := h.f.Attr()
		r.refs.Store(1)
		if !files.fill(h.n.ino, a.Gen, int64(a.Size), off, d.Bufs, d.N, r.Done) {
			r.refs.Store(0)
		}
	}
	return r, 0
}

// lentData is a read reply whose bytes are lent from the client's block
// cache: go-fuse writes the pieces to the kernel as they are (writev) and
// calls Done after, when the blocks may be reused. That saves copying every
// byte read into the request's buffer.
type lentData struct {
	d dfs.Data
	// refs counts the holders besides go-fuse (the file cache's writer);
	// the last Done releases the blocks.
	refs atomic.Int32
}

var _ interface {
	gofuse.ReadResult
	Slices() ([][]byte, gofuse.Status)
} = (*lentData)(nil)

func (r *lentData) Size() int { return r.d.N }

// Bytes is used when go-fuse wants one buffer (debug logging, other
// transports).
func (r *lentData) Bytes(buf []byte) ([]byte, gofuse.Status) {
	if len(r.d.Bufs) == 1 {
		return r.d.Bufs[0], gofuse.OK
	}
	buf = buf[:0]
	for _, b := range r.d.Bufs {
		buf = append(buf, b...)
	}
	return buf, gofuse.OK
}

// Slices makes go-fuse write the pieces with one writev, uncopied.
func (r *lentData) Slices() ([][]byte, gofuse.Status) { return r.d.Bufs, gofuse.OK }

func (r *lentData) Done() {
	if r.refs.Add(-1) < 0 {
		r.d.Release()
	}
}

func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if h.n.m.opt.ReadOnly {
		return 0, syscall.EROFS
	}
	n, err := h.f.WriteAt(data, off)
	if err != nil {
		return uint32(n), h.n.m.fail("write", h.n.ino, err)
	}
	return uint32(n), 0
}

// Flush runs at every close(2) of a descriptor: the data is committed before
// close returns, which is what makes the next open on another mount see it.
// It ignores the kernel's interrupt, as metadata calls do (interrupt.go):
// close cannot be retried, so EINTR there reads as lost data, while the
// commit is bounded by the client's own I/O timeouts.
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	if err := h.f.Flush(quiet(ctx)); err != nil {
		return h.n.m.fail("flush", h.n.ino, err)
	}
	h.n.keepGen(h.f)
	return 0
}

// keepGen records that the page cache matches the generation our own flush
// produced, so reopening the file keeps it.
func (n *node) keepGen(f *dfs.File) {
	gen := f.Attr().Gen
	n.mu.Lock()
	n.cachedGen, n.genKnown = gen, true
	n.mu.Unlock()
}

func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if err := h.f.Sync(ctx); err != nil {
		return h.n.m.fail("fsync", h.n.ino, err)
	}
	h.n.keepGen(h.f)
	return 0
}

func (h *handle) Release(ctx context.Context) syscall.Errno {
	n := h.n
	st := n.m.lockIno(n.ino)
	defer n.m.unlockIno(n.ino, st)
	return h.releaseLocked(ctx, st)
}

// Allocate implements fallocate(2) as far as a file system of shared chunks
// can: mode 0 extends the size (the new range reads as zeros, as a hole
// does), KEEP_SIZE succeeds without effect. Space is not reserved ahead:
// chunks are placed when written. Punching holes is not supported.
func (h *handle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	const keepSize = 0x01 // FALLOC_FL_KEEP_SIZE
	if h.n.m.opt.ReadOnly {
		return syscall.EROFS
	}
	switch mode {
	case keepSize:
		return 0
	case 0:
	default:
		return syscall.EOPNOTSUPP
	}
	end := off + size
	if end <= h.f.Attr().Size {
		return 0
	}
	if err := h.f.Truncate(ctx, end); err != nil {
		return h.n.m.fail("fallocate", h.n.ino, err)
	}
	return 0
}

func (n *node) Allocate(ctx context.Context, f gofs.FileHandle, off uint64, size uint64, mode uint32) syscall.Errno {
	h, ok := f.(*handle)
	if !ok {
		return syscall.EBADF
	}
	return h.Allocate(ctx, off, size, mode)
}
