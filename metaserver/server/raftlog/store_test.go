package raftlog

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// entry makes a log entry whose payload depends on index and term, so a
// wrong or stale record shows up as a mismatch.
func entry(index, term uint64) *raft.Log {
	data := fmt.Appendf(nil, "i=%d t=%d %s", index, term, bytes.Repeat([]byte{byte(index)}, int(index%37)))
	l := &raft.Log{Index: index, Term: term, Type: raft.LogCommand, Data: data,
		AppendedAt: time.Unix(1700000000, int64(index)*1000)}
	if index%5 == 0 {
		l.Extensions = []byte("ext")
	}
	if index%7 == 0 {
		l.Type, l.Data = raft.LogNoop, nil
	}
	return l
}

func entries(from, to, term uint64) []*raft.Log {
	var out []*raft.Log
	for i := from; i <= to; i++ {
		out = append(out, entry(i, term))
	}
	return out
}

func open(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func store(t testing.TB, s *Store, logs []*raft.Log) {
	t.Helper()
	if err := s.StoreLogs(logs); err != nil {
		t.Fatalf("StoreLogs %d..%d: %v", logs[0].Index, logs[len(logs)-1].Index, err)
	}
}

func sameLog(a, b *raft.Log) bool {
	return a.Index == b.Index && a.Term == b.Term && a.Type == b.Type && bytes.Equal(a.Data, b.Data) &&
		bytes.Equal(a.Extensions, b.Extensions) && a.AppendedAt.Equal(b.AppendedAt)
}

// checkRange asserts the store holds exactly want (in order), nothing else.
func checkRange(t testing.TB, s *Store, want []*raft.Log) {
	t.Helper()
	first, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if len(want) == 0 {
		if first != 0 || last != 0 {
			t.Fatalf("want an empty log, have %d..%d", first, last)
		}
		return
	}
	if first != want[0].Index || last != want[len(want)-1].Index {
		t.Fatalf("log holds %d..%d, want %d..%d", first, last, want[0].Index, want[len(want)-1].Index)
	}
	for _, w := range want {
		var got raft.Log
		if err := s.GetLog(w.Index, &got); err != nil {
			t.Fatalf("GetLog(%d): %v", w.Index, err)
		}
		if !sameLog(&got, w) {
			t.Fatalf("GetLog(%d) = %+v, want %+v", w.Index, got, *w)
		}
	}
	var l raft.Log
	for _, i := range []uint64{first - 1, last + 1} {
		if err := s.GetLog(i, &l); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("GetLog(%d) outside %d..%d: err %v, want ErrLogNotFound", i, first, last, err)
		}
	}
}

func (s *Store) spareReady() bool {
	s.spare.mu.Lock()
	defer s.spare.mu.Unlock()
	return s.spare.ready
}

func segFiles(t testing.TB, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*"+segSuffix))
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(m)
	return m
}

func TestEmptyLog(t *testing.T) {
	s := open(t, t.TempDir(), Options{NoSync: true})
	checkRange(t, s, nil)
	var l raft.Log
	if err := s.GetLog(1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("GetLog on an empty log: %v", err)
	}
	if err := s.DeleteRange(1, 10); err != nil {
		t.Fatalf("DeleteRange on an empty log: %v", err)
	}
	if err := s.StoreLogs(nil); err != nil {
		t.Fatal(err)
	}
	checkRange(t, s, nil)
}

func TestStoreAndGet(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{})
	if err := s.StoreLog(entry(1, 1)); err != nil {
		t.Fatal(err)
	}
	store(t, s, entries(2, 40, 1))
	checkRange(t, s, entries(1, 40, 1))
	// The log may start anywhere (after a snapshot install, say).
	s2 := open(t, t.TempDir(), Options{NoSync: true})
	store(t, s2, entries(1000, 1010, 3))
	checkRange(t, s2, entries(1000, 1010, 3))
}

func TestGapsRefused(t *testing.T) {
	s := open(t, t.TempDir(), Options{NoSync: true})
	store(t, s, entries(1, 3, 1))
	for _, batch := range [][]*raft.Log{
		{entry(5, 1)},              // gap after the last
		{entry(4, 1), entry(6, 1)}, // gap inside the batch
		{entry(3, 1)},              // overwrite without a delete
		{entry(4, 1), entry(4, 1)}, // repeated index
		{{Index: 0, Term: 1}},      // index 0
	} {
		if err := s.StoreLogs(batch); !errors.Is(err, ErrNotContiguous) {
			t.Errorf("StoreLogs(%d..%d) after 1..3: err %v, want ErrNotContiguous", batch[0].Index, batch[len(batch)-1].Index, err)
		}
	}
	checkRange(t, s, entries(1, 3, 1))
	empty := open(t, t.TempDir(), Options{NoSync: true})
	if err := empty.StoreLogs([]*raft.Log{{Index: 0}}); !errors.Is(err, ErrNotContiguous) {
		t.Errorf("index 0 into an empty log: %v", err)
	}
}

func TestReopenAfterClose(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentSize: 4096})
	store(t, s, entries(1, 100, 1))
	store(t, s, entries(101, 101, 2))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.StoreLog(entry(102, 2)); !errors.Is(err, ErrClosed) {
		t.Fatalf("StoreLog after Close: %v", err)
	}
	s = open(t, dir, Options{SegmentSize: 4096})
	want := append(entries(1, 100, 1), entry(101, 2))
	checkRange(t, s, want)
	store(t, s, entries(102, 150, 2))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{SegmentSize: 4096})
	checkRange(t, s, append(want, entries(102, 150, 2)...))
}

func TestSegmentRollover(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentSize: 2048})
	var want []*raft.Log
	for i := uint64(1); i <= 300; i += 20 {
		b := entries(i, i+19, 1)
		store(t, s, b)
		want = append(want, b...)
	}
	if n := len(segFiles(t, dir)); n < 5 {
		t.Fatalf("300 entries in 2 KiB segments made %d segment files", n)
	}
	// One entry bigger than a segment gets a segment of its own size.
	big := &raft.Log{Index: 301, Term: 1, Data: bytes.Repeat([]byte("x"), 10000)}
	store(t, s, []*raft.Log{big})
	want = append(want, big)
	// A batch spanning several segments.
	store(t, s, entries(302, 500, 1))
	want = append(want, entries(302, 500, 1)...)
	checkRange(t, s, want)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkRange(t, open(t, dir, Options{SegmentSize: 2048}), want)
}

func TestDeleteHead(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentSize: 2048})
	store(t, s, entries(1, 200, 1))
	before := len(segFiles(t, dir))
	if err := s.DeleteRange(1, 150); err != nil {
		t.Fatal(err)
	}
	checkRange(t, s, entries(151, 200, 1))
	if after := len(segFiles(t, dir)); after >= before {
		t.Fatalf("head delete kept all %d segment files (now %d)", before, after)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The first index is persisted, though entries below it remain in the
	// segment that holds it.
	s = open(t, dir, Options{SegmentSize: 2048})
	checkRange(t, s, entries(151, 200, 1))
	store(t, s, entries(201, 210, 1))
	if err := s.DeleteRange(100, 160); err != nil { // raft may pass an old first
		t.Fatal(err)
	}
	checkRange(t, s, entries(161, 210, 1))
}

func TestDeleteTail(t *testing.T) {
	for _, tc := range []struct {
		name string
		from uint64 // first index deleted of 1..200
	}{
		{"inside the last segment", 195},
		{"inside an older segment", 60},
		{"one entry", 200},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, Options{SegmentSize: 2048})
			store(t, s, entries(1, 200, 1))
			if err := s.DeleteRange(tc.from, 200); err != nil {
				t.Fatal(err)
			}
			want := entries(1, tc.from-1, 1)
			checkRange(t, s, want)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			// Durable: the deleted entries do not come back on open...
			s = open(t, dir, Options{SegmentSize: 2048})
			checkRange(t, s, want)
			// ...nor after new entries of a later term, written where the
			// old ones were, are read past.
			want = append(want, entries(tc.from, tc.from+3, 2)...)
			store(t, s, entries(tc.from, tc.from+3, 2))
			checkRange(t, s, want)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			checkRange(t, open(t, dir, Options{SegmentSize: 2048}), want)
		})
	}
}

// TestDeleteTailAtSegmentStart deletes from the first index of a segment:
// the segment goes whole and the one before it is appended to again.
func TestDeleteTailAtSegmentStart(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentSize: 2048})
	store(t, s, entries(1, 200, 1))
	files := segFiles(t, dir)
	base, _ := parseSegName(filepath.Base(files[len(files)-2]))
	if err := s.DeleteRange(base, 200); err != nil {
		t.Fatal(err)
	}
	if n := len(segFiles(t, dir)); n != len(files)-2 {
		t.Fatalf("%d segment files after deleting from the start of the second last, want %d", n, len(files)-2)
	}
	want := append(entries(1, base-1, 1), entries(base, base+40, 2)...)
	store(t, s, entries(base, base+40, 2))
	checkRange(t, s, want)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkRange(t, open(t, dir, Options{SegmentSize: 2048}), want)
}

func TestDeleteAll(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{SegmentSize: 2048})
	store(t, s, entries(1, 200, 1))
	if err := s.DeleteRange(50, 100); !errors.Is(err, ErrUnsupportedDelete) {
		t.Fatalf("deleting the middle: %v", err)
	}
	if err := s.DeleteRange(1, 150); err != nil {
		t.Fatal(err)
	}
	// What raft does after installing a snapshot at 5000: delete it all,
	// then continue after the snapshot.
	if err := s.DeleteRange(151, 200); err != nil {
		t.Fatal(err)
	}
	checkRange(t, s, nil)
	if n := len(segFiles(t, dir)); n != 0 {
		t.Fatalf("%d segment files left after deleting everything", n)
	}
	store(t, s, entries(5001, 5020, 3))
	checkRange(t, s, entries(5001, 5020, 3))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{SegmentSize: 2048})
	checkRange(t, s, entries(5001, 5020, 3))
	// And a restart below the old first index (a user snapshot restore).
	if err := s.DeleteRange(5001, 5020); err != nil {
		t.Fatal(err)
	}
	store(t, s, entries(10, 12, 4))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkRange(t, open(t, dir, Options{SegmentSize: 2048}), entries(10, 12, 4))
}

func TestFlippedByteInSealedSegment(t *testing.T) {
	for _, at := range []string{"record", "header"} {
		t.Run(at, func(t *testing.T) {
			dir := t.TempDir()
			s := open(t, dir, Options{SegmentSize: 2048, NoSync: true})
			store(t, s, entries(1, 100, 1))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			files := segFiles(t, dir)
			if len(files) < 2 {
				t.Fatal("want a sealed segment")
			}
			off := int64(headerSize + 20)
			if at == "header" {
				off = 10
			}
			flipByte(t, files[0], off)
			_, err := Open(dir, Options{SegmentSize: 2048})
			var ce *CorruptError
			if !errors.Is(err, ErrCorrupt) || !errors.As(err, &ce) || ce.File != files[0] {
				t.Fatalf("open with a flipped byte in %s: %v, want a CorruptError naming it", files[0], err)
			}
		})
	}
}

// TestGetLogVerifiesChecksum: damage after open is an error on read, not a
// wrong entry.
func TestGetLogVerifiesChecksum(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{NoSync: true})
	store(t, s, entries(1, 5, 1))
	flipByte(t, segFiles(t, dir)[0], headerSize+frameSize+3)
	var l raft.Log
	if err := s.GetLog(1, &l); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("GetLog of a damaged record: %v", err)
	}
}

func flipByte(t testing.TB, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := []byte{0}
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x40
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestMissingMetaWithSegments(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir, Options{NoSync: true})
	store(t, s, entries(1, 5, 1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, metaName)); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("open without the meta file: %v", err)
	}
}

func TestConcurrentReadsDuringAppends(t *testing.T) {
	s := open(t, t.TempDir(), Options{SegmentSize: 4096, NoSync: true})
	store(t, s, entries(1, 10, 1))
	done := make(chan error)
	go func() {
		var l raft.Log
		rng := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-done:
				done <- nil
				return
			default:
			}
			last, _ := s.LastIndex()
			first, _ := s.FirstIndex()
			i := first + rng.Uint64N(last-first+1)
			err := s.GetLog(i, &l)
			if err != nil && !errors.Is(err, raft.ErrLogNotFound) {
				<-done
				done <- fmt.Errorf("GetLog(%d): %w", i, err)
				return
			}
			if err == nil && !sameLog(&l, entry(i, 1)) {
				<-done
				done <- fmt.Errorf("GetLog(%d) returned another entry", i)
				return
			}
		}
	}()
	for i := uint64(11); i < 1000; i += 10 {
		store(t, s, entries(i, i+9, 1))
		if i%200 == 1 {
			if err := s.DeleteRange(1, i-50); err != nil {
				t.Fatal(err)
			}
		}
	}
	done <- nil
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestTooLargeEntryRefused(t *testing.T) {
	defer func(old int) { maxRecord = old }(maxRecord)
	maxRecord = 1000
	s := open(t, t.TempDir(), Options{NoSync: true})
	store(t, s, entries(1, 3, 1))
	big := &raft.Log{Index: 5, Term: 1, Data: make([]byte, 1000)}
	if err := s.StoreLogs([]*raft.Log{entry(4, 1), big}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("storing an entry over the record limit: %v", err)
	}
	// Refused before anything was written: the log goes on.
	store(t, s, entries(4, 6, 1))
	checkRange(t, s, entries(1, 6, 1))
}
