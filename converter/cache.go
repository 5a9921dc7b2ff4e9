package converter

import (
	"container/list"
	"encoding/binary"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
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

	// Optional disk tier (see OpenSpanCache).
	dir      string
	diskMax  int64
	diskMu   sync.Mutex
	diskUsed int64
}

// CacheStats counts cache activity since the cache was made.
type CacheStats struct {
	Hits, Misses  int64
	DecodedBytes  int64 // uncompressed bytes produced by decompression
	Evictions     int64
	ResidentBytes int64
	// Disk tier: spans found on disk, written to it, and files that could
	// not be written or were damaged (and decoded again).
	DiskHits, DiskWrites, DiskErrors int64
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

// SpanCacheOptions configure OpenSpanCache.
type SpanCacheOptions struct {
	// MemoryBytes bounds the in-memory tier (<= 0: DefaultCacheBytes).
	MemoryBytes int64
	// Dir, when set, also keeps spans as files on local disk, so the next
	// process on the host starts warm: every `dockyard run` is a new
	// process, and a single-frame zstd layer costs a long decode per cold
	// read. DiskBytes bounds it (<= 0: DefaultDiskCacheBytes); the least
	// recently used files go first.
	Dir       string
	DiskBytes int64
}

// DefaultDiskCacheBytes bounds the disk tier when no size is given.
const DefaultDiskCacheBytes = 4 << 30

// OpenSpanCache makes a span cache with an optional disk tier in o.Dir,
// created if missing.
func OpenSpanCache(o SpanCacheOptions) (*SpanCache, error) {
	c := NewSpanCache(o.MemoryBytes)
	if o.Dir == "" {
		return c, nil
	}
	if err := os.MkdirAll(o.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("span cache: %w", err)
	}
	c.dir, c.diskMax = o.Dir, o.DiskBytes
	if c.diskMax <= 0 {
		c.diskMax = DefaultDiskCacheBytes
	}
	files, err := c.diskFiles()
	if err != nil {
		return nil, fmt.Errorf("span cache: %w", err)
	}
	for _, f := range files {
		c.diskUsed += f.size
	}
	return c, nil
}

// spanFile names a span's file; ok is false for digests that are not plain
// "alg:hex" (they come from inodes, and must never steer a path).
func (c *SpanCache) spanFile(k spanKey) (string, bool) {
	alg, hex, found := strings.Cut(k.digest, ":")
	if !found || alg == "" || hex == "" || strings.Trim(alg+hex, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
		return "", false
	}
	return filepath.Join(c.dir, alg+"-"+hex+"-"+strconv.FormatInt(k.start, 16)+".span"), true
}

// readDisk returns a span from the disk tier. A file is an xxhash64 of the
// span followed by the span; a damaged one is removed and reported.
func (c *SpanCache) readDisk(k spanKey) ([]byte, bool) {
	name, ok := c.spanFile(k)
	if !ok {
		return nil, false
	}
	b, err := os.ReadFile(name)
	if err != nil {
		return nil, false
	}
	if len(b) < 8 || binary.LittleEndian.Uint64(b) != xxhash.Sum64(b[8:]) {
		c.mu.Lock()
		c.stats.DiskErrors++
		c.mu.Unlock()
		_ = os.Remove(name) // best effort: it is rewritten after the decode
		return nil, false
	}
	now := time.Now()
	_ = os.Chtimes(name, now, now) // recency for eviction; a failure only ages the file
	return b[8:], true
}

// writeDisk stores a span, atomically (other processes share the directory).
func (c *SpanCache) writeDisk(k spanKey, data []byte) {
	name, ok := c.spanFile(k)
	if !ok {
		return
	}
	err := func() error {
		f, err := os.CreateTemp(c.dir, ".span-*")
		if err != nil {
			return err
		}
		var sum [8]byte
		binary.LittleEndian.PutUint64(sum[:], xxhash.Sum64(data))
		_, err = f.Write(sum[:])
		if err == nil {
			_, err = f.Write(data)
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(f.Name(), name)
		}
		if err != nil {
			_ = os.Remove(f.Name())
		}
		return err
	}()
	c.mu.Lock()
	if err != nil {
		c.stats.DiskErrors++
	} else {
		c.stats.DiskWrites++
	}
	c.mu.Unlock()
	if err != nil {
		return
	}
	c.diskMu.Lock()
	defer c.diskMu.Unlock()
	c.diskUsed += int64(len(data)) + 8
	if c.diskUsed > c.diskMax {
		c.evictDisk()
	}
}

type diskFile struct {
	path  string
	size  int64
	mtime time.Time
}

func (c *SpanCache) diskFiles() ([]diskFile, error) {
	var out []diskFile
	err := filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if p != c.dir {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".span") {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil // removed by another process meanwhile
		}
		out = append(out, diskFile{p, info.Size(), info.ModTime()})
		return nil
	})
	return out, err
}

// evictDisk removes the least recently used files down to 90% of the bound,
// from a fresh listing since other processes write to the same directory.
func (c *SpanCache) evictDisk() {
	files, err := c.diskFiles()
	if err != nil {
		c.mu.Lock()
		c.stats.DiskErrors++
		c.mu.Unlock()
		return
	}
	sort.Slice(files, func(i, j int) bool { return files[i].mtime.Before(files[j].mtime) })
	var used int64
	for _, f := range files {
		used += f.size
	}
	for _, f := range files {
		if used <= c.diskMax*9/10 {
			break
		}
		if err := os.Remove(f.path); err == nil || os.IsNotExist(err) {
			used -= f.size
		}
	}
	c.diskUsed = used
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

	decoded := false
	if c.dir != "" {
		if d, ok := c.readDisk(k); ok {
			call.data = d
		}
	}
	if call.data == nil {
		call.data, call.err = fn()
		decoded = call.err == nil
	}

	c.mu.Lock()
	delete(c.inflight, k)
	if call.err == nil {
		if decoded {
			c.stats.DecodedBytes += int64(len(call.data))
		} else {
			c.stats.DiskHits++
		}
		c.putLocked(k, call.data)
	}
	c.mu.Unlock()
	close(call.done)
	if decoded && c.dir != "" {
		c.writeDisk(k, call.data)
	}
	return call.data, call.err
}

// put stores a span decoded on the way to another one.
func (c *SpanCache) put(k spanKey, data []byte) {
	c.mu.Lock()
	c.stats.DecodedBytes += int64(len(data))
	c.putLocked(k, data)
	c.mu.Unlock()
	if c.dir != "" {
		c.writeDisk(k, data)
	}
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
