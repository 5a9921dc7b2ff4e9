package raftlog

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// snapshotDir reads every file of a closed store's directory.
func snapshotDir(t testing.TB, dir string) map[string][]byte {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		files[e.Name()] = b
	}
	return files
}

// restoreDir makes dir hold exactly files.
func restoreDir(t testing.TB, dir string, files map[string][]byte) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCrashCutsLastSegment simulates a crash in the middle of the last
// appends: the last segment keeps its bytes up to a cut and, after it,
// either the zeros it was prepared with or garbage (a torn write). Every cut
// inside the last three records must reopen as a prefix of what was stored
// (exactly the records that end before the cut), and appends must continue.
func TestCrashCutsLastSegment(t *testing.T) {
	opts := Options{SegmentSize: 4096, NoSync: true}
	dir := t.TempDir()
	s := open(t, dir, opts)
	want := entries(1, 120, 1)
	for i := 0; i < len(want); i += 7 {
		store(t, s, want[i:min(i+7, len(want))])
	}
	tail := s.segs[len(s.segs)-1]
	tailName := filepath.Base(tail.path)
	offs, end := append([]uint32(nil), tail.offs...), tail.end
	if len(offs) < 4 {
		t.Fatalf("last segment holds %d records; the test wants more", len(offs))
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	orig := snapshotDir(t, dir)
	rng := rand.New(rand.NewPCG(7, 11))
	work := filepath.Join(t.TempDir(), "log")
	cuts := 0
	for cut := int64(offs[len(offs)-3]); cut <= end; cut++ {
		for _, garbage := range []bool{false, true} {
			files := map[string][]byte{}
			for k, v := range orig {
				files[k] = v
			}
			seg := append([]byte(nil), orig[tailName]...)
			for i := cut; i < end; i++ {
				seg[i] = 0
				if garbage {
					// Never the byte that was there: a cut is a cut.
					seg[i] = orig[tailName][i] ^ byte(1+rng.IntN(255))
				}
			}
			files[tailName] = seg
			restoreDir(t, work, files)
			// The records left byte for byte as they were survive (those
			// that end before the cut, and one whose cut-off bytes were
			// zeros anyway); the first changed one and all after it go.
			keep := tail.base - 1
			for k := range offs {
				recEnd := end
				if k+1 < len(offs) {
					recEnd = int64(offs[k+1])
				}
				if !bytes.Equal(seg[offs[k]:recEnd], orig[tailName][offs[k]:recEnd]) {
					break
				}
				keep = tail.base + uint64(k)
			}
			s, err := Open(work, opts)
			if err != nil {
				t.Fatalf("cut at %d (garbage %v): open: %v", cut, garbage, err)
			}
			checkRange(t, s, want[:keep])
			more := entries(keep+1, keep+3, 2)
			store(t, s, more)
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s, err = Open(work, opts)
			if err != nil {
				t.Fatalf("cut at %d (garbage %v): reopen after appending: %v", cut, garbage, err)
			}
			checkRange(t, s, append(want[:keep:keep], more...))
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			cuts++
		}
	}
	t.Logf("%d cuts checked", cuts)
}

// TestCrashHoleInLastBatch: a crash can persist a batch's pages out of
// order, leaving a hole with intact records after it. The log ends before
// the hole, and the records after it never come back, not even once new
// records of the same indexes and sizes are written over the hole.
func TestCrashHoleInLastBatch(t *testing.T) {
	opts := Options{NoSync: true}
	dir := t.TempDir()
	s := open(t, dir, opts)
	store(t, s, entries(1, 20, 1))
	store(t, s, entries(21, 40, 1)) // the batch the crash cuts
	tail := s.segs[0]
	name := filepath.Base(tail.path)
	start, end := tail.span(25)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, end-start), start); err != nil {
		t.Fatal(err)
	}
	f.Close()
	s = open(t, dir, opts)
	checkRange(t, s, entries(1, 24, 1))
	// Byte for byte what was there before, but for the generation.
	store(t, s, entries(25, 27, 1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkRange(t, open(t, dir, opts), entries(1, 27, 1))
}

// TestCrashDuringRollover: the spare was renamed into the next segment but
// nothing was synced into it. Open drops it and appends go on.
func TestCrashDuringRollover(t *testing.T) {
	opts := Options{SegmentSize: 4096, NoSync: true}
	dir := t.TempDir()
	s := open(t, dir, opts)
	store(t, s, entries(1, 60, 1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	next := filepath.Join(dir, segName(61))
	if err := os.WriteFile(next, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	// Left-overs of interrupted writes elsewhere.
	for _, name := range []string{metaName + tmpSuffix, segName(61) + tmpSuffix} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("half"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s = open(t, dir, opts)
	checkRange(t, s, entries(1, 60, 1))
	for _, name := range []string{metaName + tmpSuffix, segName(61) + tmpSuffix} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) {
			t.Errorf("%s survived open: %v", name, err)
		}
	}
	store(t, s, entries(61, 70, 1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkRange(t, open(t, dir, opts), entries(1, 70, 1))
}

// TestSpareWithRecordsIsDropped: a spare that is not all zeros (a rollover
// whose rename a crash undid) is not reused.
func TestSpareWithRecordsIsDropped(t *testing.T) {
	opts := Options{SegmentSize: 4096, NoSync: true}
	dir := t.TempDir()
	s := open(t, dir, opts)
	store(t, s, entries(1, 3, 1))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, 4096)
	copy(junk, "not zeros")
	if err := os.WriteFile(filepath.Join(dir, spareName), junk, 0o644); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, opts)
	deadline := time.Now().Add(10 * time.Second)
	for !s.spareReady() {
		if time.Now().After(deadline) {
			t.Fatal("no spare segment 10s after open")
		}
		time.Sleep(time.Millisecond)
	}
	b, err := os.ReadFile(filepath.Join(dir, spareName))
	if err != nil || len(b) != 4096 || !allZero(b) {
		t.Fatalf("spare after open: %d bytes, all zero %v, %v", len(b), allZero(b), err)
	}
	store(t, s, entries(4, 200, 1))
	checkRange(t, s, entries(1, 200, 1))
}

// TestCrashAfterHeadMetaWrite: a head delete persisted the new first index
// but not the removal of the segments below it.
func TestCrashAfterHeadMetaWrite(t *testing.T) {
	opts := Options{SegmentSize: 2048, NoSync: true}
	dir := t.TempDir()
	s := open(t, dir, opts)
	store(t, s, entries(1, 200, 1))
	gen := s.meta.gen
	nsegs := len(s.segs)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := writeMeta(dir, meta{first: 150, gen: gen}, true); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, opts)
	checkRange(t, s, entries(150, 200, 1))
	if len(s.segs) >= nsegs {
		t.Fatalf("segments below the first index were kept: %d of %d", len(s.segs), nsegs)
	}
}

// TestSparseSpareRebuiltWhenSyncing: a NoSync run leaves a sparse spare; a
// run that syncs replaces it with a written one.
func TestSparseSpareRebuiltWhenSyncing(t *testing.T) {
	dir := t.TempDir()
	waitSpare := func(s *Store) os.FileInfo {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !s.spareReady() {
			if time.Now().After(deadline) {
				t.Fatal("no spare segment 10s after open")
			}
			time.Sleep(time.Millisecond)
		}
		fi, err := os.Stat(filepath.Join(dir, spareName))
		if err != nil {
			t.Fatal(err)
		}
		return fi
	}
	s := open(t, dir, Options{SegmentSize: 1 << 20, NoSync: true})
	if fi := waitSpare(s); allocated(fi) >= fi.Size() {
		t.Skip("this file system allocates truncated files; nothing to test")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, Options{SegmentSize: 1 << 20})
	if fi := waitSpare(s); allocated(fi) < fi.Size() {
		t.Fatalf("spare has %d of %d bytes allocated", allocated(fi), fi.Size())
	}
}

// TestFailedRolloverIsNotFatal: when no new segment can be made (here the
// prepared spare vanished, where a full disk would fail making one), the
// append fails, nothing changes, and the next append succeeds without a
// restart.
func TestFailedRolloverIsNotFatal(t *testing.T) {
	opts := Options{SegmentSize: 4096, NoSync: true}
	dir := t.TempDir()
	s := open(t, dir, opts)
	store(t, s, entries(1, 10, 1))
	deadline := time.Now().Add(10 * time.Second)
	for !s.spareReady() {
		if time.Now().After(deadline) {
			t.Fatal("no spare segment 10s after open")
		}
		time.Sleep(time.Millisecond)
	}
	spare := filepath.Join(dir, spareName)
	if err := os.Remove(spare); err != nil {
		t.Fatal(err)
	}
	big := &raft.Log{Index: 11, Term: 1, Data: bytes.Repeat([]byte("b"), 4000)} // cannot fit in segment 1
	if err := s.StoreLogs([]*raft.Log{big}); err == nil || errors.Is(err, ErrFailed) {
		t.Fatalf("append needing a new segment with the spare blocked: %v", err)
	}
	checkRange(t, s, entries(1, 10, 1))
	store(t, s, []*raft.Log{big})
	want := append(entries(1, 10, 1), big)
	checkRange(t, s, want)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkRange(t, open(t, dir, opts), want)
}
