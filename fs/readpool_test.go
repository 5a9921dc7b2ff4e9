package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/metaserver"
)

// Block buffers are pooled and reused once no reader and no cache entry
// refers to them. Readers racing over a cache too small for their blocks,
// some giving up part way, must still each get exactly the file's bytes: a
// buffer recycled while still referenced would show up as foreign bytes.
func TestPooledBlocksNeverReusedWhileReferenced(t *testing.T) {
	const chunk = 1 << 20 // eight blocks: runs of several blocks share a slab
	const size = 3*chunk + 12345
	cl := newCluster(t, 6)
	shards := chunkserver.NewClient(nil)
	for _, s := range cl.servers {
		shards.Attach(s.addr(), &attachedFake{s: s})
	}
	opt := Options{ChunkSize: chunk, CacheBytes: 5 * blockSize, Logger: discardLogger()}
	want := writeRandom(t, New(cl.meta, shards, opt), "/f", size)
	a, err := cl.meta.ResolvePath(context.Background(), "/f")
	if err != nil {
		t.Fatal(err)
	}
	cl.meta.mu.Lock()
	exts := append([]metaserver.Extent(nil), cl.meta.inodes[a.Ino].Extents...)
	cl.meta.mu.Unlock()
	c := New(cl.meta, shards, opt)

	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 7))
			if g%4 == 3 {
				// Readers that give up part way: the blocks they
				// waited for must stay intact for the others.
				for range 60 {
					e := exts[r.IntN(len(exts))]
					lo := r.Int64N(int64(e.Len))
					n := 1 + r.Int64N(min(int64(e.Len)-lo, 3*blockSize))
					buf := make([]byte, n)
					ctx, cancel := context.WithTimeout(context.Background(), time.Duration(r.IntN(300))*time.Microsecond)
					err := c.readChunkData(ctx, e.Chunk, buf, int64(e.ChunkOff)+lo, n)
					cancel()
					off := int64(e.Off) + lo
					switch {
					case errors.Is(err, context.DeadlineExceeded):
					case err != nil:
						errs <- err
						return
					case !bytes.Equal(buf, want[off:off+n]):
						errs <- fmt.Errorf("chunk read [%d,%d) differs at %d", off, off+n, firstDiff(buf, want[off:off+n]))
						return
					}
				}
				return
			}
			f, err := c.OpenPath(context.Background(), "/f")
			if err != nil {
				errs <- err
				return
			}
			defer f.Close()
			for range 60 {
				off := r.Int64N(size)
				n := 1 + r.Int64N(min(size-off, 3*blockSize))
				buf := make([]byte, n)
				if _, err := f.ReadAt(buf, off); err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(buf, want[off:off+n]) {
					errs <- fmt.Errorf("read [%d,%d) differs at %d", off, off+n, firstDiff(buf, want[off:off+n]))
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if used, _ := c.cache.stats(); used > opt.CacheBytes {
		t.Errorf("cache holds %d bytes, bound %d", used, opt.CacheBytes)
	}
}

// A slab goes back to its pool after its last reference, and only then.
func TestSlabReleasedAfterLastReference(t *testing.T) {
	s := getSlab(3 * blockSize)
	// A new slab holds one block more than the largest power of two in it;
	// one from the pool holds at least four.
	if len(s.buf) != 3*blockSize || cap(s.buf)/blockSize < 1<<s.class || s.class < 1 {
		t.Fatalf("slab of 3 blocks: len %d cap %d class %d", len(s.buf), cap(s.buf), s.class)
	}
	s.ref()
	s.release()
	if got := s.refs.Load(); got != 1 {
		t.Fatalf("after ref and release: %d references, want 1", got)
	}
	s.release()
	if got := s.refs.Load(); got != 0 {
		t.Fatalf("after the last release: %d references, want 0", got)
	}
	big := getSlab(blockSize << (maxSlabClass + 1))
	if big.class != -1 || len(big.buf) != blockSize<<(maxSlabClass+1) {
		t.Fatalf("oversize slab: class %d len %d", big.class, len(big.buf))
	}
	big.release()
}
