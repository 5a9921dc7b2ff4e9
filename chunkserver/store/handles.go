package store

import (
	"container/list"
	"os"
	"sync"
	"sync/atomic"
)

// maxOpenShards bounds the read handles Disk keeps open: enough for the
// shards a few concurrent image pulls are reading, far below the usual
// descriptor limit (1,024 soft) that the HTTP server also draws on.
const maxOpenShards = 256

// handleCache keeps recently read shard files open, so a ReadAt costs its
// preads instead of an open, a poller registration and a close each time.
//
// A handle is tagged with the generation of the index entry it was opened
// for, and a lookup hands it out only while the index still holds that
// generation. Every Put gives its shard a new generation, so a handle to a
// file a Put has since renamed over is never used, whatever the interleaving
// of the Put and a concurrent miss that is inserting it. Invalidation on Put
// and Delete only frees the descriptor early.
//
// Readers use pread (File.ReadAt), which shares no file offset, so any number
// of them can use one handle at once; a reference count keeps a handle open
// until its last reader is done, even after eviction.
type handleCache struct {
	mu     sync.Mutex
	max    int
	byName map[string]*list.Element // of *shardHandle
	lru    list.List                // front = most recently used
	closed bool
}

type shardHandle struct {
	name string
	gen  uint64
	f    *os.File
	refs int // readers using f, plus one while cached
	// cipher is the file's, for an encrypted shard, derived on its
	// first read (see Disk.cipherFor).
	cipher atomic.Pointer[shardCipher]
}

func newHandleCache(limit int) *handleCache {
	return &handleCache{max: limit, byName: make(map[string]*list.Element)}
}

// get returns a handle for name opened for generation gen, or nil. The caller
// must release it.
func (c *handleCache) get(name string, gen uint64) *shardHandle {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.byName[name]
	if !ok {
		return nil
	}
	h := el.Value.(*shardHandle)
	if h.gen != gen {
		c.dropLocked(el)
		return nil
	}
	c.lru.MoveToFront(el)
	h.refs++
	return h
}

// add caches f, just opened for name at generation gen, and returns it as a
// handle the caller must release. A handle already cached for the name is
// replaced: the newer open may see a newer file.
func (c *handleCache) add(name string, gen uint64, f *os.File) *shardHandle {
	h := &shardHandle{name: name, gen: gen, f: f, refs: 1}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return h // the store closed meanwhile: release closes f
	}
	if el, ok := c.byName[name]; ok {
		c.dropLocked(el)
	}
	h.refs++ // the cache's own reference
	c.byName[name] = c.lru.PushFront(h)
	for c.lru.Len() > c.max {
		c.dropLocked(c.lru.Back())
	}
	return h
}

// release ends one reader's use of h, closing the file if the cache dropped it
// and no one else is reading.
func (c *handleCache) release(h *shardHandle) {
	c.mu.Lock()
	h.refs--
	last := h.refs == 0
	c.mu.Unlock()
	if last {
		_ = h.f.Close() // read-only: nothing to lose
	}
}

// invalidate drops the handle cached for name, if any.
func (c *handleCache) invalidate(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.byName[name]; ok {
		c.dropLocked(el)
	}
}

// close drops every handle; handles being read close when their readers are
// done.
func (c *handleCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for c.lru.Len() > 0 {
		c.dropLocked(c.lru.Back())
	}
}

// dropLocked removes el from the cache and gives up the cache's reference,
// closing the file when no reader holds it. Closing under c.mu is cheap for a
// read-only file and keeps the bookkeeping simple.
func (c *handleCache) dropLocked(el *list.Element) {
	h := c.lru.Remove(el).(*shardHandle)
	delete(c.byName, h.name)
	h.refs--
	if h.refs == 0 {
		_ = h.f.Close()
	}
}
