package fuse

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
)

// Passthrough: a file this mount has read whole once is kept as a local
// copy (filecache.go), and a later read-only open of the same generation is
// answered with FOPEN_PASSTHROUGH over that copy. The kernel then reads the
// local file itself, with its large page-cache folios, and no READ reaches
// the mount.
//
// The kernel's rule (fs/fuse/iomode.c): while an inode has a passthrough
// open, every other open of it must be a passthrough open of the same
// backing file; anything else fails with EIO, even with FOPEN_DIRECT_IO
// (TestKernelRefusesDirectIOBesidePassthrough shows it on this kernel). A
// passthrough open for writing would write the local copy and never reach
// the file system. So, while passthrough readers of a file are open here:
//   - a read-only open of the same generation is one more passthrough open;
//   - an open that may change the file, a truncate through this mount, or a
//     read-only open after another host changed the file waits up to
//     ptConflictWait for the readers to close (a release may still be on its
//     way from the kernel), then fails with ETXTBSY, as writing a running
//     program does on a local disk.
//
// Only the passthrough handle type implements gofs.FilePassthroughFder:
// go-fuse keeps one backing file per inode and hands it to every later open
// whose handle implements it.

// ptConflictWait bounds how long an open that cannot be a passthrough open
// waits for the passthrough readers of its file to close.
const ptConflictWait = time.Second

// releaseWait bounds how long a read-only open that could pass through
// waits for the ordinary handles of its file to be released. The kernel
// sends the release of a closed file asynchronously, so `cat f; cat f` may
// open again before this mount has heard of the first close; without the
// wait that open would be an ordinary one. A handle that is really still
// open costs each such open this much.
const releaseWait = 20 * time.Millisecond

// waitIdle waits, with st unlocked, up to releaseWait for the inode's open
// handles to be released, and returns st locked again.
func (n *node) waitIdle(ctx context.Context, st *inoState) *inoState {
	deadline := time.Now().Add(releaseWait)
	for st.open != nil {
		left := time.Until(deadline)
		if left <= 0 || ctx.Err() != nil {
			break
		}
		if st.idle == nil {
			st.idle = make(chan struct{})
		}
		idle := st.idle
		n.m.unlockIno(n.ino, st)
		t := time.NewTimer(left)
		select {
		case <-idle:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		st = n.m.lockIno(n.ino)
	}
	return st
}

// ptHandle is a read-only open served by the kernel from a local copy.
type ptHandle struct {
	*handle
	fd *os.File
	cp *fileCopy
}

var _ gofs.FilePassthroughFder = (*ptHandle)(nil)

// PassthroughFd is asked by go-fuse when it registers the inode's backing
// file; the kernel takes its own reference, and the descriptor is closed
// at release.
func (h *ptHandle) PassthroughFd() (int, bool) { return int(h.fd.Fd()), true }

func (h *ptHandle) Release(ctx context.Context) syscall.Errno {
	n := h.n
	st := n.m.lockIno(n.ino)
	st.pt--
	if st.pt == 0 {
		close(st.ptGone)
		st.ptGone, st.ptCopy = nil, nil
	}
	errno := h.releaseLocked(ctx, st)
	n.m.unlockIno(n.ino, st)
	if files := n.m.files.Load(); files != nil {
		files.unpin(h.cp)
	}
	h.fd.Close()
	return errno
}

// sharePassthrough answers an open of an inode that already has
// passthrough handles, when it can be one more: read-only, and the file
// still of the copy's generation. st is locked.
func (n *node) sharePassthrough(ctx context.Context, st *inoState, write bool) (*ptHandle, syscall.Errno, bool) {
	files := n.m.files.Load()
	if write || files == nil || st.open == nil {
		return nil, 0, false
	}
	// Close-to-open: the generation is checked at every open.
	in, err := n.m.meta.GetInode(quiet(ctx), n.ino)
	if err != nil {
		return nil, n.m.fail("open", n.ino, err), true
	}
	if in.Gen != st.ptCopy.gen {
		return nil, 0, false
	}
	cp, fd := files.pin(n.ino, in.Gen)
	if cp != st.ptCopy {
		if cp != nil {
			files.unpin(cp)
			fd.Close()
		}
		return nil, 0, false
	}
	st.open.refs++
	st.pt++
	n.m.ptOpens.Add(1)
	return &ptHandle{handle: &handle{n: n, f: st.open.f, pt: true}, fd: fd, cp: cp}, 0, true
}

// passthroughRefused turns passthrough off for the rest of the mount: a
// READ reached a passthrough handle, so the kernel did not take its backing
// file (go-fuse then stops offering backing files for good). The handles
// already open keep working as ordinary ones; writers beside them still
// wait for them, as the bookkeeping cannot know which opens the kernel
// accepted.
func (m *mountState) passthroughRefused() {
	files := m.files.Swap(nil)
	if files == nil {
		return
	}
	m.log.Warn("passthrough off: the kernel served a passthrough open through the mount; no more local copies are made")
	if err := files.close(); err != nil {
		m.log.Warn("removing the file cache", "err", err)
	}
}

// waitPassthroughGone waits, with st unlocked, for the inode's passthrough
// handles to be released, and returns st locked again; ETXTBSY (st
// unlocked) when they stay open.
func (n *node) waitPassthroughGone(ctx context.Context, st *inoState, op string) (*inoState, syscall.Errno) {
	deadline := time.Now().Add(ptConflictWait)
	for st.pt > 0 {
		gone := st.ptGone
		n.m.unlockIno(n.ino, st)
		left := time.Until(deadline)
		if left <= 0 {
			n.m.log.Info("refused: the file is open for passthrough reading on this host", "op", op, "ino", uint64(n.ino))
			return nil, syscall.ETXTBSY
		}
		t := time.NewTimer(left)
		select {
		case <-gone:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
		st = n.m.lockIno(n.ino)
		if ctx.Err() != nil && st.pt > 0 {
			n.m.unlockIno(n.ino, st)
			return nil, syscall.EINTR
		}
	}
	return st, 0
}

// probePassthrough reports whether the kernel lets this mount register
// backing files (Linux 6.9+, CAP_SYS_ADMIN). go-fuse would find out at the
// first passthrough open and then quietly stop trying; asking at mount
// time instead spares the cost of copies nobody can use.
func probePassthrough(srv *gofuse.Server, dir string) error {
	p := filepath.Join(dir, "probe")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer os.Remove(p)
	defer f.Close()
	id, errno := srv.RegisterBackingFd(&gofuse.BackingMap{Fd: int32(f.Fd())})
	if errno != 0 {
		return fmt.Errorf("registering a backing file: %w", errno)
	}
	if errno := srv.UnregisterBackingFd(id); errno != 0 {
		return fmt.Errorf("unregistering a backing file: %w", errno)
	}
	return nil
}
