package fs

import (
	"context"
	"fmt"
	"path"

	"github.com/dockyard/dockyard/metaserver"
)

// Clone copies the file or directory tree at src to dst (which must not
// exist; its parent must) without copying any bytes: the metaserver copies
// the metadata in one step and the copy shares every chunk with src. Each
// side changes on its own afterwards.
//
// The copy is the state the metaserver holds when it applies the clone:
// bytes written through an open file and not yet committed (still in a
// mount's buffers, or a write whose commit is in flight) are not in it,
// and a file open for writing elsewhere is copied as last committed. Flush
// or fsync first for a copy that includes them.
func (c *Client) Clone(ctx context.Context, src, dst string) (metaserver.Attr, error) {
	fail := func(err error) (metaserver.Attr, error) {
		return metaserver.Attr{}, fmt.Errorf("clone %s to %s: %w", src, dst, err)
	}
	if _, _, err := splitPath("clone", src); err != nil {
		return fail(err)
	}
	dir, name, err := splitPath("clone", dst)
	if err != nil {
		return fail(err)
	}
	from, err := c.meta.ResolvePath(ctx, path.Clean(src))
	if err != nil {
		return fail(err)
	}
	parent, err := c.resolveDir(ctx, "clone", dir)
	if err != nil {
		return fail(err)
	}
	a, err := c.meta.CloneTree(ctx, from.Ino, parent, name)
	if err != nil {
		return fail(err)
	}
	return a, nil
}
