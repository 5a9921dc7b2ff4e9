package converter

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"path"
	"sort"
	"strings"
	"syscall"

	"github.com/klauspost/compress/zstd"
)

// Format is the compression of a layer blob.
type Format uint8

// Layer formats, detected from magic bytes (media types lie often enough).
const (
	FormatPlain Format = iota + 1
	FormatGzip
	FormatZstd
)

func (f Format) String() string {
	switch f {
	case FormatPlain:
		return "tar"
	case FormatGzip:
		return "tar+gzip"
	case FormatZstd:
		return "tar+zstd"
	}
	return fmt.Sprintf("format(%d)", uint8(f))
}

// Entry is one tar entry of a layer. Mode holds the Linux type bits
// (syscall.S_IFREG, ...) and the permission bits including setuid, setgid and
// sticky. Times are Unix nanoseconds (0 when the tar has none).
type Entry struct {
	Path     string // cleaned, relative, no leading "./"; "." is the layer root
	Mode     uint32
	Uid, Gid uint32
	Size     int64 // regular files: byte count
	Offset   int64 // regular files: where the bytes start in the uncompressed stream
	Mtime    int64
	Atime    int64
	Ctime    int64
	Linkname string // symlink target, or the cleaned target path of a hard link
	// LinkIdx is, for a hard link, 1 + the index of the entry it links to (an
	// earlier regular file, symlink, device or fifo of the same layer); 0 for
	// everything else.
	LinkIdx  int
	Devmajor uint32
	Devminor uint32
	Xattrs   map[string][]byte
}

// IsHardLink reports whether e is a hard link to another entry.
func (e *Entry) IsHardLink() bool { return e.LinkIdx > 0 }

// Type returns the type bits of Mode.
func (e *Entry) Type() uint32 { return e.Mode & syscall.S_IFMT }

// Rdev is the Linux device number of a char or block device entry.
func (e *Entry) Rdev() uint64 { return mkdev(e.Devmajor, e.Devminor) }

// mkdev encodes a device number as Linux's new_encode_dev/glibc do.
func mkdev(major, minor uint32) uint64 {
	ma, mi := uint64(major), uint64(minor)
	return (mi & 0xff) | (ma&0xfff)<<8 | (mi&^0xff)<<12 | (ma&^0xfff)<<32
}

// Checkpoint is a place in a compressed layer where decompression can resume.
// Gzip: the compressed stream at byte In, bit Bits (0 = byte-aligned, resumed
// with compress/flate), produces uncompressed byte Out given Window (the 32 KiB
// before Out; empty at a gzip member start). Zstd: In is the start of a frame.
type Checkpoint struct {
	In     int64
	Bits   uint8
	Out    int64
	Window []byte
	// WindowRanges, when set instead of Window, say where in the blob the
	// window's bytes are: after stored deflate blocks (incompressible data)
	// the window is a verbatim copy of the compressed bytes just before In,
	// so the index need not carry it.
	WindowRanges []BlobRange
}

// Index describes one layer blob: its entries and how to read their bytes.
type Index struct {
	Digest         string
	Format         Format
	CompressedSize int64 // the blob's size
	Size           int64 // the uncompressed tar stream's size
	// Spacing is the checkpoint spacing the index was built with; readers also
	// use it as the size of cached spans inside long zstd frames.
	Spacing     int64
	Entries     []Entry
	Checkpoints []Checkpoint
}

// Options bound the indexing pass. Zero fields take the defaults below.
type Options struct {
	// CheckpointSpacing is the least uncompressed distance between two
	// checkpoints. Smaller means less decompression per cold read and a bigger
	// index (a 32 KiB window per gzip checkpoint).
	CheckpointSpacing int64
	// MaxRatio rejects a compressed layer whose uncompressed size exceeds
	// MaxRatio times its compressed bytes read so far, once past RatioFloor.
	MaxRatio   int64
	RatioFloor int64
	// MaxSize rejects layers whose uncompressed stream is bigger.
	MaxSize int64
	// MaxHeaderBytes bounds the PAX records of one entry; MaxPathLen bounds
	// names and link targets; MaxXattrBytes bounds one xattr value.
	MaxHeaderBytes int64
	MaxPathLen     int
	MaxXattrBytes  int
	// MaxEntries bounds the entries of one layer: a tar of millions of
	// empty files compresses too poorly for the ratio limit to catch, yet
	// would cost as many inodes.
	MaxEntries int
}

// Defaults. Deflate cannot exceed about 1032:1 and real layers measure 2-10:1,
// so a 200:1 ratio only stops bombs (zstd can reach far higher ratios). The
// header limits match what Linux can store anyway: PATH_MAX, XATTR_SIZE_MAX.
const (
	DefaultCheckpointSpacing = 4 << 20
	DefaultMaxRatio          = 200
	DefaultRatioFloor        = 64 << 20
	DefaultMaxSize           = 64 << 30
	DefaultMaxHeaderBytes    = 256 << 10
	DefaultMaxPathLen        = 4096
	DefaultMaxXattrBytes     = 64 << 10
	DefaultMaxEntries        = 1 << 21
)

func (o Options) withDefaults() Options {
	if o.CheckpointSpacing <= 0 {
		o.CheckpointSpacing = DefaultCheckpointSpacing
	}
	if o.MaxRatio <= 0 {
		o.MaxRatio = DefaultMaxRatio
	}
	if o.RatioFloor <= 0 {
		o.RatioFloor = DefaultRatioFloor
	}
	if o.MaxSize <= 0 {
		o.MaxSize = DefaultMaxSize
	}
	if o.MaxHeaderBytes <= 0 {
		o.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if o.MaxPathLen <= 0 {
		o.MaxPathLen = DefaultMaxPathLen
	}
	if o.MaxXattrBytes <= 0 {
		o.MaxXattrBytes = DefaultMaxXattrBytes
	}
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMaxEntries
	}
	return o
}

var (
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
	gzipMagic = []byte{0x1f, 0x8b}
)

// DetectFormat tells a layer's compression from its first bytes.
func DetectFormat(head []byte) (Format, error) {
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		return FormatGzip, nil
	case bytes.HasPrefix(head, zstdMagic), len(head) >= 4 && head[0]&0xf0 == 0x50 && head[1] == 0x2a && head[2] == 0x4d && head[3] == 0x18:
		return FormatZstd, nil
	case bytes.HasPrefix(head, []byte("BZh")), bytes.HasPrefix(head, []byte{0xfd, '7', 'z', 'X', 'Z', 0}):
		return 0, fmt.Errorf("%w: bzip2 or xz layer", ErrMediaType)
	}
	return FormatPlain, nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// bombGuard counts uncompressed bytes and stops the stream when they exceed
// the size limit or the ratio to compressed bytes consumed.
type bombGuard struct {
	r    io.Reader
	in   *countingReader // compressed bytes; nil for plain layers
	n    int64
	opts Options
}

func (g *bombGuard) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	g.n += int64(n)
	if g.n > g.opts.MaxSize {
		return n, fmt.Errorf("%w: uncompressed stream exceeds %d bytes", ErrBomb, g.opts.MaxSize)
	}
	if g.in != nil && g.n > g.opts.RatioFloor && g.n > g.opts.MaxRatio*max(g.in.n, 1) {
		return n, fmt.Errorf("%w: %d bytes from %d compressed exceeds ratio %d", ErrBomb, g.n, g.in.n, g.opts.MaxRatio)
	}
	return n, err
}

// BuildIndex reads a layer blob once, start to end, and returns its index.
// digest is recorded in the index; it is not verified here (the registry did
// that when the blob was pushed).
func BuildIndex(ctx context.Context, blob io.ReaderAt, size int64, digest string, opts Options) (*Index, error) {
	opts = opts.withDefaults()
	head := make([]byte, 8)
	n, err := blob.ReadAt(head, 0)
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading layer %s: %w", digest, err)
	}
	format, err := DetectFormat(head[:n])
	if err != nil {
		return nil, err
	}
	idx := &Index{Digest: digest, Format: format, CompressedSize: size, Spacing: opts.CheckpointSpacing}
	in := &countingReader{r: io.NewSectionReader(blob, 0, size)}
	br := bufio.NewReaderSize(in, 256<<10)
	guard := &bombGuard{in: in, opts: opts}
	switch format {
	case FormatPlain:
		guard.in = nil
		guard.r = br
	case FormatGzip:
		f, err := newInflater(br, 0, nil, true)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", digest, err)
		}
		idx.Checkpoints = append(idx.Checkpoints, Checkpoint{In: f.br.bitPos() / 8})
		f.onBoundary = gzipCheckpointer(idx, f, opts.CheckpointSpacing)
		guard.r = f
	case FormatZstd:
		z, err := newZstdIndexReader(br, idx, opts.CheckpointSpacing)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", digest, err)
		}
		defer z.Close()
		guard.r = z
	}
	if err := readTar(ctx, guard, idx, opts); err != nil {
		return nil, fmt.Errorf("indexing layer %s: %w", digest, err)
	}
	// Read to the end: the stream's size bounds the last span, and compressed
	// trailers (CRCs) are checked there.
	if _, err := io.Copy(io.Discard, guard); err != nil {
		return nil, fmt.Errorf("indexing layer %s: %w", digest, mapStreamErr(err))
	}
	idx.Size = guard.n
	return idx, nil
}

// gzipCheckpointer picks checkpoints among deflate block boundaries: the first
// byte-aligned boundary at least spacing past the previous checkpoint, or, if
// none came by 1.5x spacing, an unaligned one (resumed by our own inflater).
func gzipCheckpointer(idx *Index, f *inflater, spacing int64) func(boundary) {
	return func(b boundary) {
		last := idx.Checkpoints[len(idx.Checkpoints)-1].Out
		gap := b.out - last
		aligned := b.bitPos%8 == 0
		switch {
		case gap < spacing:
			return
		case b.memberStart:
			idx.Checkpoints = append(idx.Checkpoints, Checkpoint{In: b.bitPos / 8, Out: b.out})
		case aligned || gap >= spacing+spacing/2:
			c := Checkpoint{In: b.bitPos / 8, Bits: uint8(b.bitPos % 8), Out: b.out}
			if c.WindowRanges = f.storedWindow(); c.WindowRanges == nil {
				c.Window = bytes.Clone(f.window())
			}
			idx.Checkpoints = append(idx.Checkpoints, c)
		}
	}
}

func mapStreamErr(err error) error {
	switch {
	case errors.Is(err, ErrTruncated), errors.Is(err, ErrCorrupt), errors.Is(err, ErrBomb), errors.Is(err, ErrHeaderTooLarge):
		return err
	case errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: %v", ErrTruncated, err)
	case errors.Is(err, tar.ErrHeader), errors.Is(err, zstd.ErrMagicMismatch), errors.Is(err, zstd.ErrCRCMismatch),
		errors.Is(err, zstd.ErrReservedBlockType), errors.Is(err, zstd.ErrBlockTooSmall):
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	case errors.Is(err, tar.ErrFieldTooLong):
		return fmt.Errorf("%w: %v", ErrHeaderTooLarge, err)
	}
	return err
}

// layerState tracks, per path, the last entry of this layer, to catch writes
// through symlinks and to resolve hard links.
type layerState struct {
	byPath map[string]int // path -> index into Entries
}

func readTar(ctx context.Context, r io.Reader, idx *Index, opts Options) error {
	pos := &countingReader{r: r}
	tr := tar.NewReader(pos)
	st := layerState{byPath: map[string]int{}}
	var end int64 // end of the last entry's data and padding
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			if pos.n < end+512 {
				return fmt.Errorf("%w: no end-of-archive marker", ErrTruncated)
			}
			return nil
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) {
			return mapStreamErr(err)
		}
		// Next stops exactly at the entry's data: its offset in the stream.
		off := pos.n
		e, err := st.entry(hdr, off, idx, opts)
		if err != nil {
			return err
		}
		if e == nil {
			continue
		}
		end = off
		if e.Type() == syscall.S_IFREG && !e.IsHardLink() {
			end = off + (e.Size+511)&^511
		}
		if prev, ok := st.byPath[e.Path]; ok && idx.Entries[prev].Type() == syscall.S_IFDIR && e.Type() == syscall.S_IFDIR {
			// A directory listed twice: the later header wins but it stays one node.
			idx.Entries[prev] = *e
			continue
		}
		if len(idx.Entries) >= opts.MaxEntries {
			return fmt.Errorf("%w: more than %d entries", ErrBomb, opts.MaxEntries)
		}
		st.byPath[e.Path] = len(idx.Entries)
		idx.Entries = append(idx.Entries, *e)
	}
}

// CleanPath turns a tar entry name into a clean relative path, "." for the
// root. Absolute names and ".." components are rejected, even where ".."
// would stay inside the tree lexically: lexical cleaning and the kernel's
// resolution disagree once symlinks are involved.
func CleanPath(name string) (string, error) {
	if strings.HasPrefix(name, "/") {
		return "", ErrAbsolutePath
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", ErrPathEscape
		}
		if len(c) > 255 { // NAME_MAX: no file system could hold it
			return "", fmt.Errorf("%w: name component of %d bytes", ErrHeaderTooLarge, len(c))
		}
	}
	if strings.IndexByte(name, 0) >= 0 {
		return "", fmt.Errorf("%w: NUL in name", ErrCorrupt)
	}
	return path.Clean(name), nil
}

func (st *layerState) entry(hdr *tar.Header, off int64, idx *Index, opts Options) (*Entry, error) {
	name := hdr.Name
	if len(name) > opts.MaxPathLen {
		return nil, entryErr(name[:min(len(name), 64)]+"...", fmt.Errorf("%w: name of %d bytes", ErrHeaderTooLarge, len(name)))
	}
	if len(hdr.Linkname) > opts.MaxPathLen {
		return nil, entryErr(name, fmt.Errorf("%w: link target of %d bytes", ErrHeaderTooLarge, len(hdr.Linkname)))
	}
	var paxBytes int64
	for k, v := range hdr.PAXRecords {
		paxBytes += int64(len(k) + len(v))
		if strings.HasPrefix(k, "GNU.sparse.") {
			return nil, entryErr(name, fmt.Errorf("%w: GNU sparse file", ErrUnsupported))
		}
	}
	if paxBytes > opts.MaxHeaderBytes {
		return nil, entryErr(name, fmt.Errorf("%w: %d bytes of PAX records (limit %d)", ErrHeaderTooLarge, paxBytes, opts.MaxHeaderBytes))
	}
	var typ uint32
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA:
		typ = syscall.S_IFREG
	case tar.TypeLink:
		typ = syscall.S_IFREG // replaced by the target's type below
	case tar.TypeDir:
		typ = syscall.S_IFDIR
	case tar.TypeSymlink:
		typ = syscall.S_IFLNK
	case tar.TypeChar:
		typ = syscall.S_IFCHR
	case tar.TypeBlock:
		typ = syscall.S_IFBLK
	case tar.TypeFifo:
		typ = syscall.S_IFIFO
	case tar.TypeXGlobalHeader:
		return nil, nil
	case tar.TypeGNUSparse:
		return nil, entryErr(name, fmt.Errorf("%w: GNU sparse file", ErrUnsupported))
	default:
		return nil, entryErr(name, fmt.Errorf("%w: type %q", ErrUnsupported, hdr.Typeflag))
	}
	p, err := CleanPath(name)
	if err != nil {
		return nil, entryErr(name, err)
	}
	if p == "." && typ != syscall.S_IFDIR {
		return nil, entryErr(name, fmt.Errorf("%w: layer root is not a directory", ErrNotDir))
	}
	if err := st.checkParents(p, idx); err != nil {
		return nil, entryErr(p, err)
	}
	e := &Entry{
		Path:     p,
		Mode:     typ | uint32(hdr.Mode)&07777,
		Uid:      uint32(hdr.Uid),
		Gid:      uint32(hdr.Gid),
		Mtime:    unixNano(hdr.ModTime.IsZero(), hdr.ModTime.UnixNano()),
		Atime:    unixNano(hdr.AccessTime.IsZero(), hdr.AccessTime.UnixNano()),
		Ctime:    unixNano(hdr.ChangeTime.IsZero(), hdr.ChangeTime.UnixNano()),
		Linkname: hdr.Linkname,
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA:
		e.Size, e.Offset = hdr.Size, off
	case tar.TypeChar, tar.TypeBlock:
		e.Devmajor, e.Devminor = uint32(hdr.Devmajor), uint32(hdr.Devminor)
	case tar.TypeLink:
		if err := st.resolveHardLink(e, idx); err != nil {
			return nil, entryErr(p, err)
		}
	}
	if e.Xattrs, err = xattrs(hdr, opts); err != nil {
		return nil, entryErr(p, err)
	}
	if e.IsHardLink() {
		// One inode: the link has its target's xattrs, whatever its header says.
		e.Xattrs = idx.Entries[e.LinkIdx-1].Xattrs
	}
	return e, nil
}

func unixNano(zero bool, ns int64) int64 {
	if zero {
		return 0
	}
	return ns
}

// checkParents rejects an entry whose parent directories, as this layer
// defined them so far, include a symlink or a non-directory.
func (st *layerState) checkParents(p string, idx *Index) error {
	for i := 0; i < len(p); i++ {
		if p[i] != '/' {
			continue
		}
		j, ok := st.byPath[p[:i]]
		if !ok {
			continue
		}
		switch idx.Entries[j].Type() {
		case syscall.S_IFDIR:
		case syscall.S_IFLNK:
			return fmt.Errorf("%w: %q is a symlink", ErrSymlinkTraversal, p[:i])
		default:
			return fmt.Errorf("%w: %q", ErrNotDir, p[:i])
		}
	}
	return nil
}

// resolveHardLink points e at an earlier non-directory entry of this layer.
// Targets in lower layers are refused: layer tars written from overlay diffs
// always carry both names (the kernel copies the file up to link it).
func (st *layerState) resolveHardLink(e *Entry, idx *Index) error {
	t, err := CleanPath(e.Linkname)
	if err != nil || t == "." {
		return fmt.Errorf("%w: target %q outside the layer", ErrBadHardLink, e.Linkname)
	}
	j, ok := st.byPath[t]
	if !ok {
		return fmt.Errorf("%w: target %q not in this layer", ErrBadHardLink, t)
	}
	target := &idx.Entries[j]
	if target.IsHardLink() {
		j = target.LinkIdx - 1
		target = &idx.Entries[j]
	}
	if target.Type() == syscall.S_IFDIR {
		return fmt.Errorf("%w: target %q is a directory", ErrBadHardLink, t)
	}
	e.Linkname = t
	e.LinkIdx = j + 1
	e.Mode = target.Mode
	e.Uid, e.Gid = target.Uid, target.Gid
	e.Size, e.Offset = target.Size, target.Offset
	e.Devmajor, e.Devminor = target.Devmajor, target.Devminor
	return nil
}

// xattrs collects extended attributes from PAX records: SCHILY.xattr.NAME
// (GNU tar, Docker, Go's archive/tar) and LIBARCHIVE.xattr.NAME (bsdtar:
// URL-escaped name, base64 value).
func xattrs(hdr *tar.Header, opts Options) (map[string][]byte, error) {
	var m map[string][]byte
	keys := make([]string, 0, len(hdr.PAXRecords))
	for k := range hdr.PAXRecords {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := hdr.PAXRecords[k]
		var name string
		var val []byte
		switch {
		case strings.HasPrefix(k, "SCHILY.xattr."):
			name, val = strings.TrimPrefix(k, "SCHILY.xattr."), []byte(v)
		case strings.HasPrefix(k, "LIBARCHIVE.xattr."):
			n, err := url.PathUnescape(strings.TrimPrefix(k, "LIBARCHIVE.xattr."))
			if err != nil {
				return nil, fmt.Errorf("%w: xattr name %q: %v", ErrCorrupt, k, err)
			}
			b, err := base64.StdEncoding.DecodeString(v)
			if err != nil {
				if b, err = base64.RawStdEncoding.DecodeString(v); err != nil {
					return nil, fmt.Errorf("%w: xattr %q value: %v", ErrCorrupt, n, err)
				}
			}
			name, val = n, b
		default:
			continue
		}
		if name == "" || len(name) > 255 {
			return nil, fmt.Errorf("%w: xattr name %q", ErrHeaderTooLarge, name)
		}
		if len(val) > opts.MaxXattrBytes {
			return nil, fmt.Errorf("%w: xattr %q of %d bytes", ErrHeaderTooLarge, name, len(val))
		}
		if m == nil {
			m = map[string][]byte{}
		}
		if _, dup := m[name]; !dup {
			m[name] = val
		}
	}
	return m, nil
}
