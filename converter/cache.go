package converter

import (
	"container/list"
	"sync"
)

// SpanCache is a bounded LRU of decompressed spans of layer streams, shared by
// every LayerReader on a host. Concurrent misses on one span decode it once.
type SpanCache struct {
	mu       sync.Mutex
	max      int64
	used     int64
	ll       *list.List // front = most recently used
	items    map[spanKey]*list.Element
	inflight map[spanKey]*spanCall
	stats    CacheStats
}

// CacheStats counts cache activity since the cache was made.
type CacheStats struct {
	Hits, Misses  int64
	DecodedBytes  int64 // uncompressed bytes produced by decompression
	Evictions     int64
	ResidentBytes int64
}

type spanKey struct {
	digest string
	start  int64
}

type spanItem struct {
	key  spanKey
	data []byte
}

type spanCall struct {
	done chan struct{}
	data []byte
	err  error
}

// DefaultCacheBytes is the span cache size when none is given.
const DefaultCacheBytes = 256 << 20

// NewSpanCache makes a cache holding at most maxBytes of spans (<= 0 means
// DefaultCacheBytes). A span bigger than the whole cache is returned to its
// reader but not kept.
func NewSpanCache(maxBytes int64) *SpanCache {
	if maxBytes <= 0 {
		maxBytes = DefaultCacheBytes
	}
	return &SpanCache{max: maxBytes, ll: list.New(), items: map[spanKey]*list.Element{}, inflight: map[spanKey]*spanCall{}}
}

// Stats returns a snapshot of the counters.
func (c *SpanCache) Stats() CacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.ResidentBytes = c.used
	return s
}

// load returns the span for k, calling fn at most once at a time per key on a
// miss.
func (c *SpanCache) load(k spanKey, fn func() ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	if el, ok := c.items[k]; ok {
		c.ll.MoveToFront(el)
		c.stats.Hits++
		d := el.Value.(*spanItem).data
		c.mu.Unlock()
		return d, nil
	}
	if call, ok := c.inflight[k]; ok {
		c.mu.Unlock()
		<-call.done
		return call.data, call.err
	}
	c.stats.Misses++
	call := &spanCall{done: make(chan struct{})}
	c.inflight[k] = call
	c.mu.Unlock()

	call.data, call.err = fn()

	c.mu.Lock()
	delete(c.inflight, k)
	if call.err == nil {
		c.stats.DecodedBytes += int64(len(call.data))
		c.putLocked(k, call.data)
	}
	c.mu.Unlock()
	close(call.done)
	return call.data, call.err
}

// put stores a span decoded on the way to another one.
func (c *SpanCache) put(k spanKey, data []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stats.DecodedBytes += int64(len(data))
	c.putLocked(k, data)
}

func (c *SpanCache) putLocked(k spanKey, data []byte) {
	if int64(len(data)) > c.max {
		return
	}
	if el, ok := c.items[k]; ok {
		c.ll.MoveToFront(el)
		return
	}
	c.items[k] = c.ll.PushFront(&spanItem{key: k, data: data})
	c.used += int64(len(data))
	for c.used > c.max {
		el := c.ll.Back()
		it := el.Value.(*spanItem)
		c.ll.Remove(el)
		delete(c.items, it.key)
		c.used -= int64(len(it.data))
		c.stats.Evictions++
	}
}
