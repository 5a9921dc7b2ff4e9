package fs

import (
	"container/list"
	"math/bits"
	"sync"
	"sync/atomic"

	"github.com/dockyard/dockyard/metaserver"
)

// The block cache holds decoded chunk data in blockSize pieces, keyed by chunk
// id. Chunks are immutable (every write makes new chunks), so an entry can
// never go stale: close-to-open consistency comes from Open fetching fresh
// extents, not from invalidating this cache.

type blockKey struct {
	chunk metaserver.ChunkID
	idx   int64
}

// flight is one fetch in progress; readers needing one of its blocks wait for
// it instead of fetching the same bytes again.
type flight struct {
	done chan struct{}
	data []byte // the block, valid after done when err == nil
	slab *slab  // holds data; each waiter is given a reference to it
	err  error
	// waiters counts the readers that will use data (under blockCache.mu):
	// finish takes a slab reference for each of them.
	waiters int32
}

// A slab is a pooled buffer holding one fetched run of blocks. Fetching into
// fresh buffers cost a large share of the read path's CPU (allocating and
// zeroing every byte before the shards overwrite it), so slabs are reused.
// A slab goes back to its pool only when nothing refers to any of its blocks:
// it is reference counted, with one reference for the fetch filling it, one
// for each of its blocks in the cache, and one for each reader copying out of
// it. References are taken under blockCache.mu, so a block seen in the cache
// or in a finished flight cannot be recycled before its reader has its own.
type slab struct {
	buf []byte
	// class is the pool the slab goes back to: slabs in pool k hold at
	// least 1<<k blocks. -1 means not pooled.
	class int
	refs  atomic.Int32
}

// Slab pools are kept by powers of two of blocks, up to 512 blocks (64 MiB;
// a run never spans more than one chunk); slabs of 1024 blocks or more are
// not pooled. A new
// slab is made of the exact size asked for, so reads never allocate more
// than they fetch, and is filed under the largest power of two it holds.
const maxSlabClass = 9

var slabPools [maxSlabClass + 1]sync.Pool

// getSlab returns a slab of n bytes holding one reference. Its contents are
// whatever the last user left: the caller must overwrite all n bytes before
// anyone reads them.
func getSlab(n int64) *slab {
	want := bits.Len64(uint64((n+blockSize-1)/blockSize - 1)) // ceil(log2(blocks))
	var s *slab
	if want <= maxSlabClass {
		if v := slabPools[want].Get(); v != nil {
			s = v.(*slab)
			s.buf = s.buf[:n]
		}
	}
	if s == nil {
		// floor(log2(whole blocks held)); -1 for less than one block.
		class := bits.Len64(uint64(n/blockSize)) - 1
		if class > maxSlabClass {
			class = -1
		}
		s = &slab{buf: make([]byte, n), class: class}
	}
	s.refs.Store(1)
	return s
}

// ref takes one more reference; a nil slab (a block not from a pool) needs
// none.
func (s *slab) ref() {
	if s != nil {
		s.refs.Add(1)
	}
}

// release drops one reference and recycles the slab after the last one.
func (s *slab) release() {
	if s == nil || s.refs.Add(-1) != 0 || s.class < 0 {
		return
	}
	slabPools[s.class].Put(s)
}

type blockCache struct {
	mu      sync.Mutex
	max     int64
	used    int64
	lru     *list.List // of *cacheEntry, most recently used at the front
	items   map[blockKey]*list.Element
	flights map[blockKey]*flight
	// held, when set, follows used, summed over the caches of the clients
	// sharing Counters (for metrics, read without mu).
	held *atomic.Int64

	// Read-ahead in flight, over all files (startPrefetch).
	raMu    sync.Mutex
	raCond  *sync.Cond
	raBytes int64
	raPeak  int64 // the most raBytes ever was, for tests
}

type cacheEntry struct {
	key  blockKey
	data []byte
	slab *slab // the entry holds one reference to it
}

func newBlockCache(max int64) *blockCache {
	bc := &blockCache{max: max, lru: list.New(), items: map[blockKey]*list.Element{}, flights: map[blockKey]*flight{}}
	bc.raCond = sync.NewCond(&bc.raMu)
	return bc
}

// lookupLocked returns a cached block (marking it recently used) and, when
// ref is set, a reference to its slab for the caller to release after use.
func (bc *blockCache) lookupLocked(k blockKey, ref bool) ([]byte, *slab, bool) {
	el, ok := bc.items[k]
	if !ok {
		return nil, nil, false
	}
	bc.lru.MoveToFront(el)
	e := el.Value.(*cacheEntry)
	if ref {
		e.slab.ref()
	}
	return e.data, e.slab, true
}

// putLocked caches data, held in slab s, taking a reference to s if it does.
func (bc *blockCache) putLocked(k blockKey, data []byte, s *slab) {
	if bc.max <= 0 || int64(len(data)) > bc.max {
		return
	}
	if el, ok := bc.items[k]; ok {
		bc.lru.MoveToFront(el)
		return
	}
	s.ref()
	bc.items[k] = bc.lru.PushFront(&cacheEntry{key: k, data: data, slab: s})
	bc.used += int64(len(data))
	if bc.held != nil {
		bc.held.Add(int64(len(data)))
	}
	for bc.used > bc.max {
		bc.removeLocked(bc.lru.Back())
	}
}

// removeLocked drops a cache entry and its reference to its slab.
func (bc *blockCache) removeLocked(el *list.Element) {
	e := el.Value.(*cacheEntry)
	bc.lru.Remove(el)
	delete(bc.items, e.key)
	bc.used -= int64(len(e.data))
	if bc.held != nil {
		bc.held.Add(-int64(len(e.data)))
	}
	e.slab.release()
}

// finish completes flights with the fetched blocks, held in slab s, (or the
// error) and caches the blocks. Every waiter of a flight gets a reference to
// s; the caller keeps its own and releases it afterwards.
func (bc *blockCache) finish(keys []blockKey, fl []*flight, blocks [][]byte, s *slab, err error) {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	for i, k := range keys {
		if err == nil {
			fl[i].data, fl[i].slab = blocks[i], s
			if s != nil {
				s.refs.Add(fl[i].waiters)
			}
			bc.putLocked(k, blocks[i], s)
		} else {
			fl[i].err = err
		}
		delete(bc.flights, k)
		close(fl[i].done)
	}
}

// leave gives back what a reader holds when it stops early: its references
// to the slabs it took (slabs, nil entries allowed) and its places among the
// waiters of the flights it has not consumed (waits, nil entries allowed).
// A flight that finished meanwhile already gave it a reference, which is
// released instead.
func (bc *blockCache) leave(slabs []*slab, waits []*flight) {
	for _, s := range slabs {
		s.release()
	}
	bc.mu.Lock()
	defer bc.mu.Unlock()
	for _, fl := range waits {
		if fl == nil {
			continue
		}
		select {
		case <-fl.done:
			if fl.err == nil {
				fl.slab.release()
			}
		default:
			fl.waiters--
		}
	}
}

// stats reports the bytes and blocks held (for tests and metrics).
func (bc *blockCache) stats() (bytes int64, blocks int) {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	return bc.used, len(bc.items)
}

// startPrefetch waits until n more bytes of read-ahead may be in flight: at
// most half the cache's size over all files, so many sequential readers at
// once cannot hold more memory than that outside the cache. One fetch is
// always let through, whatever its size.
func (bc *blockCache) startPrefetch(n int64) {
	bc.raMu.Lock()
	defer bc.raMu.Unlock()
	for bc.raBytes > 0 && bc.raBytes+n > bc.max/2 {
		bc.raCond.Wait()
	}
	bc.raBytes += n
	bc.raPeak = max(bc.raPeak, bc.raBytes)
}

// endPrefetch returns what startPrefetch took.
func (bc *blockCache) endPrefetch(n int64) {
	bc.raMu.Lock()
	bc.raBytes -= n
	bc.raMu.Unlock()
	bc.raCond.Broadcast()
}

// dropRead removes from the cache the blocks wholly inside the chunk ranges
// of exts, which a reader that keeps them has just read (ReadDataKept).
// Readers holding references keep their blocks until they let go.
func (bc *blockCache) dropRead(exts []metaserver.Extent) {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	for _, e := range exts {
		lo, hi := int64(e.ChunkOff), int64(e.ChunkOff+e.Len)
		for i := (lo + blockSize - 1) / blockSize; (i+1)*blockSize <= hi; i++ {
			if el, ok := bc.items[blockKey{e.Chunk, i}]; ok {
				bc.removeLocked(el)
			}
		}
	}
}
