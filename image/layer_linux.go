package image

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// DirTree is a directory on local disk. It never follows a symlink inside
// the directory: entries are described with lstat(2) and opened with
// O_NOFOLLOW.
type DirTree struct{ root string }

// NewDirTree checks that dir is a directory (a symlink to one is accepted:
// the user named it).
func NewDirTree(dir string) (*DirTree, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: no such directory", dir)
		}
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", dir)
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	return &DirTree{root: root}, nil
}

func (d *DirTree) path(p string) string { return filepath.Join(d.root, filepath.FromSlash(p)) }

// ReadDir lists the directory p.
func (d *DirTree) ReadDir(_ context.Context, p string) ([]string, error) {
	f, err := os.Open(d.path(p))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return f.Readdirnames(-1)
}

// Lstat describes p with its extended attributes.
func (d *DirTree) Lstat(_ context.Context, p string) (Node, error) {
	full := d.path(p)
	var st unix.Stat_t
	if err := unix.Lstat(full, &st); err != nil {
		return Node{}, err
	}
	n := Node{
		Mode:    st.Mode,
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		Size:    st.Size,
		ModTime: time.Unix(st.Mtim.Unix()).UTC(),
		Rdev:    st.Rdev,
		Nlink:   uint64(st.Nlink),
		ID:      [2]uint64{st.Dev, st.Ino},
	}
	if n.typ() == unix.S_IFLNK {
		t, err := os.Readlink(full)
		if err != nil {
			return Node{}, err
		}
		n.Linkname = t
	}
	x, err := lxattrs(full)
	if err != nil {
		return Node{}, fmt.Errorf("reading xattrs: %w", err)
	}
	n.Xattrs = x
	return n, nil
}

// Open opens the regular file p, refusing a symlink put in its place.
func (d *DirTree) Open(_ context.Context, p string) (io.ReadCloser, error) {
	fd, err := unix.Open(d.path(p), unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: p, Err: err}
	}
	return os.NewFile(uintptr(fd), p), nil
}

// lxattrs reads every extended attribute of p itself. File systems without
// xattrs report none.
func lxattrs(p string) (map[string][]byte, error) {
	buf := make([]byte, 4096)
	for {
		n, err := unix.Llistxattr(p, buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, len(buf)*4)
			continue
		}
		if errors.Is(err, unix.ENOTSUP) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		buf = buf[:n]
		break
	}
	var out map[string][]byte
	for len(buf) > 0 {
		i := 0
		for i < len(buf) && buf[i] != 0 {
			i++
		}
		name := string(buf[:i])
		if i < len(buf) {
			i++
		}
		buf = buf[i:]
		if name == "" {
			continue
		}
		v, err := lgetxattr(p, name)
		if errors.Is(err, unix.ENODATA) {
			continue // removed since the listing
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if out == nil {
			out = map[string][]byte{}
		}
		out[name] = v
	}
	return out, nil
}

func lgetxattr(p, name string) ([]byte, error) {
	size := 256
	for {
		buf := make([]byte, size)
		n, err := unix.Lgetxattr(p, name, buf)
		if errors.Is(err, unix.ERANGE) {
			size *= 4
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}
