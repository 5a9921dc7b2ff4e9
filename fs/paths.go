package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"
	"syscall"

	"github.com/dockyard/dockyard/metaserver"
)

// Path helpers for the CLI, the registry and tests. Paths are absolute,
// slash-separated names in the DFS namespace; symlinks are not followed.

// splitPath cleans an absolute path into its parent directory and last name.
func splitPath(op, p string) (dir, name string, err error) {
	if !strings.HasPrefix(p, "/") {
		return "", "", metaserver.Errf(op, syscall.EINVAL, "path %q is not absolute", p)
	}
	clean := path.Clean(p)
	if clean == "/" {
		return "", "", metaserver.Errf(op, syscall.EINVAL, "path %q names the root", p)
	}
	return path.Dir(clean), path.Base(clean), nil
}

func (c *Client) resolveDir(ctx context.Context, op, dir string) (metaserver.Ino, error) {
	a, err := c.meta.ResolvePath(ctx, dir)
	if err != nil {
		return 0, err
	}
	if !a.IsDir() {
		return 0, metaserver.Errf(op, syscall.ENOTDIR, "%s is not a directory", dir)
	}
	return a.Ino, nil
}

// Stat returns the attributes of the inode at path.
func (c *Client) Stat(ctx context.Context, p string) (metaserver.Attr, error) {
	return c.meta.ResolvePath(ctx, path.Clean(p))
}

// Mkdir makes one directory, like os.Mkdir: its parent must exist, and a
// name already taken is EEXIST.
func (c *Client) Mkdir(ctx context.Context, p string, mode uint32) (metaserver.Ino, error) {
	if !strings.HasPrefix(p, "/") {
		return 0, metaserver.Errf("mkdir", syscall.EINVAL, "path %q is not absolute", p)
	}
	p = path.Clean(p)
	if p == "/" {
		return 0, metaserver.Errf("mkdir", syscall.EEXIST, "/")
	}
	dir, name := path.Split(p)
	parent, err := c.meta.ResolvePath(ctx, path.Clean(dir))
	if err != nil {
		return 0, err
	}
	if !parent.IsDir() {
		return 0, metaserver.Errf("mkdir", syscall.ENOTDIR, "%s is not a directory", path.Clean(dir))
	}
	a, err := c.meta.Create(ctx, metaserver.CreateIn{
		Parent: parent.Ino, Name: name, Mode: syscall.S_IFDIR | mode&0o7777,
		Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid()), Exclusive: true,
	})
	if err != nil {
		return 0, err
	}
	return a.Ino, nil
}

// MkdirAll makes a directory and any missing parents, like os.MkdirAll, and
// returns its inode. Racing creators both succeed.
func (c *Client) MkdirAll(ctx context.Context, p string, mode uint32) (metaserver.Ino, error) {
	if !strings.HasPrefix(p, "/") {
		return 0, metaserver.Errf("mkdir", syscall.EINVAL, "path %q is not absolute", p)
	}
	ino := metaserver.RootIno
	for _, name := range strings.Split(strings.Trim(path.Clean(p), "/"), "/") {
		if name == "" {
			continue
		}
		a, err := c.meta.Lookup(ctx, ino, name)
		if errors.Is(err, syscall.ENOENT) {
			a, err = c.meta.Create(ctx, metaserver.CreateIn{
				Parent: ino, Name: name, Mode: syscall.S_IFDIR | mode&0o7777,
				Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid()), Exclusive: true,
			})
			if errors.Is(err, syscall.EEXIST) {
				a, err = c.meta.Lookup(ctx, ino, name)
			}
		}
		if err != nil {
			return 0, err
		}
		if !a.IsDir() {
			return 0, metaserver.Errf("mkdir", syscall.ENOTDIR, "%q in %s is not a directory", name, p)
		}
		ino = a.Ino
	}
	return ino, nil
}

// CreateFile creates a regular file (parents must exist) and opens it. Like
// os.Create, an existing file is truncated unless exclusive is set, in which
// case an existing name is EEXIST.
func (c *Client) CreateFile(ctx context.Context, p string, mode uint32, exclusive bool) (*File, error) {
	dir, name, err := splitPath("create", p)
	if err != nil {
		return nil, err
	}
	parent, err := c.resolveDir(ctx, "create", dir)
	if err != nil {
		return nil, err
	}
	a, err := c.meta.Create(ctx, metaserver.CreateIn{
		Parent: parent, Name: name, Mode: syscall.S_IFREG | mode&0o7777,
		Uid: uint32(os.Getuid()), Gid: uint32(os.Getgid()), Exclusive: exclusive,
	})
	if err != nil {
		return nil, err
	}
	if !a.IsRegular() {
		return nil, metaserver.Errf("create", syscall.EISDIR, "%s exists and is not a regular file", p)
	}
	if a.Size > 0 {
		zero := uint64(0)
		if _, err := c.meta.SetAttr(ctx, a.Ino, metaserver.SetAttrIn{Size: &zero}); err != nil {
			return nil, fmt.Errorf("truncating %s: %w", p, err)
		}
	}
	return c.Open(ctx, a.Ino)
}

// OpenPath opens the regular file at path.
func (c *Client) OpenPath(ctx context.Context, p string) (*File, error) {
	a, err := c.meta.ResolvePath(ctx, path.Clean(p))
	if err != nil {
		return nil, err
	}
	return c.Open(ctx, a.Ino)
}

// Remove removes a file, symlink or empty directory.
func (c *Client) Remove(ctx context.Context, p string) error {
	dir, name, err := splitPath("remove", p)
	if err != nil {
		return err
	}
	parent, err := c.resolveDir(ctx, "remove", dir)
	if err != nil {
		return err
	}
	a, err := c.meta.Lookup(ctx, parent, name)
	if err != nil {
		return err
	}
	if a.IsDir() {
		return c.meta.Rmdir(ctx, parent, name)
	}
	return c.meta.Unlink(ctx, parent, name)
}

// RemoveAll removes p and, if it is a directory, everything under it, like
// os.RemoveAll: a path that does not exist is no error.
func (c *Client) RemoveAll(ctx context.Context, p string) error {
	err := c.Remove(ctx, p)
	if errors.Is(err, syscall.ENOTEMPTY) {
		err = c.removeTree(ctx, p)
	}
	if errors.Is(err, syscall.ENOENT) {
		return nil
	}
	return err
}

func (c *Client) removeTree(ctx context.Context, p string) error {
	ents, err := c.ReadDir(ctx, p)
	if err != nil {
		return err
	}
	for _, e := range ents {
		child := path.Join(p, e.Name)
		if e.Mode&syscall.S_IFMT == syscall.S_IFDIR {
			err = c.removeTree(ctx, child)
		} else {
			err = c.Remove(ctx, child)
		}
		if err != nil && !errors.Is(err, syscall.ENOENT) {
			return fmt.Errorf("%s: %w", child, err)
		}
	}
	return c.Remove(ctx, p)
}

// Rename moves oldPath to newPath, replacing what newPath names.
func (c *Client) Rename(ctx context.Context, oldPath, newPath string) error {
	od, on, err := splitPath("rename", oldPath)
	if err != nil {
		return err
	}
	nd, nn, err := splitPath("rename", newPath)
	if err != nil {
		return err
	}
	op, err := c.resolveDir(ctx, "rename", od)
	if err != nil {
		return err
	}
	np, err := c.resolveDir(ctx, "rename", nd)
	if err != nil {
		return err
	}
	return c.meta.Rename(ctx, op, on, np, nn, 0)
}

// readDirPage is how many entries one ReadDir call asks for.
const readDirPage = 1024

// ReadDir lists a directory, sorted by name.
func (c *Client) ReadDir(ctx context.Context, p string) ([]metaserver.DirEntry, error) {
	return c.readDir(ctx, p, false)
}

// ReadDirPlus is ReadDir with every entry's attributes filled in.
func (c *Client) ReadDirPlus(ctx context.Context, p string) ([]metaserver.DirEntry, error) {
	return c.readDir(ctx, p, true)
}

func (c *Client) readDir(ctx context.Context, p string, plus bool) ([]metaserver.DirEntry, error) {
	dir, err := c.resolveDir(ctx, "readdir", path.Clean(p))
	if err != nil {
		return nil, err
	}
	var out []metaserver.DirEntry
	after := ""
	for {
		page, err := c.meta.ReadDir(ctx, dir, after, readDirPage, plus)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		if len(page) < readDirPage {
			return out, nil
		}
		after = page[len(page)-1].Name
	}
}

// WriteFile streams r into the file at path (created or truncated) and
// returns its attributes once everything is committed. Memory stays bounded
// by the upload pipeline, whatever the stream's length.
func (c *Client) WriteFile(ctx context.Context, p string, r io.Reader, mode uint32) (metaserver.Attr, error) {
	f, err := c.CreateFile(ctx, p, mode, false)
	if err != nil {
		return metaserver.Attr{}, err
	}
	if _, err := f.writeFrom(ctx, r, 0); err != nil {
		f.Close()
		return metaserver.Attr{}, fmt.Errorf("writing %s: %w", p, err)
	}
	if err := f.Flush(ctx); err != nil {
		f.Close()
		return metaserver.Attr{}, fmt.Errorf("writing %s: %w", p, err)
	}
	a := f.Attr()
	if err := f.Close(); err != nil {
		return metaserver.Attr{}, fmt.Errorf("writing %s: %w", p, err)
	}
	return a, nil
}
