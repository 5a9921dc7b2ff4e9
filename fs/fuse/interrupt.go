package fuse

import (
	"context"

	"github.com/dockyard/dockyard/metaserver"
)

// Why metadata calls ignore the kernel's interrupts: the kernel sends
// FUSE_INTERRUPT when the calling thread gets any signal, even one it
// handles and returns from (a Go program's runtime signals its threads
// routinely), and go-fuse then cancels the request's context. A namespace
// call is a few milliseconds, bounded by the metaserver client's own
// deadlines, and a mutation cut off after it was sent may be applied all the
// same: answering EINTR would tell the program an unlink or rename failed
// that in fact happened. So the mount lets them finish and returns their
// real result. So does the flush at close(2) (handle.Flush), which cannot be
// retried. Data reads, writes and fsync keep the kernel's context: those are
// the calls that can wait long on a sick chunkserver, and there a signal
// should get the program out (an interrupted fsync can be asked again; an
// interrupted close cannot).
type uninterrupted struct{ metaserver.API }

func quiet(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

func (u uninterrupted) Lookup(ctx context.Context, parent metaserver.Ino, name string) (metaserver.Attr, error) {
	return u.API.Lookup(quiet(ctx), parent, name)
}

func (u uninterrupted) GetAttr(ctx context.Context, ino metaserver.Ino) (metaserver.Attr, error) {
	return u.API.GetAttr(quiet(ctx), ino)
}

func (u uninterrupted) GetInode(ctx context.Context, ino metaserver.Ino) (metaserver.Inode, error) {
	return u.API.GetInode(quiet(ctx), ino)
}

func (u uninterrupted) SetAttr(ctx context.Context, ino metaserver.Ino, in metaserver.SetAttrIn) (metaserver.Attr, error) {
	return u.API.SetAttr(quiet(ctx), ino, in)
}

func (u uninterrupted) Create(ctx context.Context, in metaserver.CreateIn) (metaserver.Attr, error) {
	return u.API.Create(quiet(ctx), in)
}

func (u uninterrupted) Link(ctx context.Context, ino, newParent metaserver.Ino, newName string) (metaserver.Attr, error) {
	return u.API.Link(quiet(ctx), ino, newParent, newName)
}

func (u uninterrupted) Unlink(ctx context.Context, parent metaserver.Ino, name string) error {
	return u.API.Unlink(quiet(ctx), parent, name)
}

func (u uninterrupted) Rmdir(ctx context.Context, parent metaserver.Ino, name string) error {
	return u.API.Rmdir(quiet(ctx), parent, name)
}

func (u uninterrupted) Rename(ctx context.Context, oldParent metaserver.Ino, oldName string, newParent metaserver.Ino, newName string, flags uint32) error {
	return u.API.Rename(quiet(ctx), oldParent, oldName, newParent, newName, flags)
}

func (u uninterrupted) ReadDir(ctx context.Context, dir metaserver.Ino, after string, limit int, plus bool) ([]metaserver.DirEntry, error) {
	return u.API.ReadDir(quiet(ctx), dir, after, limit, plus)
}

func (u uninterrupted) SetXattr(ctx context.Context, ino metaserver.Ino, name string, value []byte, flags int) error {
	return u.API.SetXattr(quiet(ctx), ino, name, value, flags)
}

func (u uninterrupted) GetXattr(ctx context.Context, ino metaserver.Ino, name string) ([]byte, error) {
	return u.API.GetXattr(quiet(ctx), ino, name)
}

func (u uninterrupted) ListXattr(ctx context.Context, ino metaserver.Ino) ([]string, error) {
	return u.API.ListXattr(quiet(ctx), ino)
}

func (u uninterrupted) RemoveXattr(ctx context.Context, ino metaserver.Ino, name string) error {
	return u.API.RemoveXattr(quiet(ctx), ino, name)
}

func (u uninterrupted) StatFS(ctx context.Context) (metaserver.StatFS, error) {
	return u.API.StatFS(quiet(ctx))
}

func (u uninterrupted) ResolvePath(ctx context.Context, path string) (metaserver.Attr, error) {
	return u.API.ResolvePath(quiet(ctx), path)
}
