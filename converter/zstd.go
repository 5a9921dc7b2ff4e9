package converter

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// Zstd layers are checkpointed at frame starts: a frame is the only place a
// zstd decoder can start. Encoders that write one frame per few MiB (zstd
// --block-size, zstd:chunked, estargz-style tools) get a checkpoint every few
// MiB; a single-frame layer has one checkpoint at 0 and the reader decodes it
// forward, caching spans (see reader.go).

// zstdMaxWindow bounds decoder memory; 128 MiB is also the largest window the
// reference zstd tool decodes without --long.
const zstdMaxWindow = 128 << 20

// zstdFramer passes through the bytes of one zstd frame at a time, parsing
// the frame and block headers to know where the frame ends, so the decoder
// sees io.EOF exactly at a frame boundary. Skippable frames are dropped.
type zstdFramer struct {
	r       *bufio.Reader
	pos     int64 // compressed bytes consumed
	pending []byte
	remain  int64 // bytes of the current block (or checksum) still to pass
	state   int
	last    bool
	sum     bool
}

const (
	zsFrameHeader = iota
	zsBlockHeader
	zsBlockData
	zsChecksum
	zsEnd
)

func (z *zstdFramer) readN(n int) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(z.r, b); err != nil {
		return nil, fmt.Errorf("%w: zstd frame header", ErrTruncated)
	}
	z.pos += int64(n)
	return b, nil
}

// nextFrame positions z at the next frame. It returns io.EOF at the end of
// the stream, and the compressed offset of the frame otherwise.
func (z *zstdFramer) nextFrame() (int64, error) {
	for {
		if _, err := z.r.Peek(1); err == io.EOF {
			return 0, io.EOF
		}
		start := z.pos
		m, err := z.readN(4)
		if err != nil {
			return 0, err
		}
		magic := binary.LittleEndian.Uint32(m)
		if magic&0xfffffff0 == 0x184d2a50 {
			sz, err := z.readN(4)
			if err != nil {
				return 0, err
			}
			n := int64(binary.LittleEndian.Uint32(sz))
			d, err := z.r.Discard(int(n))
			z.pos += int64(d)
			if err != nil {
				return 0, fmt.Errorf("%w: zstd skippable frame", ErrTruncated)
			}
			continue
		}
		if magic != 0xfd2fb528 {
			return 0, fmt.Errorf("%w: bad zstd frame magic %#x at %d", ErrCorrupt, magic, start)
		}
		d, err := z.readN(1)
		if err != nil {
			return 0, err
		}
		fhd := d[0]
		single := fhd&0x20 != 0
		n := 0
		if !single {
			n++ // window descriptor
		}
		n += [4]int{0, 1, 2, 4}[fhd&3]
		fcs := [4]int{0, 2, 4, 8}[fhd>>6]
		if fcs == 0 && single {
			fcs = 1
		}
		n += fcs
		rest, err := z.readN(n)
		if err != nil {
			return 0, err
		}
		z.pending = append(append(m, d...), rest...)
		z.sum = fhd&4 != 0
		z.state = zsBlockHeader
		return start, nil
	}
}

func (z *zstdFramer) Read(p []byte) (int, error) {
	for {
		if len(z.pending) > 0 {
			n := copy(p, z.pending)
			z.pending = z.pending[n:]
			return n, nil
		}
		switch z.state {
		case zsBlockHeader:
			h, err := z.readN(3)
			if err != nil {
				return 0, err
			}
			v := uint32(h[0]) | uint32(h[1])<<8 | uint32(h[2])<<16
			z.last = v&1 == 1
			size := int64(v >> 3)
			switch (v >> 1) & 3 {
			case 1: // RLE: one byte repeated size times
				size = 1
			case 3:
				return 0, fmt.Errorf("%w: reserved zstd block type", ErrCorrupt)
			}
			if size > 128<<10 {
				return 0, fmt.Errorf("%w: zstd block of %d bytes", ErrCorrupt, size)
			}
			z.pending, z.remain, z.state = h, size, zsBlockData
		case zsBlockData:
			if z.remain == 0 {
				if !z.last {
					z.state = zsBlockHeader
				} else if z.sum {
					z.state, z.remain = zsChecksum, 4
				} else {
					z.state = zsEnd
				}
				continue
			}
			return z.passThrough(p, "block")
		case zsChecksum:
			if z.remain == 0 {
				z.state = zsEnd
				continue
			}
			return z.passThrough(p, "checksum")
		default:
			return 0, io.EOF
		}
	}
}

// zstdIndexReader decodes a zstd layer frame by frame for the indexing pass,
// recording a checkpoint at each frame start at least spacing past the last.
type zstdIndexReader struct {
	fr      *zstdFramer
	dec     *zstd.Decoder
	idx     *Index
	spacing int64
	out     int64
	done    bool
}

func newZstdDecoder(r io.Reader) (*zstd.Decoder, error) {
	return zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(zstdMaxWindow), zstd.WithDecoderLowmem(true))
}

func newZstdIndexReader(r *bufio.Reader, idx *Index, spacing int64) (*zstdIndexReader, error) {
	z := &zstdIndexReader{fr: &zstdFramer{r: r}, idx: idx, spacing: spacing}
	dec, err := newZstdDecoder(nil)
	if err != nil {
		return nil, err
	}
	z.dec = dec
	if err := z.startFrame(); err != nil {
		dec.Close()
		if err == io.EOF {
			return nil, fmt.Errorf("%w: empty zstd stream", ErrTruncated)
		}
		return nil, err
	}
	return z, nil
}

func (z *zstdIndexReader) startFrame() error {
	in, err := z.fr.nextFrame()
	if err != nil {
		return err
	}
	cps := z.idx.Checkpoints
	if len(cps) == 0 || z.out-cps[len(cps)-1].Out >= z.spacing {
		z.idx.Checkpoints = append(cps, Checkpoint{In: in, Out: z.out})
	}
	return z.dec.Reset(z.fr)
}

func (z *zstdIndexReader) Read(p []byte) (int, error) {
	for !z.done {
		n, err := z.dec.Read(p)
		z.out += int64(n)
		if n > 0 {
			return n, nil
		}
		if err == io.EOF {
			if z.fr.state != zsEnd {
				return 0, fmt.Errorf("%w: zstd frame ends early", ErrTruncated)
			}
			if err := z.startFrame(); err == io.EOF {
				z.done = true
			} else if err != nil {
				return 0, err
			}
			continue
		}
		if err != nil {
			return 0, mapStreamErr(err)
		}
	}
	return 0, io.EOF
}

func (z *zstdIndexReader) Close() { z.dec.Close() }

// passThrough copies up to z.remain bytes of the current block or checksum
// from the source into p, as they are; what names the part for a truncation
// error.
func (z *zstdFramer) passThrough(p []byte, what string) (int, error) {
	q := p
	if int64(len(q)) > z.remain {
		q = q[:z.remain]
	}
	n, err := z.r.Read(q)
	z.pos += int64(n)
	z.remain -= int64(n)
	if n > 0 {
		return n, nil
	}
	if err == io.EOF {
		return 0, fmt.Errorf("%w: zstd %s", ErrTruncated, what)
	}
	return 0, err
}
