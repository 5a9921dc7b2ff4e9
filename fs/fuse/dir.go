package fuse

import (
	"context"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	"github.com/dockyard/dockyard/metaserver"
)

// dirPage is how many entries one metaserver call lists. Listings are paged
// so a huge directory streams instead of arriving in one reply.
const dirPage = 1024

// dirHandle is one opendir(2). It lists through ReadDir with plus set, so
// the attributes READDIRPLUS needs come in the same reply as the names,
// instead of one lookup round trip per entry.
type dirHandle struct {
	n *node

	mu      sync.Mutex
	entries []metaserver.DirEntry // listed so far, in order
	pos     int                   // index into entries of the next entry to return
	done    bool                  // the metaserver has no entries after the last listed
}

var (
	_ gofs.FileReaddirenter = (*dirHandle)(nil)
	_ gofs.FileSeekdirer    = (*dirHandle)(nil)
	_ gofs.FileLookuper     = (*dirHandle)(nil)
	_ gofs.FileFsyncdirer   = (*dirHandle)(nil)
	_ gofs.FileReleasedirer = (*dirHandle)(nil)
)

func (n *node) OpendirHandle(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	// "." and ".." come first, as on a local file system; the kernel does not
	// make them up for FUSE.
	// The attributes are what fstat answers if the directory is removed
	// while open.
	a, err := n.m.meta.GetAttr(ctx, n.ino)
	if err != nil {
		return nil, 0, n.m.fail("opendir", n.ino, err)
	}
	n.mu.Lock()
	n.openDirs++
	n.lastAttr = a
	n.mu.Unlock()
	d := &dirHandle{n: n}
	d.entries = []metaserver.DirEntry{
		{Name: ".", Ino: n.ino, Mode: syscall.S_IFDIR},
		{Name: "..", Mode: syscall.S_IFDIR},
	}
	return d, 0, 0
}

// fill lists the next page after the last entry listed. d.mu is held.
func (d *dirHandle) fill(ctx context.Context) syscall.Errno {
	after := ""
	if len(d.entries) > 2 {
		after = d.entries[len(d.entries)-1].Name
	}
	page, err := d.n.m.meta.ReadDir(ctx, d.n.ino, after, dirPage, true)
	if err != nil {
		return d.n.m.fail("readdir", d.n.ino, err)
	}
	if len(page) < dirPage {
		d.done = true
	}
	for _, e := range page {
		if d.n.m.hideReserved(d.n.ino, e.Name) {
			continue
		}
		d.entries = append(d.entries, e)
	}
	return 0
}

// Readdirent returns entries one at a time; an entry's offset is its index
// plus one, so Seekdir can go back to any of them.
func (d *dirHandle) Readdirent(ctx context.Context) (*gofuse.DirEntry, syscall.Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for d.pos >= len(d.entries) {
		if d.done {
			return nil, 0
		}
		before := len(d.entries)
		if errno := d.fill(ctx); errno != 0 {
			return nil, errno
		}
		if len(d.entries) == before && d.done {
			return nil, 0
		}
	}
	e := d.entries[d.pos]
	d.pos++
	ino := uint64(e.Ino)
	if ino == 0 {
		ino = 1 // ".." of the mount root: the kernel ignores it
	}
	return &gofuse.DirEntry{Name: e.Name, Ino: ino, Mode: e.Mode & syscall.S_IFMT, Off: uint64(d.pos)}, 0
}

// Seekdir moves to the entry after offset off. Offset 0 is rewinddir(3),
// which must show changes made since opendir, so the listing is dropped.
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off == 0 {
		d.entries, d.done = d.entries[:2], false
		d.pos = 0
		return 0
	}
	for uint64(len(d.entries)) < off && !d.done {
		if errno := d.fill(ctx); errno != 0 {
			return errno
		}
	}
	if off > uint64(len(d.entries)) {
		off = uint64(len(d.entries))
	}
	d.pos = int(off)
	return 0
}

// Lookup serves READDIRPLUS from the attributes the listing carried.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *gofuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	d.mu.Lock()
	var attr *metaserver.Attr
	// The entry asked for is almost always the one just returned.
	for i := d.pos - 1; i >= 0 && i < len(d.entries); i-- {
		if d.entries[i].Name == name {
			attr = d.entries[i].Attr
			break
		}
	}
	d.mu.Unlock()
	if attr == nil {
		return d.n.Lookup(ctx, name, out)
	}
	// The listing may be older than the cache's view: the short timeouts.
	return d.n.child(ctx, feedMark{}, *attr, out), 0
}

// Fsyncdir has nothing to do: every namespace change is committed to the
// Raft log before it is acknowledged.
func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno { return 0 }

func (d *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {
	d.n.mu.Lock()
	d.n.openDirs--
	d.n.mu.Unlock()
}
