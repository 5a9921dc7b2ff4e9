package image

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"path"
	"strings"
	"syscall"
	"time"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/fs/fuse"
	"github.com/dockyard/dockyard/metaserver"
)

// DFSTree is a directory in the Dockyard file system (a volume is one:
// /volumes/NAME), read through the file-system client without a mount.
// Paths are resolved without following symlinks. Like a mount of the whole
// namespace, it hides the file system's own tree (/.dockyard: registry
// blobs, image trees whose bytes live in layer blobs) and refuses to start
// inside it.
type DFSTree struct {
	c    *dfs.Client
	root string
}

// NewDFSTree checks that root (an absolute path in the file system) is a
// directory.
func NewDFSTree(ctx context.Context, c *dfs.Client, root string) (*DFSTree, error) {
	if !strings.HasPrefix(root, "/") {
		return nil, fmt.Errorf("dfs:%s: want an absolute path", root)
	}
	root = path.Clean(root)
	if reserved := "/" + fuse.ReservedName; root == reserved || strings.HasPrefix(root, reserved+"/") {
		return nil, fmt.Errorf("dfs:%s: %s holds Dockyard's own files, not a directory to commit", root, reserved)
	}
	a, err := c.Stat(ctx, root)
	if err != nil {
		return nil, fmt.Errorf("dfs:%s: %w", root, err)
	}
	if !a.IsDir() {
		return nil, fmt.Errorf("dfs:%s is not a directory", root)
	}
	return &DFSTree{c: c, root: root}, nil
}

func (d *DFSTree) path(p string) string { return path.Join(d.root, p) }

// ReadDir lists the directory p.
func (d *DFSTree) ReadDir(ctx context.Context, p string) ([]string, error) {
	ents, err := d.c.ReadDir(ctx, d.path(p))
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		if d.path(p) == "/" && e.Name == fuse.ReservedName {
			continue
		}
		names = append(names, e.Name)
	}
	return names, nil
}

// Lstat describes p with its xattrs and symlink target.
func (d *DFSTree) Lstat(ctx context.Context, p string) (Node, error) {
	a, err := d.c.Stat(ctx, d.path(p))
	if err != nil {
		return Node{}, err
	}
	in, err := d.c.Meta().GetInode(ctx, a.Ino)
	if err != nil {
		return Node{}, err
	}
	return Node{
		Mode:     in.Mode,
		Uid:      int(in.Uid),
		Gid:      int(in.Gid),
		Size:     int64(in.Size),
		ModTime:  time.Unix(0, in.Mtime).UTC(),
		Linkname: in.Target,
		Rdev:     in.Rdev,
		Xattrs:   in.Xattrs,
		Nlink:    uint64(in.Nlink),
		ID:       [2]uint64{0, uint64(in.Ino)},
	}, nil
}

// Open opens the regular file p for a sequential read.
func (d *DFSTree) Open(ctx context.Context, p string) (io.ReadCloser, error) {
	a, err := d.c.Stat(ctx, d.path(p))
	if err != nil {
		return nil, err
	}
	if a.Mode&syscall.S_IFMT != syscall.S_IFREG {
		return nil, metaserver.Errf("open", syscall.EINVAL, "%s is not a regular file", p)
	}
	f, err := d.c.Open(ctx, a.Ino)
	if err != nil {
		return nil, err
	}
	// Reads of a whole chunk each, so every request fetches whole stripes.
	return &dfsFileReader{f: f, r: bufio.NewReaderSize(io.NewSectionReader(f, 0, int64(a.Size)), dfs.DefaultChunkSize)}, nil
}

type dfsFileReader struct {
	f *dfs.File
	r io.Reader
}

func (r *dfsFileReader) Read(p []byte) (int, error) { return r.r.Read(p) }
func (r *dfsFileReader) Close() error               { return r.f.Close() }
