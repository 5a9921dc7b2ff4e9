package fs

import (
	"container/list"
	"sync"

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
	err  error
}

type blockCache struct {
	mu      sync.Mutex
	max     int64
	used    int64
	lru     *list.List // of *cacheEntry, most recently used at the front
	items   map[blockKey]*list.Element
	flights map[blockKey]*flight
}

type cacheEntry struct {
	key  blockKey
	data []byte
}

func newBlockCache(max int64) *blockCache {
	return &blockCache{max: max, lru: list.New(), items: map[blockKey]*list.Element{}, flights: map[blockKey]*flight{}}
}

// lookupLocked returns a cached block (marking it recently used).
func (bc *blockCache) lookupLocked(k blockKey) ([]byte, bool) {
	el, ok := bc.items[k]
	if !ok {
		return nil, false
	}
	bc.lru.MoveToFront(el)
	return el.Value.(*cacheEntry).data, true
}

func (bc *blockCache) putLocked(k blockKey, data []byte) {
	if bc.max <= 0 || int64(len(data)) > bc.max {
		return
	}
	if el, ok := bc.items[k]; ok {
		bc.lru.MoveToFront(el)
		return
	}
	bc.items[k] = bc.lru.PushFront(&cacheEntry{key: k, data: data})
	bc.used += int64(len(data))
	for bc.used > bc.max {
		el := bc.lru.Back()
		e := el.Value.(*cacheEntry)
		bc.lru.Remove(el)
		delete(bc.items, e.key)
		bc.used -= int64(len(e.data))
	}
}

// finish completes flights with the fetched blocks (or the error) and caches
// the blocks.
func (bc *blockCache) finish(keys []blockKey, fl []*flight, blocks [][]byte, err error) {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	for i, k := range keys {
		if err == nil {
			fl[i].data = blocks[i]
			bc.putLocked(k, blocks[i])
		} else {
			fl[i].err = err
		}
		delete(bc.flights, k)
		close(fl[i].done)
	}
}

// stats reports the bytes and blocks held (for tests and metrics).
func (bc *blockCache) stats() (bytes int64, blocks int) {
	bc.mu.Lock()
	defer bc.mu.Unlock()
	return bc.used, len(bc.items)
}
