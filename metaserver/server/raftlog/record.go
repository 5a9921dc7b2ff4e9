package raftlog

import (
	"encoding/binary"
	"errors"
	"hash/crc32"
	"time"

	"github.com/hashicorp/raft"
)

// A record on disk is
//
//	length  uint32 LE   bytes of the body that follows the 8-byte frame
//	crc     uint32 LE   CRC-32C (Castagnoli) of the body
//	body:   uvarint gen, uvarint index, uvarint term, byte type,
//	        varint appended-at (Unix ns, 0 for the zero time),
//	        uvarint len(data), data, uvarint len(extensions), extensions
//
// A zero length ends a segment's records: segments are zero-filled ahead of
// use, so the first never-written frame reads as zero. gen is the store's
// generation when the record was written; see Store for why it exists.
const frameSize = 8

// maxRecord bounds one record's body. Raft entries are far smaller; the
// bound keeps a garbage length from looking like a record during a scan,
// and StoreLogs refuses bigger entries. A variable only so tests can lower it.
var maxRecord = 1 << 30

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var errBadBody = errors.New("malformed record body")

// recordSize is the encoded size of l, frame included.
func recordSize(l *raft.Log, gen uint64) int {
	return frameSize + bodySize(l, gen)
}

func bodySize(l *raft.Log, gen uint64) int {
	return uvarintLen(gen) + uvarintLen(l.Index) + uvarintLen(l.Term) + 1 +
		varintLen(appendedAt(l)) + uvarintLen(uint64(len(l.Data))) + len(l.Data) +
		uvarintLen(uint64(len(l.Extensions))) + len(l.Extensions)
}

// appendRecord appends l's framed record to dst.
func appendRecord(dst []byte, l *raft.Log, gen uint64) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, frameSize)...)
	dst = binary.AppendUvarint(dst, gen)
	dst = binary.AppendUvarint(dst, l.Index)
	dst = binary.AppendUvarint(dst, l.Term)
	dst = append(dst, byte(l.Type))
	dst = binary.AppendVarint(dst, appendedAt(l))
	dst = binary.AppendUvarint(dst, uint64(len(l.Data)))
	dst = append(dst, l.Data...)
	dst = binary.AppendUvarint(dst, uint64(len(l.Extensions)))
	dst = append(dst, l.Extensions...)
	body := dst[start+frameSize:]
	binary.LittleEndian.PutUint32(dst[start:], uint32(len(body)))
	binary.LittleEndian.PutUint32(dst[start+4:], crc32.Checksum(body, castagnoli))
	return dst
}

func appendedAt(l *raft.Log) int64 {
	if l.AppendedAt.IsZero() {
		return 0
	}
	return l.AppendedAt.UnixNano()
}

// parseFrame reads a frame header: the body length and its checksum.
func parseFrame(b []byte) (n uint32, crc uint32) {
	return binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:])
}

// decodeBody fills l from a checksummed body. Data and Extensions alias body,
// so the caller hands over a buffer it no longer uses.
func decodeBody(body []byte, l *raft.Log) (gen uint64, err error) {
	var d decoder
	d.b = body
	gen = d.uvarint()
	l.Index = d.uvarint()
	l.Term = d.uvarint()
	l.Type = raft.LogType(d.byte())
	at := d.varint()
	l.Data = d.bytes()
	l.Extensions = d.bytes()
	if d.err != nil || len(d.b) != 0 {
		return 0, errBadBody
	}
	l.AppendedAt = time.Time{}
	if at != 0 {
		l.AppendedAt = time.Unix(0, at)
	}
	return gen, nil
}

// peekBody returns a body's generation and index after checking that the
// whole body parses, without copying anything (recovery scans use it).
func peekBody(body []byte) (gen, index uint64, err error) {
	var d decoder
	d.b = body
	gen = d.uvarint()
	index = d.uvarint()
	d.uvarint() // term
	d.byte()
	d.varint()
	d.bytes()
	d.bytes()
	if d.err != nil || len(d.b) != 0 {
		return 0, 0, errBadBody
	}
	return gen, index, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// bytes reads a length-prefixed field; an empty one decodes as nil, as raft
// leaves Data of no-op and barrier entries.
func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	if n == 0 {
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = errBadBody
	}
	d.b = nil
}

func uvarintLen(v uint64) int {
	n := 1
	for v >= 0x80 {
		v >>= 7
		n++
	}
	return n
}

func varintLen(v int64) int {
	u := uint64(v) << 1
	if v < 0 {
		u = ^u
	}
	return uvarintLen(u)
}
