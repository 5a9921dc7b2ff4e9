package converter

import (
	"bufio"
	"bytes"
	"compress/flate"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"
)

// LayerReader reads a layer's uncompressed tar stream at any offset through
// the blob's io.ReaderAt: plain layers directly, compressed ones by
// decompressing spans from the nearest checkpoint into a SpanCache.
//
// Gzip spans run from one checkpoint to the next (a few MiB). A zstd frame
// cannot be entered in the middle, so long frames are cut into spans of the
// index spacing and decoded forward by one cursor per layer: reading a file
// late in a single-frame layer decodes the frame up to it once, caching the
// spans on the way, and later reads further on continue from the cursor.
type LayerReader struct {
	blob  io.ReaderAt
	idx   *Index
	cache *SpanCache
	spans []span

	mu     sync.Mutex // guards cursor
	cursor *zstdCursor
}

type span struct {
	start, end int64
	cp         int // checkpoint decoding starts from
}

type zstdCursor struct {
	cp   int
	pos  int64
	dec  *zstd.Decoder
	span int // index of the span starting at pos
}

// NewLayerReader serves idx's stream from blob. cache may be shared between
// readers; nil makes a private cache of DefaultCacheBytes.
func NewLayerReader(blob io.ReaderAt, idx *Index, cache *SpanCache) *LayerReader {
	if cache == nil {
		cache = NewSpanCache(0)
	}
	l := &LayerReader{blob: blob, idx: idx, cache: cache}
	if idx.Format == FormatPlain {
		return l
	}
	for i, c := range idx.Checkpoints {
		end := idx.Size
		if i+1 < len(idx.Checkpoints) {
			end = idx.Checkpoints[i+1].Out
		}
		step := end - c.Out
		if idx.Format == FormatZstd && step > 2*idx.Spacing {
			step = idx.Spacing
		}
		for s := c.Out; s < end; s += step {
			l.spans = append(l.spans, span{start: s, end: min(s+step, end), cp: i})
		}
	}
	return l
}

// Index returns the layer's index.
func (l *LayerReader) Index() *Index { return l.idx }

// Size is the length of the uncompressed stream.
func (l *LayerReader) Size() int64 { return l.idx.Size }

// File returns the bytes of a regular file entry (or a hard link to one).
func (l *LayerReader) File(e *Entry) *io.SectionReader {
	return io.NewSectionReader(l, e.Offset, e.Size)
}

// ReadAt reads the uncompressed stream.
func (l *LayerReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("layer %s: negative offset", l.idx.Digest)
	}
	if off >= l.idx.Size {
		return 0, io.EOF
	}
	want := len(p)
	if rest := l.idx.Size - off; int64(want) > rest {
		p = p[:rest]
	}
	var n int
	var err error
	if l.idx.Format == FormatPlain {
		n, err = l.blob.ReadAt(p, off)
		if err == io.EOF && n == len(p) {
			err = nil
		} else if err == io.EOF {
			err = fmt.Errorf("layer %s: %w: blob shorter than its index", l.idx.Digest, ErrTruncated)
		}
	} else {
		for n < len(p) {
			i := sort.Search(len(l.spans), func(i int) bool { return l.spans[i].end > off+int64(n) })
			if i == len(l.spans) {
				return n, fmt.Errorf("layer %s: %w: no span for offset %d", l.idx.Digest, ErrBadIndex, off+int64(n))
			}
			s := l.spans[i]
			data, e := l.cache.load(spanKey{l.idx.Digest, s.start}, func() ([]byte, error) { return l.decode(i) })
			if e != nil {
				return n, e
			}
			n += copy(p[n:], data[off+int64(n)-s.start:])
		}
	}
	if err == nil && n < want {
		err = io.EOF
	}
	return n, err
}

// decode produces span i.
func (l *LayerReader) decode(i int) ([]byte, error) {
	var data []byte
	var err error
	if l.idx.Format == FormatGzip {
		data, err = l.decodeGzip(l.spans[i])
	} else {
		data, err = l.decodeZstd(i)
	}
	if err != nil {
		return nil, fmt.Errorf("layer %s: span at %d: %w", l.idx.Digest, l.spans[i].start, mapStreamErr(err))
	}
	return data, nil
}

func (l *LayerReader) compressedFrom(in int64) *bufio.Reader {
	return bufio.NewReaderSize(io.NewSectionReader(l.blob, in, l.idx.CompressedSize-in), 128<<10)
}

func (l *LayerReader) decodeGzip(s span) ([]byte, error) {
	cps := l.idx.Checkpoints
	c := cps[s.cp]
	// One read of exactly the compressed bytes the span needs, up to the
	// next checkpoint's bit position, with the window when it lies in the
	// blob just before: the fs client sees one random read rather than a
	// sequential reader worth reading megabytes ahead for.
	end := l.idx.CompressedSize
	if s.cp+1 < len(cps) {
		next := cps[s.cp+1]
		end = next.In
		if next.Bits > 0 {
			end++
		}
	}
	lo := c.In
	for _, r := range c.WindowRanges {
		lo = min(lo, r.Off)
	}
	buf := make([]byte, end-lo)
	if n, err := l.blob.ReadAt(buf, lo); n < len(buf) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	window := c.Window
	if len(c.WindowRanges) > 0 {
		window = make([]byte, 0, windowSize)
		for _, r := range c.WindowRanges {
			window = append(window, buf[r.Off-lo:r.Off-lo+r.Len]...)
		}
	}
	br := bufio.NewReader(bytes.NewReader(buf[c.In-lo:]))
	var r io.Reader
	if c.Bits != 0 {
		f, err := newInflaterMode(br, uint(c.Bits), window, true, true)
		if err != nil {
			return nil, err
		}
		r = f
	} else {
		r = &gzipResume{br: br, fr: flate.NewReaderDict(br, window)}
	}
	out := make([]byte, s.end-s.start)
	if _, err := io.ReadFull(r, out); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return out, nil
}

// gzipResume continues compress/flate across gzip member boundaries. flate
// reads its input through br's ByteReader, so it stops exactly at the end of
// the member's deflate data and the trailer and next header follow in br.
type gzipResume struct {
	br *bufio.Reader
	fr io.Reader
}

func (g *gzipResume) Read(p []byte) (int, error) {
	for {
		n, err := g.fr.Read(p)
		if n > 0 || err != io.EOF {
			if err == io.EOF {
				err = nil
			}
			return n, err
		}
		if _, err := g.br.Discard(8); err != nil {
			return 0, io.ErrUnexpectedEOF
		}
		if err := skipGzipHeader(g.br); err != nil {
			return 0, err
		}
		g.fr = flate.NewReader(g.br)
	}
}

func (l *LayerReader) decodeZstd(i int) ([]byte, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.spans[i]
	cur := l.cursor
	if cur == nil || cur.cp != s.cp || cur.pos > s.start {
		if cur != nil {
			cur.dec.Close()
			l.cursor = nil
		}
		c := l.idx.Checkpoints[s.cp]
		dec, err := newZstdDecoder(l.compressedFrom(c.In))
		if err != nil {
			return nil, err
		}
		first := sort.Search(len(l.spans), func(j int) bool { return l.spans[j].start >= c.Out })
		cur = &zstdCursor{cp: s.cp, pos: c.Out, dec: dec, span: first}
		l.cursor = cur
	}
	for {
		t := l.spans[cur.span]
		out := make([]byte, t.end-t.start)
		if _, err := io.ReadFull(cur.dec, out); err != nil {
			cur.dec.Close()
			l.cursor = nil
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		cur.pos = t.end
		cur.span++
		if cur.span >= len(l.spans) || l.spans[cur.span].cp != cur.cp {
			// The region ends here; the next one has its own checkpoint.
			cur.dec.Close()
			l.cursor = nil
		}
		if t.start == s.start {
			return out, nil
		}
		l.cache.put(spanKey{l.idx.Digest, t.start}, out)
	}
}

// Close releases the zstd cursor, if any.
func (l *LayerReader) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cursor != nil {
		l.cursor.dec.Close()
		l.cursor = nil
	}
	return nil
}

var _ io.ReaderAt = (*LayerReader)(nil)
