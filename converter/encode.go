package converter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/klauspost/compress/zstd"
)

// The stored index is a small binary format, zstd-compressed as a whole:
//
//	"DYLX" version(1) | zstd( header, entries, checkpoints )
//
// Integers are varints (signed ones zigzag); strings and byte slices are
// length-prefixed; a path is stored as the length of the prefix it shares
// with the previous path plus the rest, since tars list siblings together.
// A binary format instead of JSON keeps indexes of layers with 100k small
// files at a few bytes per entry after compression, and decoding cheap.

var indexMagic = []byte("DYLX")

// indexVersion 2 added Checkpoint.WindowRanges; version 1 indexes still decode.
const indexVersion = 2

type encoder struct{ b bytes.Buffer }

func (e *encoder) uvarint(v uint64) { e.b.Write(binary.AppendUvarint(nil, v)) }
func (e *encoder) varint(v int64)   { e.b.Write(binary.AppendVarint(nil, v)) }
func (e *encoder) bytes(p []byte)   { e.uvarint(uint64(len(p))); e.b.Write(p) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.b.WriteString(s) }

// MarshalBinary encodes the index for storage.
func (x *Index) MarshalBinary() ([]byte, error) {
	var e encoder
	e.str(x.Digest)
	e.uvarint(uint64(x.Format))
	e.varint(x.CompressedSize)
	e.varint(x.Size)
	e.varint(x.Spacing)
	e.uvarint(uint64(len(x.Entries)))
	prev := ""
	var prevOff int64
	for i := range x.Entries {
		en := &x.Entries[i]
		common := 0
		for common < len(prev) && common < len(en.Path) && prev[common] == en.Path[common] {
			common++
		}
		e.uvarint(uint64(common))
		e.str(en.Path[common:])
		prev = en.Path
		e.uvarint(uint64(en.Mode))
		e.uvarint(uint64(en.Uid))
		e.uvarint(uint64(en.Gid))
		e.varint(en.Size)
		e.varint(en.Offset - prevOff) // offsets grow through the stream
		prevOff = en.Offset
		e.varint(en.Mtime)
		e.varint(en.Atime)
		e.varint(en.Ctime)
		e.str(en.Linkname)
		e.uvarint(uint64(en.LinkIdx))
		e.uvarint(uint64(en.Devmajor))
		e.uvarint(uint64(en.Devminor))
		names := make([]string, 0, len(en.Xattrs))
		for k := range en.Xattrs {
			names = append(names, k)
		}
		sort.Strings(names)
		e.uvarint(uint64(len(names)))
		for _, k := range names {
			e.str(k)
			e.bytes(en.Xattrs[k])
		}
	}
	e.uvarint(uint64(len(x.Checkpoints)))
	for _, c := range x.Checkpoints {
		e.varint(c.In)
		e.uvarint(uint64(c.Bits))
		e.varint(c.Out)
		e.bytes(c.Window)
		e.uvarint(uint64(len(c.WindowRanges)))
		for _, r := range c.WindowRanges {
			e.varint(c.In - r.Off) // ranges sit just before the checkpoint
			e.varint(r.Len)
		}
	}
	zw, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedBetterCompression), zstd.WithEncoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer zw.Close()
	out := append([]byte(nil), indexMagic...)
	out = append(out, indexVersion)
	return zw.EncodeAll(e.b.Bytes(), out), nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated or malformed", ErrBadIndex)
	}
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		d.b = nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		d.b = nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		d.b = nil
		return nil
	}
	p := d.b[:n:n]
	d.b = d.b[n:]
	return p
}

func (d *decoder) str() string { return string(d.bytes()) }

// count reads a length that must fit in the remaining bytes (each item takes
// at least one byte), so a corrupt index cannot make us allocate wildly.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		d.b = nil
		return 0
	}
	return int(n)
}

// UnmarshalIndex decodes an index written by MarshalBinary.
func UnmarshalIndex(data []byte) (*Index, error) {
	if !bytes.HasPrefix(data, indexMagic) || len(data) < len(indexMagic)+1 {
		return nil, fmt.Errorf("%w: bad magic", ErrBadIndex)
	}
	version := data[len(indexMagic)]
	if version < 1 || version > indexVersion {
		return nil, fmt.Errorf("%w: version %d", ErrBadIndex, version)
	}
	zr, err := zstd.NewReader(bytes.NewReader(data[len(indexMagic)+1:]), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadIndex, err)
	}
	d := &decoder{b: raw}
	x := &Index{}
	x.Digest = d.str()
	x.Format = Format(d.uvarint())
	x.CompressedSize = d.varint()
	x.Size = d.varint()
	x.Spacing = d.varint()
	n := d.count()
	x.Entries = make([]Entry, n)
	prev := ""
	var prevOff int64
	for i := 0; i < n && d.err == nil; i++ {
		en := &x.Entries[i]
		common := d.uvarint()
		if common > uint64(len(prev)) {
			d.fail()
			break
		}
		en.Path = prev[:common] + d.str()
		prev = en.Path
		en.Mode = uint32(d.uvarint())
		en.Uid = uint32(d.uvarint())
		en.Gid = uint32(d.uvarint())
		en.Size = d.varint()
		en.Offset = prevOff + d.varint()
		prevOff = en.Offset
		en.Mtime = d.varint()
		en.Atime = d.varint()
		en.Ctime = d.varint()
		en.Linkname = d.str()
		en.LinkIdx = int(d.uvarint())
		if en.LinkIdx > i {
			d.fail()
		}
		en.Devmajor = uint32(d.uvarint())
		en.Devminor = uint32(d.uvarint())
		if nx := d.count(); nx > 0 {
			en.Xattrs = make(map[string][]byte, nx)
			for j := 0; j < nx; j++ {
				k := d.str()
				en.Xattrs[k] = d.bytes()
			}
		}
	}
	nc := d.count()
	x.Checkpoints = make([]Checkpoint, nc)
	for i := 0; i < nc && d.err == nil; i++ {
		c := &x.Checkpoints[i]
		c.In = d.varint()
		c.Bits = uint8(d.uvarint())
		c.Out = d.varint()
		c.Window = d.bytes()
		if version >= 2 {
			nr := d.count()
			for j := 0; j < nr && d.err == nil; j++ {
				off := c.In - d.varint()
				c.WindowRanges = append(c.WindowRanges, BlobRange{Off: off, Len: d.varint()})
			}
		}
	}
	if d.err != nil {
		return nil, d.err
	}
	if err := x.validate(); err != nil {
		return nil, err
	}
	return x, nil
}

// validate checks what readers rely on, so a damaged index fails cleanly
// instead of reading out of range.
func (x *Index) validate() error {
	if x.Format < FormatPlain || x.Format > FormatZstd {
		return fmt.Errorf("%w: format %d", ErrBadIndex, x.Format)
	}
	if x.Spacing <= 0 || x.Size < 0 {
		return fmt.Errorf("%w: bad sizes", ErrBadIndex)
	}
	for i := range x.Entries {
		e := &x.Entries[i]
		if e.Size < 0 || e.Offset < 0 || e.Offset+e.Size > x.Size {
			return fmt.Errorf("%w: entry %q outside the stream", ErrBadIndex, e.Path)
		}
	}
	var last, lastIn int64 = -1, 0
	for _, c := range x.Checkpoints {
		if c.Out <= last || c.In < lastIn || c.Bits > 7 || c.In > x.CompressedSize || len(c.Window) > windowSize {
			return fmt.Errorf("%w: bad checkpoint", ErrBadIndex)
		}
		var n int64
		for _, r := range c.WindowRanges {
			n += r.Len
			if r.Off < 0 || r.Len <= 0 || r.Off+r.Len > c.In {
				return fmt.Errorf("%w: bad checkpoint window range", ErrBadIndex)
			}
		}
		if n > windowSize {
			return fmt.Errorf("%w: checkpoint window of %d bytes", ErrBadIndex, n)
		}
		last, lastIn = c.Out, c.In
	}
	if x.Format != FormatPlain && (len(x.Checkpoints) == 0 || x.Checkpoints[0].Out != 0) {
		return errors.Join(ErrBadIndex, fmt.Errorf("no checkpoint at the start"))
	}
	return nil
}
