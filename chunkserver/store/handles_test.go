package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"testing"
)

func openTestDisk(t *testing.T, limit int) *Disk {
	t.Helper()
	d, err := OpenDisk(t.TempDir(), 0)
	if err != nil {
		t.Fatalf("OpenDisk: %v", err)
	}
	d.handles = newHandleCache(limit)
	t.Cleanup(func() { d.Close() })
	return d
}

func shardName(i int) string { return fmt.Sprintf("%016x.0", i) }

func mustRead(t *testing.T, d *Disk, name string, want []byte) {
	t.Helper()
	got := make([]byte, len(want))
	if _, err := d.ReadAt(name, got, 0); err != nil {
		t.Fatalf("ReadAt %s: %v", name, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("ReadAt %s: got %.16q..., want %.16q...", name, got, want)
	}
}

// cached returns the file cached for name, or nil.
func cached(d *Disk, name string) *os.File {
	d.handles.mu.Lock()
	defer d.handles.mu.Unlock()
	if el, ok := d.handles.byName[name]; ok {
		return el.Value.(*shardHandle).f
	}
	return nil
}

func TestHandleCacheServesOverwrittenShard(t *testing.T) {
	d := openTestDisk(t, 8)
	name := shardName(1)
	old := bytes.Repeat([]byte("old "), 50_000)
	if _, err := d.Put(name, old); err != nil {
		t.Fatal(err)
	}
	mustRead(t, d, name, old)
	f := cached(d, name)
	if f == nil {
		t.Fatal("no handle cached after a read")
	}
	mustRead(t, d, name, old) // served from the cache
	if cached(d, name) != f {
		t.Fatal("second read reopened the file")
	}

	neu := bytes.Repeat([]byte("new!"), 30_000)
	if _, err := d.Put(name, neu); err != nil {
		t.Fatal(err)
	}
	if cached(d, name) != nil {
		t.Fatal("Put left the old file's handle cached")
	}
	if _, err := f.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("old handle after Put: Stat err = %v, want os.ErrClosed", err)
	}
	mustRead(t, d, name, neu)
}

func TestHandleCacheRefusesStaleGeneration(t *testing.T) {
	// A read that opened the old file and cached it after a Put replaced
	// the shard (a race invalidate cannot see) must not serve it again.
	d := openTestDisk(t, 8)
	name := shardName(2)
	old := bytes.Repeat([]byte{1}, 4096)
	if _, err := d.Put(name, old); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(d.Path(name))
	if err != nil {
		t.Fatal(err)
	}
	e, _ := d.entry(name)
	neu := bytes.Repeat([]byte{2}, 4096)
	if _, err := d.Put(name, neu); err != nil {
		t.Fatal(err)
	}
	d.handles.release(d.cache(name, e.gen, f)) // the late insert
	if cached(d, name) != nil {
		t.Fatal("a handle opened before the Put stayed cached")
	}
	mustRead(t, d, name, neu)
	if _, err := f.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("stale handle: Stat err = %v, want os.ErrClosed", err)
	}
}

func TestHandleCacheDeleteAndClose(t *testing.T) {
	d := openTestDisk(t, 8)
	data := bytes.Repeat([]byte("x"), 1000)
	for i := range 2 {
		if _, err := d.Put(shardName(i), data); err != nil {
			t.Fatal(err)
		}
		mustRead(t, d, shardName(i), data)
	}
	f0, f1 := cached(d, shardName(0)), cached(d, shardName(1))
	if err := d.Delete(shardName(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := f0.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("handle after Delete: Stat err = %v, want os.ErrClosed", err)
	}
	if _, err := d.ReadAt(shardName(0), make([]byte, 10), 0); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ReadAt after Delete: %v, want ErrNotFound", err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := f1.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("handle after Close: Stat err = %v, want os.ErrClosed", err)
	}
	if _, err := d.ReadAt(shardName(1), make([]byte, 10), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadAt after Close: %v, want ErrClosed", err)
	}
}

func TestHandleCacheBoundedLRU(t *testing.T) {
	const limit = 4
	d := openTestDisk(t, limit)
	data := bytes.Repeat([]byte("y"), 100)
	for i := range 10 {
		if _, err := d.Put(shardName(i), data); err != nil {
			t.Fatal(err)
		}
	}
	mustRead(t, d, shardName(0), data)
	first := cached(d, shardName(0))
	for i := 1; i < 10; i++ {
		mustRead(t, d, shardName(i), data)
		mustRead(t, d, shardName(0), data) // keep shard 0 the most recent
	}
	if n := d.handles.lru.Len(); n != limit || len(d.handles.byName) != limit {
		t.Fatalf("cache holds %d handles (%d names), want %d", n, len(d.handles.byName), limit)
	}
	if cached(d, shardName(0)) != first {
		t.Fatal("the most recently used handle was evicted")
	}
	if cached(d, shardName(1)) != nil {
		t.Fatal("the least recently used handle is still cached")
	}
}

func TestHandleCacheConcurrentReadersAndPuts(t *testing.T) {
	// Readers share handles while Puts replace the shards and the small
	// cache evicts: every read must return one whole version of a shard.
	d := openTestDisk(t, 2)
	const shards, size = 4, 3 * BlockSize
	version := func(i, v int) []byte { return bytes.Repeat([]byte{byte(16*i + v)}, size) }
	for i := range shards {
		if _, err := d.Put(shardName(i), version(i, 0)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for r := range 4 {
		wg.Go(func() {
			p := make([]byte, size)
			for k := range 200 {
				i := (r + k) % shards
				if _, err := d.ReadAt(shardName(i), p, 0); err != nil {
					errs <- err
					return
				}
				if v := p[0] - byte(16*i); v > 15 || !bytes.Equal(p, version(i, int(v))) {
					errs <- fmt.Errorf("shard %d: mixed or foreign bytes", i)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for v := 1; v < 16; v++ {
			for i := range shards {
				if _, err := d.Put(shardName(i), version(i, v)); err != nil {
					errs <- err
					return
				}
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestHandleCacheLateInsertAfterDelete(t *testing.T) {
	// A read that opened the file just before a Delete unlinked it must
	// not leave the handle cached, holding the deleted file's blocks.
	d := openTestDisk(t, 8)
	name := shardName(3)
	if _, err := d.Put(name, []byte("doomed")); err != nil {
		t.Fatal(err)
	}
	e, _ := d.entry(name)
	f, err := os.Open(d.Path(name))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Delete(name); err != nil {
		t.Fatal(err)
	}
	d.handles.release(d.cache(name, e.gen, f))
	if cached(d, name) != nil {
		t.Fatal("a handle to a deleted shard stayed cached")
	}
	if _, err := f.Stat(); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("deleted shard's handle: Stat err = %v, want os.ErrClosed", err)
	}
}
