package raftlog

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/dockyard/dockyard/internal/testwait"
)

func storeDeferred(t testing.TB, s *Store, logs []*raft.Log) {
	t.Helper()
	if err := s.StoreLogsDeferred(logs); err != nil {
		t.Fatalf("StoreLogsDeferred %d..%d: %v", logs[0].Index, logs[len(logs)-1].Index, err)
	}
}

func waitDurable(t testing.TB, s *Store, idx uint64) {
	t.Helper()
	cancel := make(chan struct{})
	timer := time.AfterFunc(10*time.Second, func() { close(cancel) })
	defer timer.Stop()
	if err := s.WaitDurable(idx, cancel); err != nil {
		t.Fatalf("WaitDurable(%d): %v (durable %d)", idx, err, s.Durable())
	}
}

func TestDeferredAppendReadableAtOnceDurableSoon(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 1 << 20}
	s := open(t, dir, opts)
	want := entries(1, 40, 1)
	store(t, s, want[:10])
	if d := s.Durable(); d != 10 {
		t.Fatalf("Durable after a synced append = %d, want 10", d)
	}
	for i := 10; i < len(want); i += 6 {
		storeDeferred(t, s, want[i:min(i+6, len(want))])
	}
	// Readable before anyone waited for the sync: replication reads it.
	checkRange(t, s, want)
	waitDurable(t, s, 40)
	if d := s.Durable(); d != 40 {
		t.Fatalf("Durable = %d, want 40", d)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, opts)
	checkRange(t, s, want)
	if d := s.Durable(); d != 40 {
		t.Fatalf("Durable after reopen = %d, want 40", d)
	}
}

func TestDeferredAppendAcrossSegments(t *testing.T) {
	dir := t.TempDir()
	opts := Options{SegmentSize: 4096}
	s := open(t, dir, opts)
	want := entries(1, 300, 1)
	for i := 0; i < len(want); i += 9 {
		storeDeferred(t, s, want[i:min(i+9, len(want))])
	}
	if n := len(segFiles(t, dir)); n < 3 {
		t.Fatalf("%d segments; the test wants rollovers", n)
	}
	waitDurable(t, s, 300)
	checkRange(t, s, want)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir, opts)
	checkRange(t, s, want)
}

func TestDeleteTailLowersDurable(t *testing.T) {
	s := open(t, t.TempDir(), Options{SegmentSize: 1 << 20})
	storeDeferred(t, s, entries(1, 20, 1))
	if err := s.DeleteRange(11, 20); err != nil {
		t.Fatal(err)
	}
	if d := s.Durable(); d != 10 {
		t.Fatalf("Durable after cutting 11..20 = %d, want 10", d)
	}
	// A new leader's entries take the indexes again; they are durable
	// only once synced, not because the old ones were.
	want := append(entries(1, 10, 1), entries(11, 15, 2)...)
	storeDeferred(t, s, want[10:])
	waitDurable(t, s, 15)
	checkRange(t, s, want)

	if err := s.DeleteRange(1, 15); err != nil {
		t.Fatal(err)
	}
	if d := s.Durable(); d != 0 {
		t.Fatalf("Durable of an emptied log = %d, want 0", d)
	}
	store(t, s, entries(100, 104, 3))
	if d := s.Durable(); d != 104 {
		t.Fatalf("Durable after a synced append to an emptied log = %d, want 104", d)
	}
}

func TestWaitDurableCanceledAndClosed(t *testing.T) {
	s := open(t, t.TempDir(), Options{})
	store(t, s, entries(1, 5, 1))
	cancel := make(chan struct{})
	close(cancel)
	if err := s.WaitDurable(3, cancel); err != nil {
		t.Fatalf("WaitDurable of a durable index: %v", err)
	}
	if err := s.WaitDurable(6, cancel); !errors.Is(err, ErrCanceled) {
		t.Fatalf("WaitDurable(6) canceled: %v, want ErrCanceled", err)
	}
	done := make(chan error, 1)
	go func() { done <- s.WaitDurable(6, nil) }()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("WaitDurable across Close: %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitDurable still blocked after Close")
	}
}

// TestDeferredAppendsWithWaiters runs a leader's pattern: one appender,
// readers waiting for what they apply to become durable.
func TestDeferredAppendsWithWaiters(t *testing.T) {
	s := open(t, t.TempDir(), Options{SegmentSize: 8192})
	const n = 600
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for idx := uint64(w + 1); idx <= n; idx += 37 {
				waitDurable(t, s, idx)
				var l raft.Log
				if err := s.GetLog(idx, &l); err != nil || !sameLog(&l, entry(idx, 1)) {
					t.Errorf("GetLog(%d) after WaitDurable: %v", idx, err)
					return
				}
			}
		}()
	}
	for i := uint64(1); i <= n; i += 3 {
		storeDeferred(t, s, entries(i, i+2, 1))
	}
	wg.Wait()
	waitDurable(t, s, n)
	if d := s.Durable(); d != n {
		t.Fatalf("Durable = %d, want %d", d, n)
	}
}

// SyncDelay spaces the syncs of dense deferred appends, a waiter cuts the
// wait short, and sparse appends sync at once.
func TestSyncDelay(t *testing.T) {
	// Sparse: each append is synced at once, even within the delay.
	s := open(t, t.TempDir(), Options{SegmentSize: 1 << 20, SyncDelay: time.Hour})
	store(t, s, entries(1, 1, 1)) // the first segment comes with a synced append
	storeDeferred(t, s, entries(2, 2, 1))
	waitFor(t, "entry 2 synced without a waiter", func() bool { return s.Durable() == 2 })
	storeDeferred(t, s, entries(3, 3, 1))
	waitFor(t, "entry 3 synced without a waiter", func() bool { return s.Durable() == 3 })

	// Dense: a burst makes the average gap far shorter than the delay.
	for i := uint64(4); i <= 20; i++ {
		storeDeferred(t, s, entries(i, i, 1))
	}
	waitDurable(t, s, 20) // a sync has just started
	storeDeferred(t, s, entries(21, 23, 1))
	time.Sleep(30 * time.Millisecond)
	if d := s.Durable(); d != 20 {
		t.Fatalf("Durable = %d within the sync delay of dense appends, want 20 (the next sync waits)", d)
	}
	start := time.Now()
	waitDurable(t, s, 23)
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("WaitDurable took %v: a waiter must start the delayed sync", el)
	}

	// Dense without a waiter: the delayed sync still comes, once the delay
	// is over.
	s2 := open(t, t.TempDir(), Options{SegmentSize: 1 << 20, SyncDelay: 50 * time.Millisecond})
	store(t, s2, entries(1, 1, 1))
	for i := uint64(2); i <= 30; i++ {
		storeDeferred(t, s2, entries(i, i, 1))
	}
	waitFor(t, "entries up to 30 synced after the delay", func() bool { return s2.Durable() == 30 })
}

// waitFor polls cond until it holds or the deadline passes.
var waitFor = testwait.For
