package raftlog

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// A segment file holds the records of consecutive indexes starting at its
// base, which is in its name (20 digits, so names sort like bases) and in
// its header. Every segment but the last is sealed: it holds exactly the
// indexes up to the next segment's base - 1, and anything after them in the
// file is ignored. The last segment is the one appended to.
type segment struct {
	base uint64
	path string
	f    *os.File
	size int64 // file size: appends go up to it, then a new segment starts
	// offs[i] is the offset of index base+i; end is where the next record
	// goes (and where the last one ends).
	offs []uint32
	end  int64
}

const (
	segSuffix  = ".seg"
	tmpSuffix  = ".tmp"
	segMagic   = "DYRLSEG1"
	headerSize = 32
)

func segName(base uint64) string { return fmt.Sprintf("%020d%s", base, segSuffix) }

// parseSegName returns the base of a segment file name.
func parseSegName(name string) (uint64, bool) {
	s, ok := strings.CutSuffix(name, segSuffix)
	if !ok || len(s) != 20 {
		return 0, false
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil && v > 0
}

func encodeHeader(base uint64) []byte {
	b := make([]byte, 0, headerSize)
	b = append(b, segMagic...)
	b = binary.LittleEndian.AppendUint64(b, base)
	b = binary.LittleEndian.AppendUint64(b, 0) // reserved
	b = binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
	return append(b, 0, 0, 0, 0)
}

// errZeroHeader marks a segment whose header was never written: a rollover
// that a crash interrupted between the rename and the first sync.
var errZeroHeader = errors.New("segment header never written")

func checkHeader(path string, b []byte, base uint64) error {
	if allZero(b) {
		return errZeroHeader
	}
	if string(b[:8]) != segMagic || binary.LittleEndian.Uint32(b[24:]) != crc32.Checksum(b[:24], castagnoli) {
		return &CorruptError{File: path, Reason: "bad segment header"}
	}
	if got := binary.LittleEndian.Uint64(b[8:]); got != base {
		return &CorruptError{File: path, Reason: fmt.Sprintf("header says base %d, name says %d", got, base)}
	}
	return nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// scanResult is what a scan found: the records' offsets and where the valid
// records end, and, when it stopped early, why.
type scanResult struct {
	offs    []uint32
	end     int64
	stopped string // "" when the scan reached want (or the file's end)
}

// scan reads a segment's records from the header on. It accepts a record
// only if its checksum holds, its body parses, its index is the next one and
// its gen is no older than the record before it and no newer than maxGen.
// It stops at the first record that fails (or at a zero frame, or after
// index want when want > 0) and says why in stopped.
//
// The gen rule is what makes in-place truncation safe. Bytes beyond the
// logical end of a segment may hold records of an earlier life of that
// region (a truncated tail, the unsynced rest of a batch a crash cut). Every
// truncation and every open raises the store's gen before anything new is
// written, so such leftovers are always older than whatever was written
// after them and a scan cannot step from new records into old ones, even
// when their indexes happen to line up.
func scan(f *os.File, path string, base uint64, size int64, maxGen, want uint64) (scanResult, error) {
	r := bufio.NewReaderSize(io.NewSectionReader(f, headerSize, size-headerSize), 1<<20)
	var (
		res     = scanResult{end: headerSize}
		frame   [frameSize]byte
		body    []byte
		prevGen uint64
		next    = base
	)
	for {
		if want > 0 && next > want {
			return res, nil
		}
		if res.end+frameSize > size {
			res.stopped = "end of file"
			return res, nil
		}
		if _, err := io.ReadFull(r, frame[:]); err != nil {
			return res, fmt.Errorf("reading %s: %w", path, err)
		}
		n, sum := parseFrame(frame[:])
		if n == 0 {
			res.stopped = "no record"
			return res, nil
		}
		if int64(n) > int64(maxRecord) || res.end+frameSize+int64(n) > size {
			res.stopped = "record length past the end of the file"
			return res, nil
		}
		if cap(body) < int(n) {
			body = make([]byte, n)
		}
		body = body[:n]
		if _, err := io.ReadFull(r, body); err != nil {
			return res, fmt.Errorf("reading %s: %w", path, err)
		}
		if crc32.Checksum(body, castagnoli) != sum {
			res.stopped = "checksum mismatch"
			return res, nil
		}
		gen, index, err := peekBody(body)
		switch {
		case err != nil:
			res.stopped = err.Error()
			return res, nil
		case index != next:
			res.stopped = fmt.Sprintf("index %d where %d was due", index, next)
			return res, nil
		case gen < prevGen || gen > maxGen:
			res.stopped = fmt.Sprintf("record of generation %d after %d (store at %d)", gen, prevGen, maxGen)
			return res, nil
		}
		res.offs = append(res.offs, uint32(res.end))
		res.end += frameSize + int64(n)
		prevGen = gen
		next++
	}
}

// openSegment opens a segment file and checks its header.
func openSegment(dir string, base uint64) (*segment, error) {
	path := filepath.Join(dir, segName(base))
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("opening raft log segment: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening raft log segment: %w", err)
	}
	s := &segment{base: base, path: path, f: f, size: st.Size()}
	hdr := make([]byte, headerSize)
	if st.Size() < headerSize {
		f.Close()
		return nil, &CorruptError{File: path, Reason: "shorter than a segment header"}
	}
	if _, err := f.ReadAt(hdr, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("reading raft log segment header: %w", err)
	}
	if err := checkHeader(path, hdr, base); err != nil {
		f.Close()
		return nil, err
	}
	return s, nil
}

// last is the last index the segment holds (base-1 when empty).
func (s *segment) last() uint64 { return s.base + uint64(len(s.offs)) - 1 }

// span returns where index i's record starts and ends.
func (s *segment) span(i uint64) (int64, int64) {
	k := i - s.base
	start := int64(s.offs[k])
	if k+1 < uint64(len(s.offs)) {
		return start, int64(s.offs[k+1])
	}
	return start, s.end
}
