// Package raftlog is the metaserver's Raft log store: segment files of
// checksummed records, appended with one fdatasync per StoreLogs call.
//
// It owns the files of one directory and nothing else; it must never hold
// state of its own about terms or votes (the StableStore keeps those) and
// never decide what is committed: it stores what raft hands it, durably,
// and gives back a prefix of it after any crash.
//
// Why our own store and not raft-boltdb: BoltDB commits a log append with
// two fdatasyncs and random page writes (B+tree pages, then the meta page),
// which capped the metaserver at about 1,800 creates/s on this class of disk.
// Here an append is one sequential write into a segment file that was
// zero-filled ahead of use, and one fdatasync that flushes only those data
// blocks. raft group-commits concurrent proposals into one StoreLogs call,
// so a batch costs one sync whatever its size.
//
// Crash model. An append is acknowledged only after its fdatasync returns
// (for StoreLogsDeferred, once WaitDurable says so).
// A crash mid-append may leave any subset of the batch's pages on disk; on
// open the last segment is scanned and cut at the first record that is
// torn, zero, fails its checksum, or is out of sequence, so only
// unacknowledged entries are lost. Every segment before the last was synced
// whole before the next one was created, so damage there is reported as
// ErrCorrupt instead of being cut away silently.
package raftlog

import (
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Options tune a Store. Zero values take the defaults.
type Options struct {
	// SegmentSize is the size of a segment file (default 16 MiB). An entry
	// bigger than that gets a segment of its own size. The log rarely holds
	// more than raft's TrailingLogs plus a snapshot interval of entries (a
	// few MB of metadata commands), so 16 MiB segments let head compaction
	// free whole files while a rollover (two more syncs) stays rare.
	SegmentSize int64
	// NoSync skips every fsync: for tests and benchmarks that accept losing
	// recent entries on power loss. Segments are then created sparse.
	NoSync bool
	// SyncDelay spaces the fdatasyncs of deferred appends
	// (StoreLogsDeferred) when they come densely (less than half of it
	// apart on average): one starts at once unless the previous one
	// started less than SyncDelay ago, and then when that interval is over
	// or as soon as a WaitDurable has to block. Sparse appends sync at
	// once. Zero syncs after every append. A Raft leader appends one or two entries at a time, each
	// followed by replication that takes longer than a sync; syncing every
	// one multiplies the flushes that the followers' fdatasyncs, which the
	// commit does wait for, queue behind on a shared disk.
	SyncDelay time.Duration
}

// DefaultSegmentSize is the segment size used when Options leave it zero.
const DefaultSegmentSize = 16 << 20

// Store is a durable raft.LogStore. It is safe for concurrent use: raft
// appends from its main loop, compacts from its snapshot goroutine and reads
// from replication and apply goroutines at the same time.
type Store struct {
	dir  string
	opts Options

	// wmu serializes everything that writes: StoreLogs, DeleteRange,
	// Close. It is held across syncs; mu is not, so reads go on meanwhile.
	wmu    sync.Mutex
	meta   meta
	buf    []byte
	failed error
	spare  *spares

	// mu guards what readers look at.
	mu          sync.RWMutex
	segs        []*segment
	first, last uint64 // both 0 when the log is empty
	closed      bool

	// Deferred syncs (StoreLogsDeferred, deferred.go). smu is held across
	// every fdatasync of the tail and by everything that closes or cuts
	// segments, so the syncer never syncs a file being removed; lock order
	// is wmu, then smu, then mu or dmu.
	smu    sync.Mutex
	dmu    sync.Mutex
	dur    durability // guarded by dmu
	kick   chan struct{}
	urgent chan struct{} // a WaitDurable blocks
	// prevAppend (guarded by wmu) and appendGap (nanos, an average) time
	// deferred appends, so the syncer delays syncs only when they are
	// dense.
	prevAppend int64
	appendGap  atomic.Int64
	quit       chan struct{}
	done       chan struct{}
}

var (
	_ raft.LogStore          = (*Store)(nil)
	_ raft.MonotonicLogStore = (*Store)(nil)
)

// Open opens the log in dir, creating it if needed, and recovers it: the
// last segment is cut after its last intact record.
func Open(dir string, opts Options) (*Store, error) {
	if opts.SegmentSize <= 0 {
		opts.SegmentSize = DefaultSegmentSize
	}
	if opts.SegmentSize < headerSize+frameSize {
		return nil, fmt.Errorf("raft log: segment size %d too small", opts.SegmentSize)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("raft log: %w", err)
	}
	s := &Store{dir: dir, opts: opts, dur: durability{ch: make(chan struct{})}}
	s.spare = &spares{dir: dir, size: opts.SegmentSize, nosync: opts.NoSync, stop: make(chan struct{})}
	if err := s.recover(); err != nil {
		for _, sg := range s.segs {
			sg.f.Close()
		}
		return nil, err
	}
	if err := s.spare.adopt(); err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("raft log: %w", err)
	}
	s.spare.start()
	// What a killed process appended may still be only in the page cache,
	// and what this store reports durable must be on the disk.
	if n := len(s.segs); n > 0 {
		if err := s.sync(s.segs[n-1]); err != nil {
			s.spare.close()
			s.closeFiles()
			return nil, err
		}
	}
	s.dur.index = s.last
	s.appendGap.Store(int64(opts.SyncDelay)) // sparse until appends show otherwise
	s.startSyncer()
	return s, nil
}

func (s *Store) recover() error {
	ents, err := os.ReadDir(s.dir)
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	var bases []uint64
	for _, e := range ents {
		name := e.Name()
		if strings.HasSuffix(name, tmpSuffix) {
			// Half-written meta or segment files of an interrupted write.
			if err := os.Remove(filepath.Join(s.dir, name)); err != nil {
				return fmt.Errorf("raft log: %w", err)
			}
			continue
		}
		if b, ok := parseSegName(name); ok {
			bases = append(bases, b)
		}
	}
	slices.Sort(bases)
	m, ok, err := readMeta(s.dir)
	if err != nil {
		return err
	}
	if !ok && len(bases) > 0 {
		return &CorruptError{File: filepath.Join(s.dir, metaName), Reason: "missing while segments exist"}
	}
	if len(bases) == 0 {
		m.first = 0 // a full delete was cut short after its last removal
	}
	// Segments wholly below first are left over from a head delete cut
	// short after its meta write.
	for len(bases) > 1 && bases[1] <= m.first {
		if err := os.Remove(filepath.Join(s.dir, segName(bases[0]))); err != nil {
			return fmt.Errorf("raft log: %w", err)
		}
		bases = bases[1:]
	}
	for i, b := range bases {
		sg, err := openSegment(s.dir, b)
		lastSeg := i == len(bases)-1
		if errors.Is(err, errZeroHeader) {
			if !lastSeg {
				return &CorruptError{File: filepath.Join(s.dir, segName(b)), Reason: "sealed segment without a header"}
			}
			// A rollover renamed the spare but crashed before its first
			// sync: nothing in it was acknowledged.
			if err := os.Remove(filepath.Join(s.dir, segName(b))); err != nil {
				return fmt.Errorf("raft log: %w", err)
			}
			break
		}
		if err != nil {
			return err
		}
		s.segs = append(s.segs, sg)
		var want uint64
		if !lastSeg {
			want = bases[i+1] - 1
		}
		res, err := scan(sg.f, sg.path, sg.base, sg.size, m.gen, want)
		if err != nil {
			return err
		}
		sg.offs, sg.end = res.offs, res.end
		if !lastSeg && sg.last() != want {
			return &CorruptError{File: sg.path, Offset: res.end,
				Reason: fmt.Sprintf("sealed segment ends at index %d, the next starts at %d: %s", sg.last(), bases[i+1], res.stopped)}
		}
	}
	// A last segment left with no records (its first batch never synced)
	// goes, so the one before it is appended to again.
	if n := len(s.segs); n > 0 && len(s.segs[n-1].offs) == 0 {
		sg := s.segs[n-1]
		sg.f.Close()
		if err := os.Remove(sg.path); err != nil {
			return fmt.Errorf("raft log: %w", err)
		}
		s.segs = s.segs[:n-1]
	}
	if len(s.segs) > 0 {
		s.first = max(m.first, s.segs[0].base)
		s.last = s.segs[len(s.segs)-1].last()
		if s.first > s.last {
			// Everything left lies below first: deleted from the head.
			if err := s.removeAll(); err != nil {
				return err
			}
		}
	}
	if len(s.segs) == 0 {
		m.first = 0
	}
	// A new generation for everything written from now on: whatever lies
	// beyond the last segment's end is older than it (see scan).
	m.gen++
	if err := writeMeta(s.dir, m, s.opts.NoSync); err != nil {
		return err
	}
	s.meta = m
	if len(s.segs) > 0 {
		return s.markEnd(s.segs[len(s.segs)-1])
	}
	return nil
}

// markEnd writes a zero frame at the tail segment's end (when something
// else is there) and syncs it, so a scan stops there until new records of
// the current generation replace it.
func (s *Store) markEnd(sg *segment) error {
	if sg.end+frameSize > sg.size {
		return nil
	}
	var b [frameSize]byte
	if _, err := sg.f.ReadAt(b[:], sg.end); err != nil {
		return fmt.Errorf("raft log: reading %s: %w", sg.path, err)
	}
	if allZero(b[:]) {
		return nil
	}
	clear(b[:])
	if _, err := sg.f.WriteAt(b[:], sg.end); err != nil {
		return fmt.Errorf("raft log: truncating %s: %w", sg.path, err)
	}
	return s.sync(sg)
}

func (s *Store) sync(sg *segment) error {
	if s.opts.NoSync {
		return nil
	}
	if err := datasync(sg.f); err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	return nil
}

func (s *Store) syncDir() error {
	if s.opts.NoSync {
		return nil
	}
	if err := syncDir(s.dir); err != nil {
		return fmt.Errorf("raft log: syncing directory: %w", err)
	}
	return nil
}

// IsMonotonic tells raft (v1.7.3) this store holds no gaps. The semantics
// fit: raft's only gap is the one after a snapshot is installed from the
// leader or restored by the user, where the next entry follows the
// snapshot, not the log. A monotonic store instead gets the whole log
// deleted right after the install, which here is removing files, and the
// next append starts an empty log wherever it likes. Allowing gaps would
// cost the dense index (one offset per index per segment) and the
// index-sequence check that recovery relies on. A crash between the install
// and that delete leaves entries older than the snapshot; the metaserver
// drops them at start-up (they are useless and would sit before a gap).
func (s *Store) IsMonotonic() bool { return true }

// FirstIndex returns the first index in the log, 0 when it is empty.
func (s *Store) FirstIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	return s.first, nil
}

// LastIndex returns the last index in the log, 0 when it is empty.
func (s *Store) LastIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	return s.last, nil
}

// GetLog reads one entry: a lookup in memory and one pread. The checksum
// is verified again, so a bit flipped on disk since the append is an error,
// not a wrong entry.
func (s *Store) GetLog(index uint64, l *raft.Log) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if s.last == 0 || index < s.first || index > s.last {
		return raft.ErrLogNotFound
	}
	k := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].base > index }) - 1
	sg := s.segs[k]
	start, end := sg.span(index)
	b := make([]byte, end-start)
	if _, err := sg.f.ReadAt(b, start); err != nil {
		return fmt.Errorf("raft log: reading index %d: %w", index, err)
	}
	n, sum := parseFrame(b)
	body := b[frameSize:]
	if int(n) != len(body) || crcOf(body) != sum {
		return &CorruptError{File: sg.path, Offset: start, Reason: fmt.Sprintf("index %d: checksum mismatch", index)}
	}
	if _, err := decodeBody(body, l); err != nil || l.Index != index {
		return &CorruptError{File: sg.path, Offset: start, Reason: fmt.Sprintf("index %d: bad record", index)}
	}
	return nil
}

// StoreLog appends one entry.
func (s *Store) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs appends entries that continue the log (or start it, when it is
// empty) with one write and one fdatasync; a batch that crosses into a new
// segment syncs both files.
func (s *Store) StoreLogs(logs []*raft.Log) error { return s.storeLogs(logs, false) }

func (s *Store) storeLogs(logs []*raft.Log, deferred bool) error {
	if len(logs) == 0 {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	s.mu.RLock()
	last := s.last
	s.mu.RUnlock()
	next := logs[0].Index
	if last > 0 {
		next = last + 1
	}
	if next == 0 {
		return fmt.Errorf("raft log: %w: index 0", ErrNotContiguous)
	}
	for i, l := range logs {
		if l.Index != next+uint64(i) {
			return fmt.Errorf("raft log: %w: got index %d, want %d", ErrNotContiguous, l.Index, next+uint64(i))
		}
	}
	// Encode the batch once; ends[i] is where record i ends in buf.
	gen := s.meta.gen
	buf := s.buf[:0]
	ends := make([]int, len(logs))
	for i, l := range logs {
		if n := bodySize(l, gen); n > maxRecord {
			// A scan would take it for a torn record and cut the log there.
			return fmt.Errorf("raft log: %w: index %d is %d bytes", ErrTooLarge, l.Index, n)
		}
		buf = appendRecord(buf, l, gen)
		ends[i] = len(buf)
	}
	s.buf = buf
	if cap(s.buf) > 8<<20 {
		s.buf = nil // do not pin one huge batch's buffer
	}
	if deferred {
		if ok, err := s.writeDeferred(logs, buf, ends); ok || err != nil {
			if err != nil {
				s.failed = err
			}
			return err
		}
		// It needs a new segment: that path syncs (see writeDeferred).
	}
	s.smu.Lock()
	defer s.smu.Unlock()
	if err := s.flushLocked(); err != nil {
		s.failed = err
		return err
	}
	if err := s.write(logs, buf, ends); err != nil {
		var nw *notWritten
		if !errors.As(err, &nw) {
			s.failed = err
		}
		return err
	}
	s.setDurable(logs[len(logs)-1].Index)
	return nil
}

// notWritten marks a StoreLogs failure that left the log as it was: no new
// segment could be made (a full disk, say). Unlike a failed write or sync,
// it does not stop the store; the next append tries again.
type notWritten struct{ err error }

func (e *notWritten) Error() string { return e.err.Error() }
func (e *notWritten) Unwrap() error { return e.err }

// write puts the encoded batch into the tail segment and, when it fills,
// into new ones, syncing each file before the next exists (so a sealed
// segment is always complete on disk) and publishing what is durable.
func (s *Store) write(logs []*raft.Log, buf []byte, ends []int) error {
	recStart := func(k int) int {
		if k == 0 {
			return 0
		}
		return ends[k-1]
	}
	for i := 0; i < len(logs); {
		start := recStart(i)
		s.mu.RLock()
		var tail *segment
		if n := len(s.segs); n > 0 {
			tail = s.segs[n-1]
		}
		s.mu.RUnlock()
		fresh := tail == nil || tail.end+int64(ends[i]-start) > tail.size
		if fresh {
			var err error
			// Sized for one record at least; the rest of a big batch
			// spills into further segments.
			if tail, err = s.newSegment(logs[i].Index, int64(headerSize+ends[i]-start)); err != nil {
				if i > 0 {
					// Part of the batch is in: raft must learn the log
					// from a fresh scan, not retry on top of it.
					var nw *notWritten
					if errors.As(err, &nw) {
						err = nw.err
					}
				}
				return err
			}
		}
		// Records i..j-1 fit in tail.
		j := i
		for j < len(logs) && tail.end+int64(ends[j]-start) <= tail.size {
			j++
		}
		chunk := buf[start:ends[j-1]]
		at := tail.end
		if fresh {
			// The header goes with the first records: one write, one sync.
			chunk = append(encodeHeader(tail.base), chunk...)
			at = 0
		}
		if _, err := tail.f.WriteAt(chunk, at); err != nil {
			return fmt.Errorf("raft log: appending to %s: %w", tail.path, err)
		}
		if err := s.sync(tail); err != nil {
			return err
		}
		if fresh {
			if err := s.syncDir(); err != nil {
				return err
			}
		}
		s.mu.Lock()
		if fresh {
			s.segs = append(s.segs, tail)
			if s.last == 0 {
				s.first = logs[i].Index
			}
		}
		for k := i; k < j; k++ {
			tail.offs = append(tail.offs, uint32(tail.end))
			tail.end += int64(ends[k] - recStart(k))
		}
		s.last = logs[j-1].Index
		s.mu.Unlock()
		i = j
	}
	return nil
}

// newSegment turns a prepared file into the segment starting at base. It
// is not published (nor its header written) until its first records are.
func (s *Store) newSegment(base uint64, need int64) (*segment, error) {
	path := filepath.Join(s.dir, segName(base))
	if err := s.spare.take(path, need); err != nil {
		return nil, &notWritten{err}
	}
	s.spare.start() // the next one, while this one fills
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	var st os.FileInfo
	if err == nil {
		if st, err = f.Stat(); err != nil {
			f.Close()
		}
	}
	if err != nil {
		err = fmt.Errorf("raft log: new segment: %w", err)
		// Left behind, the empty file could end up after a later segment
		// of a lower base (after a tail delete) and break the next open.
		if rerr := os.Remove(path); rerr != nil {
			return nil, errors.Join(err, rerr)
		}
		return nil, &notWritten{err}
	}
	return &segment{base: base, path: path, f: f, size: st.Size(), end: headerSize}, nil
}

func (s *Store) writable() error {
	if s.failed != nil {
		return fmt.Errorf("%w: %w", ErrFailed, s.failed)
	}
	if err := s.syncFailure(); err != nil {
		return fmt.Errorf("%w: %w", ErrFailed, err)
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	return nil
}

// DeleteRange removes entries min..max (inclusive). raft only ever deletes
// a head (compaction after a snapshot), a tail (entries that conflict with
// a new leader's) or everything (after installing a snapshot); any other
// range is refused with ErrUnsupportedDelete.
func (s *Store) DeleteRange(lo, hi uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.writable(); err != nil {
		return err
	}
	// Segments are cut or closed below: no sync may run meanwhile, and
	// none may be owed to what stays.
	s.smu.Lock()
	defer s.smu.Unlock()
	if err := s.flushLocked(); err != nil {
		s.failed = err
		return err
	}
	s.mu.RLock()
	first, last := s.first, s.last
	s.mu.RUnlock()
	if last == 0 || hi < first || lo > last || lo > hi {
		return nil
	}
	lo, hi = max(lo, first), min(hi, last)
	var err error
	switch {
	case lo == first && hi == last:
		err = s.deleteAll()
	case lo == first:
		// A failed head delete leaves at worst files that the next open
		// removes; the log stays usable.
		return s.deleteHead(hi + 1)
	case hi == last:
		err = s.truncateTail(lo)
	default:
		return fmt.Errorf("raft log: %w: %d-%d of %d-%d", ErrUnsupportedDelete, lo, hi, first, last)
	}
	if err != nil {
		// Whether the tail is gone on disk is unknown: appending after it
		// could put new records in front of old ones of the same generation.
		s.failed = err
	}
	return err
}

// deleteHead makes first the first index: the meta file says so durably,
// then the segments wholly below it go. Entries below first in the segment
// that holds it stay on disk, unreachable, until that segment goes too.
func (s *Store) deleteHead(first uint64) error {
	m := s.meta
	m.first = first
	if err := writeMeta(s.dir, m, s.opts.NoSync); err != nil {
		return err
	}
	s.meta = m
	s.mu.Lock()
	s.first = first
	var drop []*segment
	for len(s.segs) > 1 && s.segs[1].base <= first {
		drop = append(drop, s.segs[0])
		s.segs = s.segs[1:]
	}
	s.mu.Unlock()
	for _, sg := range drop {
		sg.f.Close()
		if err := os.Remove(sg.path); err != nil {
			return fmt.Errorf("raft log: %w", err)
		}
	}
	return nil
}

// truncateTail removes from and everything after it, in place: later
// segments are removed (newest first, so a crash leaves a prefix), then a
// new generation is recorded and a zero frame written where from was.
func (s *Store) truncateTail(from uint64) error {
	s.mu.Lock()
	k := sort.Search(len(s.segs), func(i int) bool { return s.segs[i].base > from }) - 1
	keep := k + 1
	if s.segs[k].base == from {
		keep = k // from opens its segment: the segment goes whole
	}
	drop := slices.Clone(s.segs[keep:])
	s.segs = s.segs[:keep]
	// from > first, so a segment before it always stays.
	tail := s.segs[keep-1]
	if keep == k+1 {
		off, _ := tail.span(from)
		tail.offs = tail.offs[:from-tail.base]
		tail.end = off
	}
	s.last = from - 1
	s.mu.Unlock()
	s.cutDurable(from - 1)
	for i := len(drop) - 1; i >= 0; i-- {
		drop[i].f.Close()
		if err := os.Remove(drop[i].path); err != nil {
			return fmt.Errorf("raft log: %w", err)
		}
	}
	if len(drop) > 0 {
		if err := s.syncDir(); err != nil {
			return err
		}
	}
	m := s.meta
	m.gen++
	if err := writeMeta(s.dir, m, s.opts.NoSync); err != nil {
		return err
	}
	s.meta = m
	return s.markEnd(tail)
}

// deleteAll empties the log: every segment goes, newest first, and the
// meta file forgets the head, so the next append may start anywhere.
func (s *Store) deleteAll() error {
	s.mu.Lock()
	err := s.removeAll()
	s.mu.Unlock()
	s.cutDurable(0)
	if err != nil {
		return err
	}
	if err := s.syncDir(); err != nil {
		return err
	}
	m := s.meta
	m.first = 0
	if err := writeMeta(s.dir, m, s.opts.NoSync); err != nil {
		return err
	}
	s.meta = m
	return nil
}

// removeAll closes and removes every segment, newest first; s.mu is held
// (or the store not yet shared).
func (s *Store) removeAll() error {
	for len(s.segs) > 0 {
		sg := s.segs[len(s.segs)-1]
		sg.f.Close()
		s.segs = s.segs[:len(s.segs)-1]
		if err := os.Remove(sg.path); err != nil {
			s.segs = nil
			s.first, s.last = 0, 0
			return fmt.Errorf("raft log: %w", err)
		}
	}
	s.first, s.last = 0, 0
	return nil
}

// Close stops the background preparation of segments and the syncer, syncs
// what StoreLogsDeferred left unsynced and closes the files. Everything
// StoreLogs acknowledged is already durable.
func (s *Store) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.RLock()
	closed := s.closed
	s.mu.RUnlock()
	if closed {
		return nil
	}
	s.stopSyncer()
	s.spare.close()
	var ferr error
	if s.failed == nil && s.syncFailure() == nil {
		// Entries appended with a deferred sync are not promised to
		// anyone yet, but a clean shutdown leaves nothing owed.
		s.smu.Lock()
		ferr = s.flushLocked()
		s.smu.Unlock()
	}
	err := errors.Join(ferr, s.closeFiles())
	s.closeDurable()
	return err
}

func (s *Store) closeFiles() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	var errs []error
	for _, sg := range s.segs {
		errs = append(errs, sg.f.Close())
	}
	s.segs = nil
	return errors.Join(errs...)
}

func crcOf(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
