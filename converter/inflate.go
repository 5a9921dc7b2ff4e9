package converter

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
)

// This file holds Dockyard's own inflater (RFC 1951) and gzip member framing
// (RFC 1952). compress/flate cannot report where deflate blocks end, and the
// checkpoint index needs exactly that: a block boundary, its bit offset in the
// compressed stream, its offset in the output, and the 32 KiB window before it.
// The inflater decodes fully (the indexing pass needs the tar bytes anyway) and
// calls a hook at every block boundary. It can also start at any bit offset
// with a preset window, which is how reads resume at checkpoints that do not
// fall on a byte boundary; byte-aligned checkpoints resume with the standard
// library's faster flate.NewReaderDict instead.

const (
	windowSize = 32 << 10
	maxMatch   = 258
	// outBufSize is how much output is decoded ahead of the reader, beyond the
	// window kept for back references.
	outBufSize = 256 << 10
	maxCodeLen = 15
)

var (
	lengthBase  = [29]uint16{3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258}
	lengthExtra = [29]uint8{0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0}
	distBase    = [30]uint16{1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577}
	distExtra   = [30]uint8{0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13}
	clenOrder   = [19]uint8{16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15}
)

// errDeflate marks malformed deflate data; callers see it wrapped in ErrCorrupt.
func errDeflate(format string, args ...any) error {
	return fmt.Errorf("%w: deflate: %s", ErrCorrupt, fmt.Sprintf(format, args...))
}

// bitReader reads deflate's LSB-first bit stream and knows its exact bit
// position, which is what a checkpoint records.
type bitReader struct {
	r     io.ByteReader
	br    *bufio.Reader // r, when it is one: refills take whole words
	in    int64         // bytes taken from r
	bits  uint64
	nbits uint
}

func newBitReader(r io.ByteReader) bitReader {
	br, _ := r.(*bufio.Reader)
	return bitReader{r: r, br: br}
}

// fill tries to hold at least n bits. At the end of input it stops quietly:
// the caller checks whether the bits it actually used were there.
func (b *bitReader) fill(n uint) error {
	for b.nbits < n {
		// Fast path: take as many whole bytes as fit in one 64-bit load.
		// Only the bytes added to bits are consumed, so the bit position
		// stays exact.
		if b.br != nil && b.nbits <= 56 {
			if p, _ := b.br.Peek(8); len(p) == 8 {
				k := (64 - b.nbits) / 8
				v := binary.LittleEndian.Uint64(p)
				if k < 8 {
					v &= 1<<(8*k) - 1
				}
				b.bits |= v << b.nbits
				b.nbits += 8 * k
				b.in += int64(k)
				if _, err := b.br.Discard(int(k)); err != nil {
					return err
				}
				continue
			}
		}
		c, err := b.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
		b.in++
		b.bits |= uint64(c) << b.nbits
		b.nbits += 8
	}
	return nil
}

func (b *bitReader) get(n uint) (uint32, error) {
	if n == 0 {
		return 0, nil
	}
	if err := b.fill(n); err != nil {
		return 0, err
	}
	if b.nbits < n {
		return 0, io.ErrUnexpectedEOF
	}
	v := uint32(b.bits & (1<<n - 1))
	b.bits >>= n
	b.nbits -= n
	return v, nil
}

// bitPos is the offset, in bits from the start of r, of the next unread bit.
func (b *bitReader) bitPos() int64 { return b.in*8 - int64(b.nbits) }

func (b *bitReader) alignByte() {
	drop := b.nbits % 8
	b.bits >>= drop
	b.nbits -= drop
}

// readByte returns the next whole byte; the stream must be byte-aligned.
func (b *bitReader) readByte() (byte, error) {
	if b.nbits >= 8 {
		c := byte(b.bits)
		b.bits >>= 8
		b.nbits -= 8
		return c, nil
	}
	c, err := b.r.ReadByte()
	if err != nil {
		return 0, err
	}
	b.in++
	return c, nil
}

func (b *bitReader) readFull(p []byte) error {
	// Stored blocks (incompressible data) copy up to 64 KiB at a time: skip
	// the per-byte path once the bit buffer is drained.
	if r, ok := b.r.(io.Reader); ok && b.nbits == 0 {
		n, err := io.ReadFull(r, p)
		b.in += int64(n)
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	for i := range p {
		c, err := b.readByte()
		if err != nil {
			if err == io.EOF {
				return io.ErrUnexpectedEOF
			}
			return err
		}
		p[i] = c
	}
	return nil
}

// huffman is a canonical Huffman decoding table indexed by the next maxLen
// bits (bit-reversed codes, since deflate packs codes MSB-first into an
// LSB-first stream). Each entry is symbol<<4 | code length; length 0 marks a
// bit pattern no code uses.
type huffman struct {
	table  []uint32
	maxLen uint
}

func (h *huffman) init(lengths []uint8) error {
	var count [maxCodeLen + 1]int
	maxLen := uint(0)
	for _, l := range lengths {
		count[l]++
		if uint(l) > maxLen {
			maxLen = uint(l)
		}
	}
	count[0] = 0
	left := 1
	for l := 1; l <= maxCodeLen; l++ {
		left = left<<1 - count[l]
		if left < 0 {
			return errDeflate("over-subscribed Huffman code")
		}
	}
	var next [maxCodeLen + 2]uint32
	code := uint32(0)
	for l := 1; l <= maxCodeLen; l++ {
		code = (code + uint32(count[l-1])) << 1
		next[l] = code
	}
	// count[0] was zeroed so the loop above starts codes of length 1 at 0.
	size := 1 << maxLen
	if cap(h.table) < size {
		h.table = make([]uint32, size)
	}
	h.table = h.table[:size]
	clear(h.table)
	h.maxLen = maxLen
	for sym, l := range lengths {
		if l == 0 {
			continue
		}
		c := next[l]
		next[l]++
		rev := uint32(0)
		for i := uint8(0); i < l; i++ {
			rev = rev<<1 | (c>>i)&1
		}
		for i := rev; i < uint32(size); i += 1 << l {
			h.table[i] = uint32(sym)<<4 | uint32(l)
		}
	}
	return nil
}

func (b *bitReader) decode(h *huffman) (int, error) {
	if h.maxLen == 0 {
		return 0, errDeflate("symbol from an empty Huffman code")
	}
	if b.nbits < h.maxLen {
		if err := b.fill(h.maxLen); err != nil {
			return 0, err
		}
	}
	e := h.table[b.bits&(1<<h.maxLen-1)]
	l := uint(e & 15)
	if l == 0 {
		if b.nbits < h.maxLen {
			return 0, io.ErrUnexpectedEOF
		}
		return 0, errDeflate("invalid Huffman code")
	}
	if l > b.nbits {
		return 0, io.ErrUnexpectedEOF
	}
	b.bits >>= l
	b.nbits -= l
	return int(e >> 4), nil
}

var fixedLit, fixedDist huffman

func init() {
	var l [288]uint8
	for i := range l {
		switch {
		case i < 144:
			l[i] = 8
		case i < 256:
			l[i] = 9
		case i < 280:
			l[i] = 7
		default:
			l[i] = 8
		}
	}
	if err := fixedLit.init(l[:]); err != nil {
		panic(err)
	}
	var d [30]uint8
	for i := range d {
		d[i] = 5
	}
	if err := fixedDist.init(d[:]); err != nil {
		panic(err)
	}
}

// boundary describes a place where decoding may later resume.
type boundary struct {
	bitPos      int64 // in the compressed input
	out         int64 // in the output stream
	memberStart bool  // start of a gzip member's deflate data: no window needed
}

// inflater decodes a raw deflate stream, or a sequence of gzip members when
// gzip is set, as an io.Reader.
type inflater struct {
	br   bitReader
	gzip bool
	// onBoundary, when set, is called at each deflate block boundary that is
	// not the end of the stream, and at each gzip member start after the first.
	// window() is valid during the call.
	onBoundary func(boundary)
	skipCRC    bool // the current member was entered mid-way
	// runs are the stored blocks since the last Huffman block: their output
	// is a verbatim copy of compressed bytes, so a window made only of them
	// can be read back from the blob instead of being kept in the index.
	runs []storedRun

	out     []byte // window + decoded bytes
	rpos    int    // next byte handed to Read
	wpos    int    // end of decoded bytes
	total   int64  // bytes produced since the start (not counting a preset dict)
	inBlock bool
	final   bool
	stored  int // bytes left in a stored block, -1 when in a Huffman block
	lit     *huffman
	dist    *huffman
	dynLit  huffman
	dynDist huffman
	clen    huffman
	lens    [320]uint8
	crc     hash.Hash32
	crcFrom int // out position the CRC has covered up to
	done    bool
	err     error
}

// newInflater starts decoding r at bit skipBits of its first byte with dict as
// the preset window. For gzip streams r must start at a member header.
func newInflater(r io.ByteReader, skipBits uint, dict []byte, gzip bool) (*inflater, error) {
	return newInflaterMode(r, skipBits, dict, gzip, false)
}

// newInflaterMode with resume set starts inside a gzip member (at a
// checkpoint): no header is expected and the CRC of that partial member cannot
// be checked; members after it are checked as usual.
func newInflaterMode(r io.ByteReader, skipBits uint, dict []byte, gzip, resume bool) (*inflater, error) {
	f := &inflater{br: newBitReader(r), gzip: gzip, stored: -1, skipCRC: resume}
	f.out = make([]byte, windowSize+outBufSize+maxMatch)
	if len(dict) > windowSize {
		dict = dict[len(dict)-windowSize:]
	}
	f.wpos = copy(f.out, dict)
	f.rpos = f.wpos
	f.crcFrom = f.wpos
	if gzip {
		f.crc = crc32.NewIEEE()
	}
	if gzip && !resume {
		if err := f.readGzipHeader(true); err != nil {
			return nil, err
		}
	} else if skipBits > 0 {
		if _, err := f.br.get(skipBits); err != nil {
			return nil, fmt.Errorf("%w: skipping to checkpoint: %v", ErrTruncated, err)
		}
	}
	return f, nil
}

type storedRun struct {
	out, in, n int64 // output offset, compressed offset, length
}

// BlobRange is a byte range of a layer blob.
type BlobRange struct {
	Off int64
	Len int64
}

// outPos is the output offset of the next decoded byte.
func (f *inflater) outPos() int64 { return f.total + int64(f.wpos-f.crcFrom) }

// noteStored records a stored block of n bytes starting now; the stream is
// byte-aligned with its data next.
func (f *inflater) noteStored(n int64) {
	if n == 0 {
		return
	}
	out := f.outPos()
	keep := 0
	for keep < len(f.runs) && f.runs[keep].out+f.runs[keep].n <= out-windowSize {
		keep++
	}
	f.runs = append(f.runs[:0], f.runs[keep:]...)
	f.runs = append(f.runs, storedRun{out: out, in: f.br.bitPos() / 8, n: n})
}

// storedWindow returns where in the compressed stream the window before the
// current output position lies, when stored blocks produced all of it.
func (f *inflater) storedWindow() []BlobRange {
	out := f.outPos()
	lo := max(out-windowSize, 0)
	if len(f.runs) == 0 || f.runs[0].out > lo {
		return nil
	}
	last := f.runs[len(f.runs)-1]
	if last.out+last.n != out {
		return nil
	}
	var rs []BlobRange
	for _, r := range f.runs {
		a, b := max(r.out, lo), r.out+r.n
		if b <= a {
			continue
		}
		rs = append(rs, BlobRange{Off: r.in + (a - r.out), Len: b - a})
	}
	return rs
}

// window returns up to the last 32 KiB of output, the state a resumed
// decoder needs for back references. It aliases the inflater's buffer.
func (f *inflater) window() []byte {
	lo := f.wpos - windowSize
	if lo < 0 {
		lo = 0
	}
	return f.out[lo:f.wpos]
}

func (f *inflater) Read(p []byte) (int, error) {
	for f.rpos == f.wpos {
		if f.err != nil {
			return 0, f.err
		}
		if f.done {
			return 0, io.EOF
		}
		f.err = f.decodeSome()
		if f.err == io.EOF {
			f.done, f.err = true, nil
		}
	}
	n := copy(p, f.out[f.rpos:f.wpos])
	f.rpos += n
	return n, nil
}

// decodeSome decodes until the output buffer is full or the stream ends.
func (f *inflater) decodeSome() error {
	if f.wpos > windowSize {
		// Keep only the window for back references.
		n := copy(f.out, f.out[f.wpos-windowSize:f.wpos])
		f.crcFrom -= f.wpos - n
		f.rpos -= f.wpos - n
		f.wpos = n
	}
	limit := len(f.out) - maxMatch
	for f.wpos < limit {
		if !f.inBlock {
			if f.final {
				f.updateCRC()
				if !f.gzip {
					return io.EOF
				}
				if err := f.endMember(); err != nil {
					return err
				}
				continue
			}
			if err := f.startBlock(); err != nil {
				return f.mapErr(err)
			}
			continue
		}
		if f.stored >= 0 {
			if err := f.copyStored(limit); err != nil {
				return f.mapErr(err)
			}
			continue
		}
		sym, err := f.br.decode(f.lit)
		if err != nil {
			return f.mapErr(err)
		}
		switch {
		case sym < 256:
			f.out[f.wpos] = byte(sym)
			f.wpos++
		case sym == 256:
			f.endBlock()
		default:
			if err := f.copyMatch(sym); err != nil {
				return f.mapErr(err)
			}
		}
	}
	f.updateCRC()
	return nil
}

func (f *inflater) mapErr(err error) error {
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return fmt.Errorf("%w: compressed stream ends early", ErrTruncated)
	}
	return err
}

// updateCRC accounts for output decoded since the last call: the running
// total and, for gzip, the member CRC.
func (f *inflater) updateCRC() {
	if f.crcFrom >= f.wpos {
		return
	}
	if f.crc != nil {
		f.crc.Write(f.out[f.crcFrom:f.wpos])
	}
	f.total += int64(f.wpos - f.crcFrom)
	f.crcFrom = f.wpos
}

func (f *inflater) endBlock() {
	f.inBlock = false
	f.stored = -1
	if !f.final && f.onBoundary != nil {
		f.updateCRC()
		f.onBoundary(boundary{bitPos: f.br.bitPos(), out: f.total})
	}
}

func (f *inflater) startBlock() error {
	hdr, err := f.br.get(3)
	if err != nil {
		return err
	}
	f.final = hdr&1 == 1
	f.inBlock = true
	switch hdr >> 1 {
	case 0:
		f.br.alignByte()
		var b [4]byte
		if err := f.br.readFull(b[:]); err != nil {
			return err
		}
		n := uint16(b[0]) | uint16(b[1])<<8
		nn := uint16(b[2]) | uint16(b[3])<<8
		if n != ^nn {
			return errDeflate("stored block length check fails")
		}
		f.stored = int(n)
		f.noteStored(int64(n))
		if n == 0 {
			f.endBlock()
		}
		return nil
	case 1:
		f.runs = f.runs[:0] // Huffman output breaks the run of stored bytes
		f.lit, f.dist = &fixedLit, &fixedDist
	case 2:
		f.runs = f.runs[:0]
		if err := f.readDynamic(); err != nil {
			return err
		}
		f.lit, f.dist = &f.dynLit, &f.dynDist
	default:
		return errDeflate("reserved block type")
	}
	f.stored = -1
	return nil
}

func (f *inflater) readDynamic() error {
	v, err := f.br.get(14)
	if err != nil {
		return err
	}
	nlit := int(v&31) + 257
	ndist := int(v>>5&31) + 1
	nclen := int(v>>10) + 4
	if nlit > 286 || ndist > 30 {
		return errDeflate("too many length or distance codes")
	}
	var cl [19]uint8
	for i := 0; i < nclen; i++ {
		x, err := f.br.get(3)
		if err != nil {
			return err
		}
		cl[clenOrder[i]] = uint8(x)
	}
	if err := f.clen.init(cl[:]); err != nil {
		return err
	}
	lens := f.lens[:nlit+ndist]
	for i := 0; i < len(lens); {
		sym, err := f.br.decode(&f.clen)
		if err != nil {
			return err
		}
		if sym < 16 {
			lens[i] = uint8(sym)
			i++
			continue
		}
		var rep uint32
		var val uint8
		switch sym {
		case 16:
			if i == 0 {
				return errDeflate("repeat with no previous length")
			}
			val = lens[i-1]
			rep, err = f.br.get(2)
			rep += 3
		case 17:
			rep, err = f.br.get(3)
			rep += 3
		default:
			rep, err = f.br.get(7)
			rep += 11
		}
		if err != nil {
			return err
		}
		if i+int(rep) > len(lens) {
			return errDeflate("code lengths overflow")
		}
		for ; rep > 0; rep-- {
			lens[i] = val
			i++
		}
	}
	if lens[256] == 0 {
		return errDeflate("no end-of-block code")
	}
	if err := f.dynLit.init(lens[:nlit]); err != nil {
		return err
	}
	return f.dynDist.init(lens[nlit:])
}

func (f *inflater) copyStored(limit int) error {
	n := f.stored
	if room := limit - f.wpos; n > room {
		n = room
	}
	// Whole bytes may still sit in the bit buffer; take those first.
	for n > 0 && f.br.nbits >= 8 {
		f.out[f.wpos] = byte(f.br.bits)
		f.br.bits >>= 8
		f.br.nbits -= 8
		f.wpos++
		f.stored--
		n--
	}
	if n > 0 {
		if err := f.br.readFull(f.out[f.wpos : f.wpos+n]); err != nil {
			return err
		}
		f.wpos += n
		f.stored -= n
	}
	if f.stored == 0 {
		f.endBlock()
	}
	return nil
}

func (f *inflater) copyMatch(sym int) error {
	sym -= 257
	if sym >= 29 {
		return errDeflate("invalid length symbol")
	}
	extra, err := f.br.get(uint(lengthExtra[sym]))
	if err != nil {
		return err
	}
	length := int(lengthBase[sym]) + int(extra)
	dsym, err := f.br.decode(f.dist)
	if err != nil {
		return err
	}
	if dsym >= 30 {
		return errDeflate("invalid distance symbol")
	}
	extra, err = f.br.get(uint(distExtra[dsym]))
	if err != nil {
		return err
	}
	dist := int(distBase[dsym]) + int(extra)
	if dist > f.wpos {
		return errDeflate("distance %d reaches before the start of the stream", dist)
	}
	src := f.wpos - dist
	if dist >= length {
		copy(f.out[f.wpos:f.wpos+length], f.out[src:src+length])
		f.wpos += length
		return nil
	}
	for i := 0; i < length; i++ {
		f.out[f.wpos] = f.out[src+i]
		f.wpos++
	}
	return nil
}

// endMember checks a gzip member's trailer and starts the next member, if any.
func (f *inflater) endMember() error {
	f.br.alignByte()
	var t [8]byte
	if err := f.br.readFull(t[:]); err != nil {
		return f.mapErr(err)
	}
	sum := uint32(t[0]) | uint32(t[1])<<8 | uint32(t[2])<<16 | uint32(t[3])<<24
	if sum != f.crc.Sum32() && !f.skipCRC {
		return fmt.Errorf("%w: gzip CRC mismatch", ErrCorrupt)
	}
	f.crc.Reset()
	f.skipCRC = false
	if err := f.readGzipHeader(false); err != nil {
		return err
	}
	f.final = false
	return nil
}

// readGzipHeader parses a member header. At the end of input after a member
// it returns io.EOF (a clean end); the first header must be there.
func (f *inflater) readGzipHeader(first bool) error {
	c, err := f.br.readByte()
	if err != nil {
		if err == io.EOF && !first {
			return io.EOF
		}
		return fmt.Errorf("%w: gzip header: %v", ErrTruncated, err)
	}
	var h [9]byte
	if err := f.br.readFull(h[:]); err != nil {
		return fmt.Errorf("%w: gzip header", ErrTruncated)
	}
	if c != 0x1f || h[0] != 0x8b || h[1] != 8 {
		return fmt.Errorf("%w: bad gzip header", ErrCorrupt)
	}
	flg := h[2]
	if flg&0xe0 != 0 {
		return fmt.Errorf("%w: reserved gzip flags", ErrCorrupt)
	}
	skipZ := func() error {
		for n := 0; ; n++ {
			b, err := f.br.readByte()
			if err != nil {
				return fmt.Errorf("%w: gzip header", ErrTruncated)
			}
			if b == 0 {
				return nil
			}
			if n > 1<<16 {
				return fmt.Errorf("%w: gzip header name or comment too long", ErrHeaderTooLarge)
			}
		}
	}
	if flg&4 != 0 { // FEXTRA
		var x [2]byte
		if err := f.br.readFull(x[:]); err != nil {
			return fmt.Errorf("%w: gzip header", ErrTruncated)
		}
		extra := make([]byte, int(x[0])|int(x[1])<<8)
		if err := f.br.readFull(extra); err != nil {
			return fmt.Errorf("%w: gzip header", ErrTruncated)
		}
	}
	if flg&8 != 0 { // FNAME
		if err := skipZ(); err != nil {
			return err
		}
	}
	if flg&16 != 0 { // FCOMMENT
		if err := skipZ(); err != nil {
			return err
		}
	}
	if flg&2 != 0 { // FHCRC
		var x [2]byte
		if err := f.br.readFull(x[:]); err != nil {
			return fmt.Errorf("%w: gzip header", ErrTruncated)
		}
	}
	if !first && f.onBoundary != nil {
		f.onBoundary(boundary{bitPos: f.br.bitPos(), out: f.total, memberStart: true})
	}
	return nil
}

// skipGzipHeader consumes one gzip member header from r (used by the read
// path when a span crosses into the next member).
func skipGzipHeader(r *bufio.Reader) error {
	f := &inflater{br: bitReader{r: r}}
	err := f.readGzipHeader(false)
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("%w: missing gzip member", ErrTruncated)
	}
	return err
}
