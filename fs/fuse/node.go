package fuse

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dockyard/dockyard/metaserver"
)

// node is one inode of the mount, of any type: the kernel only sends a
// directory operation to a directory, so one type keeps the adapter small.
type node struct {
	gofs.Inode
	m   *mountState
	ino metaserver.Ino

	mu sync.Mutex
	// cachedGen is the content generation the kernel's page cache was filled
	// from; valid when genKnown.
	cachedGen uint64
	genKnown  bool
	// target caches a symlink's target: it never changes for an inode.
	target string
	// noCapUntil caches the absence of security.capability, which the
	// kernel asks for before every write(2).
	noCapUntil time.Time
	// openDirs counts opendir handles; while one is open the directory
	// answers fstat with lastAttr even after it was removed (rmdir, or a
	// rename over it), as a local file system does.
	openDirs int
	lastAttr metaserver.Attr
}

var (
	_ gofs.NodeLookuper       = (*node)(nil)
	_ gofs.NodeGetattrer      = (*node)(nil)
	_ gofs.NodeSetattrer      = (*node)(nil)
	_ gofs.NodeOpener         = (*node)(nil)
	_ gofs.NodeCreater        = (*node)(nil)
	_ gofs.NodeTmpfiler       = (*node)(nil)
	_ gofs.NodeMkdirer        = (*node)(nil)
	_ gofs.NodeMknoder        = (*node)(nil)
	_ gofs.NodeSymlinker      = (*node)(nil)
	_ gofs.NodeReadlinker     = (*node)(nil)
	_ gofs.NodeLinker         = (*node)(nil)
	_ gofs.NodeUnlinker       = (*node)(nil)
	_ gofs.NodeRmdirer        = (*node)(nil)
	_ gofs.NodeRenamer        = (*node)(nil)
	_ gofs.NodeGetxattrer     = (*node)(nil)
	_ gofs.NodeSetxattrer     = (*node)(nil)
	_ gofs.NodeListxattrer    = (*node)(nil)
	_ gofs.NodeRemovexattrer  = (*node)(nil)
	_ gofs.NodeStatfser       = (*node)(nil)
	_ gofs.NodeOpendirHandler = (*node)(nil)
	_ gofs.NodeAllocater      = (*node)(nil)
)

// caller returns the uid and gid of the process making the request.
func caller(ctx context.Context) (uint32, uint32) {
	if c, ok := gofuse.FromContext(ctx); ok {
		return c.Uid, c.Gid
	}
	return 0, 0
}

// fillAttr converts a metaserver attribute to the kernel's form. nlink leaves
// out the orphan links this mount holds, which are not names a user made.
func (m *mountState) fillAttr(a metaserver.Attr, out *gofuse.Attr) {
	out.Ino = uint64(a.Ino)
	out.Size = a.Size
	out.Blocks = (a.Size + 511) / 512
	out.Blksize = blockSize
	out.Mode = a.Mode
	out.Nlink = a.Nlink - m.orphans.held(a.Ino)
	out.Uid = a.Uid
	out.Gid = a.Gid
	out.Rdev = uint32(a.Rdev)
	out.Atime, out.Atimensec = split(a.Atime)
	out.Mtime, out.Mtimensec = split(a.Mtime)
	out.Ctime, out.Ctimensec = split(a.Ctime)
}

func split(ns int64) (uint64, uint32) {
	sec, nsec := ns/1e9, ns%1e9
	if nsec < 0 {
		sec, nsec = sec-1, nsec+1e9
	}
	return uint64(sec), uint32(nsec)
}

// child registers the inode a lookup or create returned and fills the
// kernel's entry. go-fuse keeps one Inode per inode number, so a hard link
// found under a second name resolves to the node already known.
//
// mk is where the metadata cache stood when the request started; it decides
// how long the kernel may keep the entry (see mountState.timeouts).
func (n *node) child(ctx context.Context, mk feedMark, a metaserver.Attr, out *gofuse.EntryOut) *gofs.Inode {
	n.m.localView(&a)
	n.m.fillAttr(a, &out.Attr)
	entry, attr := n.m.timeouts(mk)
	out.SetEntryTimeout(entry)
	out.SetAttrTimeout(attr)
	c := &node{m: n.m, ino: a.Ino}
	ch := n.NewInode(ctx, c, gofs.StableAttr{Mode: a.Mode & syscall.S_IFMT, Ino: uint64(a.Ino)})
	if known, ok := ch.Operations().(*node); ok && n.m.feed != nil {
		n.m.feed.register(known)
	}
	return ch
}

func (n *node) Lookup(ctx context.Context, name string, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.m.hideReserved(n.ino, name) {
		return nil, syscall.ENOENT
	}
	mk := n.m.mark()
	a, err := n.m.meta.Lookup(ctx, n.ino, name)
	if err != nil {
		return nil, n.m.fail("lookup", n.ino, err)
	}
	return n.child(ctx, mk, a, out), 0
}

func (n *node) Getattr(ctx context.Context, fh gofs.FileHandle, out *gofuse.AttrOut) syscall.Errno {
	mk := n.m.mark()
	a, err := n.attr(ctx)
	if err != nil {
		return n.m.fail("getattr", n.ino, err)
	}
	n.m.fillAttr(a, &out.Attr)
	_, attr := n.m.timeouts(mk)
	out.SetTimeout(attr)
	return 0
}

// attr returns the inode's attributes as this mount sees them: the
// metaserver's, with the size and mtime of writes still buffered here.
func (n *node) attr(ctx context.Context) (metaserver.Attr, error) {
	a, err := n.m.meta.GetAttr(ctx, n.ino)
	n.mu.Lock()
	if err == nil {
		n.lastAttr = a
	} else if isNotFound(err) && n.openDirs > 0 && n.lastAttr.Ino == n.ino {
		a, err = n.lastAttr, nil
		a.Nlink = 0
	}
	n.mu.Unlock()
	if err != nil {
		return a, err
	}
	n.m.localView(&a)
	return a, nil
}

// localView overlays the size and mtime of writes this mount still buffers
// for an open file. Every attribute handed to the kernel goes through it: a
// lookup or a listing answering with the metaserver's older size would make
// the kernel cut reads short or append at the wrong offset.
func (m *mountState) localView(a *metaserver.Attr) {
	f := m.openFile(a.Ino)
	if f == nil {
		return
	}
	fa := f.Attr()
	a.Size = fa.Size
	if fa.Mtime > a.Mtime {
		a.Mtime = fa.Mtime
	}
}

func (n *node) Setattr(ctx context.Context, fh gofs.FileHandle, in *gofuse.SetAttrIn, out *gofuse.AttrOut) syscall.Errno {
	if n.m.opt.ReadOnly {
		return syscall.EROFS
	}
	var set metaserver.SetAttrIn
	changed := false
	if v, ok := in.GetMode(); ok {
		v &= 07777
		set.Mode, changed = &v, true
	}
	if v, ok := in.GetUID(); ok {
		set.Uid, changed = &v, true
	}
	if v, ok := in.GetGID(); ok {
		set.Gid, changed = &v, true
	}
	if t, ok := in.GetATime(); ok {
		v := t.UnixNano()
		set.Atime, changed = &v, true
	}
	if t, ok := in.GetMTime(); ok {
		v := t.UnixNano()
		set.Mtime, changed = &v, true
	}
	if size, ok := in.GetSize(); ok {
		// An open file buffers writes, so it must see the truncation too;
		// through it the buffer and the extents agree.
		st := n.m.lockIno(n.ino)
		if st.pt > 0 {
			// Passthrough readers read a copy this cannot change;
			// see passthrough.go.
			var errno syscall.Errno
			if st, errno = n.waitPassthroughGone(ctx, st, "truncate"); errno != 0 {
				return errno
			}
		}
		if files := n.m.files.Load(); files != nil {
			files.drop(n.ino)
		}
		var err error
		open := st.open != nil
		if open {
			err = st.open.f.Truncate(ctx, size)
		}
		n.m.unlockIno(n.ino, st)
		if err != nil {
			return n.m.fail("truncate", n.ino, err)
		}
		if !open {
			set.Size, changed = &size, true
		}
	}
	if changed {
		var err error
		if f := n.m.openFile(n.ino); f != nil && (set.Atime != nil || set.Mtime != nil) {
			// Through the open file, so a commit of its buffered writes
			// cannot land after these times and stamp over them, and so
			// its view of the times (localView) is the one set here.
			_, err = f.SetAttr(quiet(ctx), set)
		} else {
			_, err = n.m.meta.SetAttr(ctx, n.ino, set)
		}
		if err != nil {
			return n.m.fail("setattr", n.ino, err)
		}
	}
	return n.Getattr(ctx, fh, out)
}

// newIn fills the fields every create shares.
func (n *node) newIn(ctx context.Context, name string, mode uint32) metaserver.CreateIn {
	uid, gid := caller(ctx)
	return metaserver.CreateIn{Parent: n.ino, Name: name, Mode: mode, Uid: uid, Gid: gid}
}

func (n *node) create(ctx context.Context, op string, in metaserver.CreateIn, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	ch, _, errno := n.createAttr(ctx, op, in, out)
	return ch, errno
}

// createAttr is create that also returns the new inode's attributes as the
// metaserver gave them.
func (n *node) createAttr(ctx context.Context, op string, in metaserver.CreateIn, out *gofuse.EntryOut) (*gofs.Inode, metaserver.Attr, syscall.Errno) {
	if n.m.opt.ReadOnly {
		return nil, metaserver.Attr{}, syscall.EROFS
	}
	if n.m.hideReserved(n.ino, in.Name) {
		return nil, metaserver.Attr{}, syscall.EEXIST
	}
	mk := n.m.mark()
	a, err := n.m.meta.Create(ctx, in)
	if err != nil {
		return nil, metaserver.Attr{}, n.m.fail(op, n.ino, err)
	}
	return n.child(ctx, mk, a, out), a, 0
}

func (n *node) Mkdir(ctx context.Context, name string, mode uint32, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return n.create(ctx, "mkdir", n.newIn(ctx, name, syscall.S_IFDIR|mode&07777), out)
}

func (n *node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	in := n.newIn(ctx, name, mode)
	in.Rdev = uint64(dev)
	if mode&syscall.S_IFMT == 0 {
		in.Mode |= syscall.S_IFREG
	}
	return n.create(ctx, "mknod", in, out)
}

func (n *node) Symlink(ctx context.Context, target, name string, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	in := n.newIn(ctx, name, syscall.S_IFLNK|0777)
	in.Target = target
	ch, errno := n.create(ctx, "symlink", in, out)
	if errno == 0 {
		if c, ok := ch.Operations().(*node); ok {
			c.mu.Lock()
			c.target = target
			c.mu.Unlock()
		}
	}
	return ch, errno
}

func (n *node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	n.mu.Lock()
	t := n.target
	n.mu.Unlock()
	if t != "" {
		return []byte(t), 0
	}
	ino, err := n.m.meta.GetInode(ctx, n.ino)
	if err != nil {
		return nil, n.m.fail("readlink", n.ino, err)
	}
	if ino.Mode&syscall.S_IFMT != syscall.S_IFLNK {
		return nil, syscall.EINVAL
	}
	n.mu.Lock()
	n.target = ino.Target
	n.mu.Unlock()
	return []byte(ino.Target), 0
}

func (n *node) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if n.m.opt.ReadOnly {
		return nil, syscall.EROFS
	}
	if n.m.hideReserved(n.ino, name) {
		return nil, syscall.EEXIST
	}
	t, ok := target.EmbeddedInode().Operations().(*node)
	if !ok {
		return nil, syscall.EXDEV
	}
	mk := n.m.mark()
	a, err := n.m.meta.Link(ctx, t.ino, n.ino, name)
	if err != nil {
		return nil, n.m.fail("link", n.ino, err)
	}
	return n.child(ctx, mk, a, out), 0
}

// holdIfOpen locks the shared state of the inode under name, if the kernel
// knows one, and gives it an orphan link when this mount holds it open. The
// caller unlocks it (n.m.unlockIno) after the unlink or rename, so no open
// slips in between.
func (n *node) holdIfOpen(ctx context.Context, name string) (metaserver.Ino, *inoState, error) {
	ch := n.GetChild(name)
	if ch == nil {
		return 0, nil, nil
	}
	ino := metaserver.Ino(ch.StableAttr().Ino)
	st := n.m.lockIno(ino)
	if st.open == nil {
		return ino, st, nil
	}
	return ino, st, n.m.orphans.hold(ctx, ino)
}

func (n *node) Unlink(ctx context.Context, name string) syscall.Errno {
	if n.m.opt.ReadOnly {
		return syscall.EROFS
	}
	if n.m.hideReserved(n.ino, name) {
		return syscall.ENOENT
	}
	ino, st, err := n.holdIfOpen(ctx, name)
	if st != nil {
		defer n.m.unlockIno(ino, st)
	}
	if err != nil {
		return n.m.fail("unlink", n.ino, err)
	}
	err = n.m.meta.Unlink(ctx, n.ino, name)
	n.m.forgetIno(ctx, ino)
	if err != nil {
		return n.m.fail("unlink", n.ino, err)
	}
	return 0
}

// forgetIno tells the metadata cache that an unlink or rename changed the
// attributes of ino, the inode the kernel knew under the name: the cache may
// not hold that name, and would answer the old link count (see
// fs.MetaCache.ForgetInode). ino 0 (the kernel knew no inode) is ignored.
func (m *mountState) forgetIno(ctx context.Context, ino metaserver.Ino) {
	if m.cache != nil && ino != 0 {
		m.cache.ForgetInode(ctx, ino)
	}
}

func (n *node) Rmdir(ctx context.Context, name string) syscall.Errno {
	if n.m.opt.ReadOnly {
		return syscall.EROFS
	}
	if n.m.hideReserved(n.ino, name) {
		return syscall.ENOENT
	}
	if err := n.m.meta.Rmdir(ctx, n.ino, name); err != nil {
		return n.m.fail("rmdir", n.ino, err)
	}
	return 0
}

func (n *node) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	if n.m.opt.ReadOnly {
		return syscall.EROFS
	}
	np, ok := newParent.EmbeddedInode().Operations().(*node)
	if !ok {
		return syscall.EXDEV
	}
	if n.m.hideReserved(n.ino, name) {
		return syscall.ENOENT
	}
	if n.m.hideReserved(np.ino, newName) {
		return syscall.EPERM
	}
	// The moved inode's ctime and a replaced one's link count change.
	var moved, replaced metaserver.Ino
	if ch := n.GetChild(name); ch != nil {
		moved = metaserver.Ino(ch.StableAttr().Ino)
	}
	if ch := np.GetChild(newName); ch != nil {
		replaced = metaserver.Ino(ch.StableAttr().Ino)
	}
	// A replaced target that is open here must stay readable.
	if flags&(metaserver.RenameExchange|metaserver.RenameNoreplace) == 0 {
		ino, st, err := np.holdIfOpen(ctx, newName)
		if st != nil {
			defer n.m.unlockIno(ino, st)
		}
		if err != nil {
			return n.m.fail("rename", n.ino, err)
		}
	}
	err := n.m.meta.Rename(ctx, n.ino, name, np.ino, newName, flags)
	n.m.forgetIno(ctx, moved)
	n.m.forgetIno(ctx, replaced)
	if err != nil {
		return n.m.fail("rename", n.ino, err)
	}
	return 0
}

func (n *node) Statfs(ctx context.Context, out *gofuse.StatfsOut) syscall.Errno {
	st, err := n.m.meta.StatFS(ctx)
	if err != nil {
		return n.m.fail("statfs", n.ino, err)
	}
	const bsize = 4096
	out.Bsize = bsize
	out.Frsize = bsize
	out.Blocks = st.TotalBytes / bsize
	out.Bfree = st.FreeBytes / bsize
	out.Bavail = st.FreeBytes / bsize
	out.Files = st.Files
	out.Ffree = st.FreeFiles
	out.NameLen = metaserver.MaxNameLen
	return 0
}

// Getxattr answers a size query (empty dest) with the value's length, as
// getxattr(2) with size 0 expects.
func (n *node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	isCap := attr == "security.capability"
	if isCap {
		n.mu.Lock()
		absent := time.Now().Before(n.noCapUntil)
		n.mu.Unlock()
		if absent {
			return 0, syscall.ENODATA
		}
	}
	v, err := n.m.meta.GetXattr(ctx, n.ino, attr)
	if err != nil {
		e := n.m.fail("getxattr", n.ino, err)
		if isCap && e == syscall.ENODATA {
			// Cached like an attribute: for as long as the kernel trusts
			// the mode, it may trust that no capability is set.
			n.mu.Lock()
			n.noCapUntil = time.Now().Add(n.m.opt.AttrTimeout)
			n.mu.Unlock()
		}
		return 0, e
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (n *node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	if n.m.opt.ReadOnly {
		return syscall.EROFS
	}
	if err := n.m.meta.SetXattr(ctx, n.ino, attr, data, int(flags)); err != nil {
		return n.m.fail("setxattr", n.ino, err)
	}
	n.forgetCap(attr)
	return 0
}

func (n *node) forgetCap(attr string) {
	if attr == "security.capability" {
		n.mu.Lock()
		n.noCapUntil = time.Time{}
		n.mu.Unlock()
	}
}

func (n *node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	names, err := n.m.meta.ListXattr(ctx, n.ino)
	if err != nil {
		return 0, n.m.fail("listxattr", n.ino, err)
	}
	size := 0
	for _, s := range names {
		size += len(s) + 1
	}
	if len(dest) < size {
		return uint32(size), syscall.ERANGE
	}
	off := 0
	for _, s := range names {
		off += copy(dest[off:], s)
		dest[off] = 0
		off++
	}
	return uint32(size), 0
}

func (n *node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	if n.m.opt.ReadOnly {
		return syscall.EROFS
	}
	if err := n.m.meta.RemoveXattr(ctx, n.ino, attr); err != nil {
		return n.m.fail("removexattr", n.ino, err)
	}
	n.forgetCap(attr)
	return 0
}

// isNotFound reports a namespace ENOENT.
func isNotFound(err error) bool { return errors.Is(err, syscall.ENOENT) }
