package store

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gateFlusher is a flusher whose flushes block until released, so a test
// decides when each round ends.
type gateFlusher struct {
	started chan int     // receives the number of each flush as it starts
	release chan error   // each flush returns the next value sent here
	n       atomic.Int32 // flushes started
	closed  atomic.Bool
}

func newGateFlusher() *gateFlusher {
	return &gateFlusher{started: make(chan int, 16), release: make(chan error)}
}

func (g *gateFlusher) flush() error {
	g.started <- int(g.n.Add(1))
	return <-g.release
}

func (g *gateFlusher) close() error { g.closed.Store(true); return nil }

func waitStarted(t *testing.T, f *gateFlusher, want int) {
	t.Helper()
	select {
	case n := <-f.started:
		if n != want {
			t.Fatalf("flush %d started, want %d", n, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("flush %d never started", want)
	}
}

// waitAsync runs g.wait in a goroutine and returns where its result arrives.
func waitAsync(g *syncGroup) <-chan error {
	ch := make(chan error, 1)
	go func() { ch <- g.wait() }()
	return ch
}

func expectPending(t *testing.T, ch <-chan error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		t.Fatalf("%s returned (%v) before its flush finished", what, err)
	case <-time.After(50 * time.Millisecond):
	}
}

func expectDone(t *testing.T, ch <-chan error, want error, what string) {
	t.Helper()
	select {
	case err := <-ch:
		if !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Fatalf("%s: %v, want %v", what, err, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("%s never returned", what)
	}
}

// A caller arriving while a flush runs may have written after that flush
// began, so only the next flush may release it; everyone who arrived during
// one flush shares the next.
func TestSyncGroupWaitsForAFlushStartedAfterIt(t *testing.T) {
	f := newGateFlusher()
	g := &syncGroup{f: f}
	first := waitAsync(g)
	waitStarted(t, f, 1)
	var late []<-chan error
	for range 5 {
		late = append(late, waitAsync(g))
	}
	expectPending(t, first, "first waiter")
	f.release <- nil // flush 1 ends
	expectDone(t, first, nil, "first waiter")
	waitStarted(t, f, 2)
	for _, ch := range late {
		expectPending(t, ch, "waiter arriving during flush 1")
	}
	f.release <- nil // flush 2 ends
	for _, ch := range late {
		expectDone(t, ch, nil, "waiter arriving during flush 1")
	}
	if n := f.n.Load(); n != 2 {
		t.Fatalf("%d flushes for 6 waiters, want 2", n)
	}
}

// A failed flush fails exactly the waiters it was meant to cover; the next
// round is unaffected.
func TestSyncGroupFlushError(t *testing.T) {
	f := newGateFlusher()
	g := &syncGroup{f: f}
	boom := errors.New("device gone")
	a := waitAsync(g)
	waitStarted(t, f, 1)
	b := waitAsync(g)
	f.release <- boom
	expectDone(t, a, boom, "waiter of the failed flush")
	waitStarted(t, f, 2)
	f.release <- nil
	expectDone(t, b, nil, "waiter of the next flush")
}

func TestSyncGroupConcurrentWaiters(t *testing.T) {
	var flushes atomic.Int32
	g := &syncGroup{f: funcFlusher(func() error {
		flushes.Add(1)
		time.Sleep(time.Millisecond) // a flush takes a while, so waiters pile up
		return nil
	})}
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for range 10 {
				if err := g.wait(); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if n := flushes.Load(); n >= 640 {
		t.Fatalf("%d flushes for 640 waits: nothing was batched", n)
	}
}

type funcFlusher func() error

func (f funcFlusher) flush() error { return f() }
func (f funcFlusher) close() error { return nil }

// Stores on one file system share a group, which lives while any is open.
func TestDiskStoresShareAGroup(t *testing.T) {
	if !groupCommit {
		t.Skip("no group commit on this platform")
	}
	base := t.TempDir()
	a, err := OpenDisk(filepath.Join(base, "a"), 0, WithGroupCommit())
	if err != nil {
		t.Fatal(err)
	}
	b, err := OpenDisk(filepath.Join(base, "b"), 0, WithGroupCommit())
	if err != nil {
		t.Fatal(err)
	}
	if a.group == nil || a.group != b.group {
		t.Fatalf("stores on one file system have groups %p and %p, want one shared", a.group, b.group)
	}
	g := a.group
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil { // a second Close must not drop b's reference
		t.Fatal(err)
	}
	if _, err := b.Put("00000000000000aa.0", []byte("still flushing")); err != nil {
		t.Fatalf("Put on the store still open: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	groups.Lock()
	left := groups.m[g.key]
	groups.Unlock()
	if left != nil {
		t.Fatal("group still registered after its last store closed")
	}
	p, err := OpenDisk(filepath.Join(base, "c"), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.group != nil {
		t.Fatal("a store opened without WithGroupCommit joined a group")
	}
}

// A Put whose data flush fails stores nothing and leaves no file behind; one
// whose rename flush fails is not acknowledged either.
func TestDiskPutFlushFailure(t *testing.T) {
	if !groupCommit {
		t.Skip("no group commit on this platform")
	}
	d := openTestDisk(t, maxOpenShards)
	f := newGateFlusher()
	d.groupCommit, d.group = true, &syncGroup{f: f}
	t.Cleanup(func() { d.group = nil })
	boom := errors.New("writeback failed")

	done := make(chan error, 1)
	go func() { _, err := d.Put("00000000000000bb.0", []byte("lost")); done <- err }()
	waitStarted(t, f, 1)
	f.release <- boom
	expectDone(t, done, boom, "Put with a failed data flush")
	if _, err := d.Stat("00000000000000bb.0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat after the failed Put: %v, want ErrNotFound", err)
	}
	assertNoTemp(t, d)

	go func() { _, err := d.Put("00000000000000cc.0", []byte("unconfirmed")); done <- err }()
	waitStarted(t, f, 2)
	f.release <- nil // data flushed, then renamed
	waitStarted(t, f, 3)
	f.release <- boom // the rename's flush fails
	expectDone(t, done, boom, "Put with a failed rename flush")
	if _, err := d.Stat("00000000000000cc.0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat after the unconfirmed Put: %v, want ErrNotFound", err)
	}
	if _, err := os.Stat(d.Path("00000000000000cc.0")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the unconfirmed shard's file is still there: %v", err)
	}
	if u, err := d.Usage(); err != nil || u.Used != 0 || u.Shards != 0 {
		t.Fatalf("usage after two failed Puts: %+v, %v; want nothing used", u, err)
	}
	assertNoTemp(t, d)
}

func assertNoTemp(t *testing.T, d *Disk) {
	t.Helper()
	err := filepath.WalkDir(d.dir, func(path string, e os.DirEntry, err error) error {
		if err == nil && strings.Contains(e.Name(), tmpMarker) {
			t.Errorf("temporary file left behind: %s", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}
