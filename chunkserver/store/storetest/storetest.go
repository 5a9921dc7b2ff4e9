// Package storetest is the one conformance suite every shard store runs:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T, capacity int64) storetest.Harness { ... })
//	}
//
// It checks round trips at every block boundary, ranged reads, checksum
// verification, capacity limits, buffered Puts and Sync, and that no
// temporary files are left behind.
package storetest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/store"
)

// Harness is one fresh store plus the hooks the suite needs to play a failing
// disk.
type Harness struct {
	Store store.Store
	// Corrupt flips one byte of shard name's data at offset off behind the
	// store's back, without touching its checksums.
	Corrupt func(name string, off int64) error
	// Leftovers lists temporary files the store has left behind; nil when
	// the store never makes any.
	Leftovers func() ([]string, error)
}

// Factory makes a fresh, empty store holding at most capacity bytes
// (0 = unlimited). It registers its own cleanup with t.
type Factory func(t *testing.T, capacity int64) Harness

const bs = store.BlockSize

// Run runs the whole suite against stores made by newStore.
func Run(t *testing.T, newStore Factory) {
	// open wraps the factory so every subtest ends by checking that nothing
	// temporary remains.
	open := func(t *testing.T, capacity int64) Harness {
		h := newStore(t, capacity)
		t.Cleanup(func() {
			if h.Leftovers == nil {
				return
			}
			left, err := h.Leftovers()
			if err != nil {
				t.Errorf("listing leftovers: %v", err)
			}
			if len(left) > 0 {
				t.Errorf("store left temporary files behind: %v", left)
			}
		})
		return h
	}
	tests := []struct {
		name string
		fn   func(t *testing.T, open func(*testing.T, int64) Harness)
	}{
		{"RoundTrip", testRoundTrip},
		{"RangedReads", testRangedReads},
		{"ReadPastEnd", testReadPastEnd},
		{"Corrupt", testCorrupt},
		{"NotFound", testNotFound},
		{"BadName", testBadName},
		{"Overwrite", testOverwrite},
		{"Delete", testDelete},
		{"Capacity", testCapacity},
		{"Walk", testWalk},
		{"Concurrent", testConcurrent},
		{"Closed", testClosed},
		{"Buffered", testBuffered},
		{"SyncNothing", testSyncNothing},
		{"SyncAfterDeleteAndReplace", testSyncAfterDeleteAndReplace},
		{"BufferedConcurrent", testBufferedConcurrent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, open) })
	}
}

func name(chunk uint64, index int) string { return fmt.Sprintf("%016x.%d", chunk, index) }

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func mustPut(t *testing.T, s store.Store, n string, data []byte) {
	t.Helper()
	sum, err := s.Put(n, data)
	if err != nil {
		t.Fatalf("Put(%s, %d bytes): %v", n, len(data), err)
	}
	if want := chunkserver.Sum(data); sum != want {
		t.Fatalf("Put(%s) sum = %016x, want %016x", n, sum, want)
	}
}

func testRoundTrip(t *testing.T, open func(*testing.T, int64) Harness) {
	s := open(t, 0).Store
	sizes := []int{0, 1, bs - 1, bs, bs + 1, 3*bs + 17, 4<<20 + 12345}
	for i, size := range sizes {
		n := name(uint64(i+1), i%6)
		data := randBytes(uint64(size), size)
		mustPut(t, s, n, data)
		info, err := s.Stat(n)
		if err != nil {
			t.Fatalf("Stat(%s): %v", n, err)
		}
		if info.Size != int64(size) || info.Sum != chunkserver.Sum(data) {
			t.Errorf("Stat(%s) = %+v, want size %d sum %016x", n, info, size, chunkserver.Sum(data))
		}
		got := make([]byte, size)
		m, err := s.ReadAt(n, got, 0)
		if err != nil || m != size {
			t.Fatalf("ReadAt(%s, %d bytes, 0) = %d, %v", n, size, m, err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("size %d: read bytes differ from written bytes", size)
		}
	}
	u, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, size := range sizes {
		total += size
	}
	if u.Shards != len(sizes) || u.Used < int64(total) {
		t.Errorf("Usage = %+v, want %d shards and at least %d bytes", u, len(sizes), total)
	}
}

func testRangedReads(t *testing.T, open func(*testing.T, int64) Harness) {
	s := open(t, 0).Store
	size := 3*bs + 100
	data := randBytes(7, size)
	n := name(0xabc, 2)
	mustPut(t, s, n, data)
	offs := []int{0, 1, bs - 1, bs, bs + 1, 2*bs - 1, 2 * bs, 3*bs - 1, 3 * bs, size - 1}
	lens := []int{0, 1, 2, bs - 1, bs, bs + 1, 2*bs + 1}
	for _, off := range offs {
		for _, l := range lens {
			p := make([]byte, l)
			got, err := s.ReadAt(n, p, int64(off))
			want := min(l, size-off)
			if want < l {
				if !errors.Is(err, io.EOF) {
					t.Errorf("ReadAt(off %d, len %d) past end: err = %v, want io.EOF", off, l, err)
				}
			} else if err != nil {
				t.Errorf("ReadAt(off %d, len %d): %v", off, l, err)
				continue
			}
			if got != want {
				t.Errorf("ReadAt(off %d, len %d) = %d bytes, want %d", off, l, got, want)
				continue
			}
			if !bytes.Equal(p[:got], data[off:off+got]) {
				t.Errorf("ReadAt(off %d, len %d): wrong bytes", off, l)
			}
		}
	}
}

func testReadPastEnd(t *testing.T, open func(*testing.T, int64) Harness) {
	s := open(t, 0).Store
	n := name(5, 0)
	mustPut(t, s, n, randBytes(1, 100))
	if got, err := s.ReadAt(n, make([]byte, 1), 100); got != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("ReadAt at end = %d, %v; want 0, io.EOF", got, err)
	}
	if got, err := s.ReadAt(n, make([]byte, 1), 5000); got != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("ReadAt beyond end = %d, %v; want 0, io.EOF", got, err)
	}
	if _, err := s.ReadAt(n, make([]byte, 1), -1); err == nil {
		t.Error("ReadAt at a negative offset succeeded")
	}
	empty := name(6, 0)
	mustPut(t, s, empty, nil)
	if got, err := s.ReadAt(empty, make([]byte, 1), 0); got != 0 || !errors.Is(err, io.EOF) {
		t.Errorf("ReadAt of an empty shard = %d, %v; want 0, io.EOF", got, err)
	}
}

func testCorrupt(t *testing.T, open func(*testing.T, int64) Harness) {
	for _, at := range []int{0, bs - 1, bs, bs + 500, 3*bs + 99} {
		t.Run(fmt.Sprint(at), func(t *testing.T) {
			h := open(t, 0)
			s := h.Store
			size := 3*bs + 100
			data := randBytes(3, size)
			n := name(0xc0, 1)
			mustPut(t, s, n, data)
			if err := h.Corrupt(n, int64(at)); err != nil {
				t.Fatalf("corrupting: %v", err)
			}
			bad := at / bs
			// The damaged block fails, alone or inside a larger range.
			for _, r := range [][2]int{{bad * bs, 1}, {at, 1}, {0, size}, {max(at-10, 0), 20}} {
				p := make([]byte, r[1])
				got, err := s.ReadAt(n, p, int64(r[0]))
				if !errors.Is(err, store.ErrCorrupt) {
					t.Errorf("ReadAt(off %d, len %d) over damaged byte %d: %d, %v; want ErrCorrupt", r[0], r[1], at, got, err)
				}
				if got != 0 {
					t.Errorf("ReadAt(off %d, len %d) returned %d bytes of a corrupt block", r[0], r[1], got)
				}
				if at >= r[0] && at < r[0]+r[1] && p[at-r[0]] == data[at]^0xff {
					t.Errorf("ReadAt(off %d, len %d) left the corrupt byte in the caller's buffer", r[0], r[1])
				}
			}
			// Blocks around it still read fine.
			for b := range 4 {
				if b == bad {
					continue
				}
				lo, hi := b*bs, min((b+1)*bs, size)
				p := make([]byte, hi-lo)
				if _, err := s.ReadAt(n, p, int64(lo)); err != nil {
					t.Errorf("block %d next to corrupt block %d: %v", b, bad, err)
				} else if !bytes.Equal(p, data[lo:hi]) {
					t.Errorf("block %d: wrong bytes", b)
				}
			}
			// Rewriting the shard heals it.
			mustPut(t, s, n, data)
			p := make([]byte, size)
			if _, err := s.ReadAt(n, p, 0); err != nil || !bytes.Equal(p, data) {
				t.Errorf("after rewrite: err %v, equal %v", err, bytes.Equal(p, data))
			}
		})
	}
}

func testNotFound(t *testing.T, open func(*testing.T, int64) Harness) {
	s := open(t, 0).Store
	n := name(0xdead, 3)
	if _, err := s.ReadAt(n, make([]byte, 10), 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ReadAt(missing) = %v, want ErrNotFound", err)
	}
	if _, err := s.Stat(n); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat(missing) = %v, want ErrNotFound", err)
	}
	if err := s.Delete(n); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Delete(missing) = %v, want ErrNotFound", err)
	}
}

func testBadName(t *testing.T, open func(*testing.T, int64) Harness) {
	s := open(t, 0).Store
	for _, bad := range []string{"", "..", "../x.1", "a/b.1", "ABC.1", "abc", "abc.", ".1", "abc.1.2", "abc.x", "abc.tmp.1"} {
		if _, err := s.Put(bad, []byte("x")); !errors.Is(err, store.ErrBadName) {
			t.Errorf("Put(%q) = %v, want ErrBadName", bad, err)
		}
		if _, err := s.ReadAt(bad, make([]byte, 1), 0); !errors.Is(err, store.ErrBadName) {
			t.Errorf("ReadAt(%q) = %v, want ErrBadName", bad, err)
		}
	}
}

func testOverwrite(t *testing.T, open func(*testing.T, int64) Harness) {
	s := open(t, 0).Store
	n := name(9, 0)
	mustPut(t, s, n, randBytes(1, 2*bs+5))
	u1, _ := s.Usage()
	second := randBytes(2, 300)
	mustPut(t, s, n, second)
	info, err := s.Stat(n)
	if err != nil || info.Size != 300 || info.Sum != chunkserver.Sum(second) {
		t.Fatalf("Stat after overwrite = %+v, %v", info, err)
	}
	p := make([]byte, 300)
	if _, err := s.ReadAt(n, p, 0); err != nil || !bytes.Equal(p, second) {
		t.Fatalf("ReadAt after overwrite: %v, equal %v", err, bytes.Equal(p, second))
	}
	u2, _ := s.Usage()
	if u2.Shards != 1 || u2.Used >= u1.Used {
		t.Errorf("Usage after overwriting with a smaller shard = %+v (before %+v)", u2, u1)
	}
}

func testDelete(t *testing.T, open func(*testing.T, int64) Harness) {
	s := open(t, 0).Store
	keep, gone := name(1, 0), name(1, 1)
	mustPut(t, s, keep, randBytes(1, 1000))
	before, _ := s.Usage()
	mustPut(t, s, gone, randBytes(2, 1000))
	if err := s.Delete(gone); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Stat(gone); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat after Delete = %v, want ErrNotFound", err)
	}
	if _, err := s.ReadAt(gone, make([]byte, 1), 0); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("ReadAt after Delete = %v, want ErrNotFound", err)
	}
	after, _ := s.Usage()
	if after.Shards != 1 || after.Used != before.Used {
		t.Errorf("Usage after Delete = %+v, want %+v", after, before)
	}
	if _, err := s.Stat(keep); err != nil {
		t.Errorf("the other shard: %v", err)
	}
}

func testCapacity(t *testing.T, open func(*testing.T, int64) Harness) {
	const capacity = 4 * bs
	s := open(t, capacity).Store
	first := name(1, 0)
	mustPut(t, s, first, randBytes(1, 2*bs))
	before, err := s.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if before.Capacity > capacity {
		t.Errorf("Usage.Capacity = %d, above the configured %d", before.Capacity, capacity)
	}
	tooBig := name(2, 0)
	if _, err := s.Put(tooBig, randBytes(2, 3*bs)); !errors.Is(err, store.ErrNoSpace) {
		t.Fatalf("Put over capacity = %v, want ErrNoSpace", err)
	}
	if _, err := s.Stat(tooBig); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat of the refused shard = %v, want ErrNotFound", err)
	}
	after, _ := s.Usage()
	if after != before {
		t.Errorf("Usage changed by a refused Put: %+v -> %+v", before, after)
	}
	// Freeing space makes room again.
	if err := s.Delete(first); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, tooBig, randBytes(2, 3*bs))
}

func testWalk(t *testing.T, open func(*testing.T, int64) Harness) {
	s := open(t, 0).Store
	want := map[string]chunkserver.ShardInfo{}
	for i := range 20 {
		n := name(uint64(100-i), i%6)
		data := randBytes(uint64(i), i*37)
		mustPut(t, s, n, data)
		want[n] = chunkserver.ShardInfo{Size: int64(len(data)), Sum: chunkserver.Sum(data)}
	}
	var names []string
	err := s.Walk(func(n string, info chunkserver.ShardInfo) error {
		names = append(names, n)
		if info != want[n] {
			t.Errorf("Walk gave %s %+v, want %+v", n, info, want[n])
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Walk: %v", err)
	}
	if len(names) != len(want) || !slices.IsSorted(names) {
		t.Errorf("Walk visited %d shards (sorted %v), want %d in order", len(names), slices.IsSorted(names), len(want))
	}
	stop := errors.New("stop")
	visits := 0
	if err := s.Walk(func(string, chunkserver.ShardInfo) error { visits++; return stop }); !errors.Is(err, stop) || visits != 1 {
		t.Errorf("Walk with a failing callback = %v after %d visits, want stop after 1", err, visits)
	}
	// Shards deleted during a walk are skipped, not reported as missing.
	seen := 0
	err = s.Walk(func(n string, _ chunkserver.ShardInfo) error {
		seen++
		if seen == 1 {
			for other := range want {
				if other != n {
					if err := s.Delete(other); err != nil {
						return err
					}
				}
			}
		}
		return nil
	})
	if err != nil || seen != 1 {
		t.Errorf("Walk while deleting = %v after %d visits, want nil after 1", err, seen)
	}
}

func testConcurrent(t *testing.T, open func(*testing.T, int64) Harness) {
	s := open(t, 0).Store
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 8 {
		wg.Go(func() {
			for i := range 8 {
				n := name(uint64(w), i)
				data := randBytes(uint64(w*100+i), bs+w*i)
				if _, err := s.Put(n, data); err != nil {
					errs <- err
					return
				}
				// A shared name written by everyone: last writer wins, never a mix.
				if _, err := s.Put(name(0xff, 0), data); err != nil {
					errs <- err
					return
				}
				p := make([]byte, len(data))
				if _, err := s.ReadAt(n, p, 0); err != nil || !bytes.Equal(p, data) {
					errs <- fmt.Errorf("read back %s: %v", n, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	info, err := s.Stat(name(0xff, 0))
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, info.Size)
	if _, err := s.ReadAt(name(0xff, 0), p, 0); err != nil || chunkserver.Sum(p) != info.Sum {
		t.Errorf("shared shard after concurrent overwrites: %v (sum match %v)", err, chunkserver.Sum(p) == info.Sum)
	}
	u, _ := s.Usage()
	if u.Shards != 8*8+1 {
		t.Errorf("Usage.Shards = %d, want %d", u.Shards, 8*8+1)
	}
}

func testClosed(t *testing.T, open func(*testing.T, int64) Harness) {
	s := open(t, 0).Store
	n := name(1, 0)
	mustPut(t, s, n, []byte("x"))
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.Put(n, []byte("y")); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Put after Close = %v, want ErrClosed", err)
	}
	if _, err := s.ReadAt(n, make([]byte, 1), 0); !errors.Is(err, store.ErrClosed) {
		t.Errorf("ReadAt after Close = %v, want ErrClosed", err)
	}
	if _, err := s.PutBuffered(n, []byte("y")); !errors.Is(err, store.ErrClosed) {
		t.Errorf("PutBuffered after Close = %v, want ErrClosed", err)
	}
	if err := s.Sync(); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Sync after Close = %v, want ErrClosed", err)
	}
}

func mustPutBuffered(t *testing.T, s store.Store, n string, data []byte) {
	t.Helper()
	sum, err := s.PutBuffered(n, data)
	if err != nil {
		t.Fatalf("PutBuffered(%s, %d bytes): %v", n, len(data), err)
	}
	if want := chunkserver.Sum(data); sum != want {
		t.Fatalf("PutBuffered(%s) sum = %016x, want %016x", n, sum, want)
	}
}

// checkShard reads shard n whole and compares it with data.
func checkShard(t *testing.T, s store.Store, n string, data []byte) {
	t.Helper()
	info, err := s.Stat(n)
	if err != nil {
		t.Fatalf("Stat(%s): %v", n, err)
	}
	if info.Size != int64(len(data)) || info.Sum != chunkserver.Sum(data) {
		t.Errorf("Stat(%s) = %+v, want size %d sum %016x", n, info, len(data), chunkserver.Sum(data))
	}
	p := make([]byte, len(data))
	if got, err := s.ReadAt(n, p, 0); (err != nil && !(errors.Is(err, io.EOF) && got == len(data))) || got != len(data) {
		t.Fatalf("ReadAt(%s) = %d, %v", n, got, err)
	}
	if !bytes.Equal(p, data) {
		t.Errorf("%s: read bytes differ from written bytes", n)
	}
}

// testBuffered: a buffered shard reads back at once, before any Sync, and
// after one.
func testBuffered(t *testing.T, open func(*testing.T, int64) Harness) {
	s := open(t, 0).Store
	sizes := []int{0, 1, bs, 3*bs + 17, 1 << 20}
	for i, size := range sizes {
		data := randBytes(uint64(size)+1, size)
		n := name(uint64(i+1), 0)
		mustPutBuffered(t, s, n, data)
		checkShard(t, s, n, data)
		// Ranged reads verify blocks of a buffered shard too.
		if size > bs {
			p := make([]byte, 10)
			if _, err := s.ReadAt(n, p, bs-5); err != nil || !bytes.Equal(p, data[bs-5:bs+5]) {
				t.Errorf("ranged read across a block boundary of buffered %s: %v", n, err)
			}
		}
	}
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	for i, size := range sizes {
		checkShard(t, s, name(uint64(i+1), 0), randBytes(uint64(size)+1, size))
	}
	u, err := s.Usage()
	if err != nil || u.Shards != len(sizes) {
		t.Errorf("Usage = %+v, %v; want %d shards", u, err, len(sizes))
	}
	// A second Sync with nothing new buffered is no error either.
	if err := s.Sync(); err != nil {
		t.Fatalf("second Sync: %v", err)
	}
}

// syncWithin calls Sync and fails the test if it takes longer than limit.
func syncWithin(t *testing.T, s store.Store, limit time.Duration) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Sync() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("Sync did not return within %v", limit)
		return nil
	}
}

// testSyncNothing: Sync with nothing buffered returns at once, also when
// every shard was stored with a plain (durable) Put.
func testSyncNothing(t *testing.T, open func(*testing.T, int64) Harness) {
	s := open(t, 0).Store
	if err := syncWithin(t, s, 5*time.Second); err != nil {
		t.Fatalf("Sync of an empty store: %v", err)
	}
	mustPut(t, s, name(1, 0), randBytes(1, 1000))
	if err := syncWithin(t, s, 5*time.Second); err != nil {
		t.Fatalf("Sync after a durable Put: %v", err)
	}
}

// testSyncAfterDeleteAndReplace: shards deleted, rewritten buffered or
// rewritten durably after their buffered Put are no error for Sync, and the
// newest bytes win.
func testSyncAfterDeleteAndReplace(t *testing.T, open func(*testing.T, int64) Harness) {
	s := open(t, 0).Store
	deleted, rebuffered, redurable, kept := name(1, 0), name(1, 1), name(1, 2), name(1, 3)
	for i, n := range []string{deleted, rebuffered, redurable, kept} {
		mustPutBuffered(t, s, n, randBytes(uint64(i), bs+i))
	}
	if err := s.Delete(deleted); err != nil {
		t.Fatal(err)
	}
	second := randBytes(10, 2*bs)
	mustPutBuffered(t, s, rebuffered, second)
	third := randBytes(11, 500)
	mustPut(t, s, redurable, third)
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync after deleting and replacing buffered shards: %v", err)
	}
	if _, err := s.Stat(deleted); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("Stat(deleted) = %v, want ErrNotFound", err)
	}
	checkShard(t, s, rebuffered, second)
	checkShard(t, s, redurable, third)
	checkShard(t, s, kept, randBytes(3, bs+3))
	// Deleting after the Sync and syncing again is fine too.
	if err := s.Delete(kept); err != nil {
		t.Fatal(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatalf("Sync after deleting a synced shard: %v", err)
	}
}

// testBufferedConcurrent runs buffered Puts, Deletes and Syncs at once (run
// it with -race); every shard left must read back whole.
func testBufferedConcurrent(t *testing.T, open func(*testing.T, int64) Harness) {
	s := open(t, 0).Store
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for w := range 6 {
		wg.Go(func() {
			for i := range 10 {
				n := name(uint64(w+1), i)
				data := randBytes(uint64(w*100+i), bs/2+w*i)
				if _, err := s.PutBuffered(n, data); err != nil {
					errs <- err
					return
				}
				// Everyone rewrites and deletes one shared name too.
				if _, err := s.PutBuffered(name(0xff, 0), data); err != nil {
					errs <- err
					return
				}
				if i%3 == 0 {
					if err := s.Delete(name(0xff, 0)); err != nil && !errors.Is(err, store.ErrNotFound) {
						errs <- err
						return
					}
				}
				if i%4 == w%4 {
					if err := s.Sync(); err != nil {
						errs <- fmt.Errorf("Sync: %w", err)
						return
					}
				}
				if i%2 == 1 {
					if err := s.Delete(name(uint64(w+1), i-1)); err != nil {
						errs <- err
						return
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if err := s.Sync(); err != nil {
		t.Fatalf("final Sync: %v", err)
	}
	for w := range 6 {
		for i := 1; i < 10; i += 2 {
			checkShard(t, s, name(uint64(w+1), i), randBytes(uint64(w*100+i), bs/2+w*i))
		}
	}
}
