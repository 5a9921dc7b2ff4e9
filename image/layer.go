package image

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// A layer written from a directory, for `dockyard commit`.
//
// The tar is deterministic: entries in byte order of their paths, parents
// before children, numeric owners only (no user names, which depend on the
// host's passwd), no access or change times (reading a file changes its
// atime), and a gzip header without name or time. The same tree gives the
// same digest, so committing it twice stores one blob.

// Tree is a directory tree a layer is written from: a local directory
// (DirTree) or one in the Dockyard file system (DFSTree). Paths are
// slash-separated and relative to the tree's root, "." being the root.
type Tree interface {
	// ReadDir returns the names in the directory p, in any order.
	ReadDir(ctx context.Context, p string) ([]string, error)
	// Lstat describes p itself, never what a symlink points to.
	Lstat(ctx context.Context, p string) (Node, error)
	// Open opens the regular file p without following a symlink.
	Open(ctx context.Context, p string) (io.ReadCloser, error)
}

// Node is what a layer keeps of one file.
type Node struct {
	Mode     uint32 // type bits (S_IFMT) and permission bits, as stat(2) gives them
	Uid, Gid int
	Size     int64
	ModTime  time.Time
	Linkname string // symlink target
	Rdev     uint64 // device number of a device node
	Xattrs   map[string][]byte
	// Nlink and ID find hard links: two nodes with Nlink > 1 and the same
	// ID are one file.
	Nlink uint64
	ID    [2]uint64
}

func (n Node) typ() uint32 { return n.Mode & syscall.S_IFMT }

// Compression of a written layer.
const (
	Gzip = "gzip"
	Zstd = "zstd"
)

// LayerOptions shape a layer.
type LayerOptions struct {
	// Compression is Gzip (default) or Zstd.
	Compression string
	// SourceDateEpoch, when set, clamps every modification time later than
	// it to it, as reproducible builds' SOURCE_DATE_EPOCH does.
	SourceDateEpoch *time.Time
	// Overlay reads the tree as an overlayfs upper directory: 0/0 character
	// devices (or files marked with an overlay whiteout xattr) become OCI
	// whiteouts, directories marked opaque get a .wh..wh..opq entry, and
	// overlayfs's own xattrs are dropped.
	Overlay bool
	// Skipped is told about every entry a layer cannot hold (sockets);
	// nil skips them silently.
	Skipped func(p, why string)
}

// Layer describes a written layer blob.
type Layer struct {
	Descriptor ocispec.Descriptor // media type, digest and size of the compressed blob
	DiffID     digest.Digest      // digest of the uncompressed tar
	Entries    int
}

// Errors a layer write reports for trees it cannot express.
var (
	// ErrReservedName is a file whose name starts with .wh., which the OCI
	// image spec reserves for whiteouts.
	ErrReservedName = errors.New("name reserved for whiteouts")
	// ErrOverlayFeature is an overlayfs upper directory that uses
	// redirect_dir or metacopy: its files' contents or origins live in the
	// lower layers, which a layer cannot point to.
	ErrOverlayFeature = errors.New("overlayfs feature a layer cannot express")
)

const (
	whiteoutPrefix = ".wh."
	opaqueMarker   = ".wh..wh..opq"
)

// WriteLayer writes the tree as a compressed layer tar to w.
func WriteLayer(ctx context.Context, w io.Writer, t Tree, o LayerOptions) (Layer, error) {
	var l Layer
	blob := &countingHash{h: sha256.New()}
	out := io.MultiWriter(w, blob)
	var (
		zw        io.WriteCloser
		mediaType string
		err       error
	)
	switch o.Compression {
	case "", Gzip:
		zw, mediaType = gzip.NewWriter(out), ocispec.MediaTypeImageLayerGzip
	case Zstd:
		zw, err = zstd.NewWriter(out)
		if err != nil {
			return l, err
		}
		mediaType = ocispec.MediaTypeImageLayerZstd
	default:
		return l, fmt.Errorf("compression %q: want gzip or zstd", o.Compression)
	}
	diff := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(zw, diff))
	lw := &layerWriter{t: t, tw: tw, o: o, links: map[[2]uint64]string{}}
	if err := lw.dir(ctx, "."); err != nil {
		return l, err
	}
	if err := tw.Close(); err != nil {
		return l, err
	}
	if err := zw.Close(); err != nil {
		return l, err
	}
	l.Descriptor = ocispec.Descriptor{
		MediaType: mediaType,
		Digest:    digest.NewDigest(digest.SHA256, blob.h),
		Size:      blob.n,
	}
	l.DiffID = digest.NewDigest(digest.SHA256, diff)
	l.Entries = lw.entries
	return l, nil
}

type countingHash struct {
	h hash.Hash
	n int64
}

func (c *countingHash) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	return c.h.Write(p)
}

type layerWriter struct {
	t       Tree
	tw      *tar.Writer
	o       LayerOptions
	links   map[[2]uint64]string // hard-link identity -> first path written
	entries int
}

// dir writes the entries of directory p (not p itself), sorted by name.
func (w *layerWriter) dir(ctx context.Context, p string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	names, err := w.t.ReadDir(ctx, p)
	if err != nil {
		return fmt.Errorf("reading directory %s: %w", p, err)
	}
	sort.Strings(names)
	for _, name := range names {
		if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
			return fmt.Errorf("directory %s lists an invalid name %q", p, name)
		}
		if err := w.entry(ctx, path.Join(p, name), name); err != nil {
			return err
		}
	}
	return nil
}

func (w *layerWriter) entry(ctx context.Context, p, name string) error {
	n, err := w.t.Lstat(ctx, p)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if w.o.Overlay {
		if err := checkOverlayXattrs(p, n.Xattrs); err != nil {
			return err
		}
		if isOverlayWhiteout(n) {
			return w.write(&tar.Header{Typeflag: tar.TypeReg, Name: path.Join(path.Dir(p), whiteoutPrefix+name),
				Mode: 0o644, ModTime: w.clamp(n.ModTime), Format: tar.FormatPAX}, nil, 0)
		}
	}
	if strings.HasPrefix(name, whiteoutPrefix) {
		return fmt.Errorf("%s: %w (a layer would read it as deleting %q)", p, ErrReservedName, strings.TrimPrefix(name, whiteoutPrefix))
	}
	h := &tar.Header{
		Name:    p,
		Mode:    int64(n.Mode & 0o7777),
		Uid:     n.Uid,
		Gid:     n.Gid,
		ModTime: w.clamp(n.ModTime),
		Format:  tar.FormatPAX,
	}
	if x := w.xattrs(n.Xattrs); len(x) > 0 {
		h.PAXRecords = x
	}
	switch n.typ() {
	case syscall.S_IFDIR:
		h.Typeflag, h.Name = tar.TypeDir, p+"/"
		if err := w.write(h, nil, 0); err != nil {
			return err
		}
		if w.o.Overlay && isOpaque(n.Xattrs) {
			if err := w.write(&tar.Header{Typeflag: tar.TypeReg, Name: path.Join(p, opaqueMarker), Mode: 0o644,
				ModTime: h.ModTime, Format: tar.FormatPAX}, nil, 0); err != nil {
				return err
			}
		}
		return w.dir(ctx, p)
	case syscall.S_IFREG:
		if n.Nlink > 1 {
			if first, ok := w.links[n.ID]; ok {
				h.Typeflag, h.Linkname = tar.TypeLink, first
				return w.write(h, nil, 0)
			}
			w.links[n.ID] = p
		}
		h.Typeflag, h.Size = tar.TypeReg, n.Size
		f, err := w.t.Open(ctx, p)
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		defer f.Close()
		return w.write(h, f, n.Size)
	case syscall.S_IFLNK:
		// Stored as the link it is, wherever it points: never followed.
		h.Typeflag, h.Linkname = tar.TypeSymlink, n.Linkname
	case syscall.S_IFCHR, syscall.S_IFBLK:
		h.Typeflag = tar.TypeChar
		if n.typ() == syscall.S_IFBLK {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor, h.Devminor = int64(major(n.Rdev)), int64(minor(n.Rdev))
	case syscall.S_IFIFO:
		h.Typeflag = tar.TypeFifo
	case syscall.S_IFSOCK:
		if w.o.Skipped != nil {
			w.o.Skipped(p, "a socket belongs to a running process; a tar layer cannot hold one")
		}
		return nil
	default:
		return fmt.Errorf("%s: unknown file type %#o", p, n.typ())
	}
	return w.write(h, nil, 0)
}

// write writes one header and, for a regular file, exactly size bytes of r.
func (w *layerWriter) write(h *tar.Header, r io.Reader, size int64) error {
	if err := w.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	w.entries++
	if r == nil {
		return nil
	}
	n, err := io.CopyN(w.tw, r, size)
	if err == io.EOF {
		return fmt.Errorf("%s: shrank from %d to %d bytes while being read", h.Name, size, n)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", h.Name, err)
	}
	// A file that grew is cut at the size its header announced.
	return nil
}

func (w *layerWriter) clamp(t time.Time) time.Time {
	if e := w.o.SourceDateEpoch; e != nil && t.After(*e) {
		return *e
	}
	return t
}

// xattrs turns a node's extended attributes into PAX records, without
// overlayfs's own when the tree is an upper directory.
func (w *layerWriter) xattrs(x map[string][]byte) map[string]string {
	if len(x) == 0 {
		return nil
	}
	out := make(map[string]string, len(x))
	for k, v := range x {
		if w.o.Overlay && isOverlayXattr(k) {
			continue
		}
		out["SCHILY.xattr."+k] = string(v)
	}
	return out
}

// Overlayfs keeps its bookkeeping in trusted.overlay.* xattrs, or
// user.overlay.* when mounted with userxattr.
func isOverlayXattr(k string) bool {
	return strings.HasPrefix(k, "trusted.overlay.") || strings.HasPrefix(k, "user.overlay.")
}

func overlayXattr(x map[string][]byte, name string) ([]byte, bool) {
	if v, ok := x["trusted.overlay."+name]; ok {
		return v, true
	}
	v, ok := x["user.overlay."+name]
	return v, ok
}

func isOpaque(x map[string][]byte) bool {
	v, ok := overlayXattr(x, "opaque")
	return ok && string(v) == "y"
}

// isOverlayWhiteout: a 0/0 character device, or (kernels 6.7 and later,
// for whiteouts that must survive in a lower layer) an empty file carrying
// the overlay.whiteout xattr.
func isOverlayWhiteout(n Node) bool {
	if n.typ() == syscall.S_IFCHR && n.Rdev == 0 {
		return true
	}
	_, ok := overlayXattr(n.Xattrs, "whiteout")
	return ok && n.typ() == syscall.S_IFREG && n.Size == 0
}

// checkOverlayXattrs refuses upper-dir entries whose content or identity
// is in the lower layers: a renamed directory (redirect) or a copied-up
// file whose data was never copied (metacopy).
func checkOverlayXattrs(p string, x map[string][]byte) error {
	for _, name := range []string{"redirect", "metacopy"} {
		if _, ok := overlayXattr(x, name); ok {
			return fmt.Errorf("%s: %w: overlay.%s (mount the overlay with redirect_dir=off,metacopy=off)", p, ErrOverlayFeature, name)
		}
	}
	return nil
}

// major and minor split a Linux device number (glibc's encoding).
func major(dev uint64) uint32 { return uint32((dev>>8)&0xfff) | uint32((dev>>32)&^0xfff) }
func minor(dev uint64) uint32 { return uint32(dev&0xff) | uint32((dev>>12)&^0xff) }
