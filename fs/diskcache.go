package fs

import (
	"container/list"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/dockyard/dockyard/chunkserver"
)

// diskCache is an optional second level under the memory block cache, on the
// mounting host's local disk: a cold start of a container reads a large
// image once from the chunkservers and then from here. Blocks are written
// through when they are fetched. Like the memory cache it is keyed by
// immutable chunks, so it needs no invalidation; it does not outlive the
// client (the directory is emptied when the client starts), which keeps it
// free of any index to recover. Each file carries an xxhash64 of its bytes,
// so a damaged cache file is a miss, never wrong bytes.
type diskCache struct {
	dir string
	max int64

	mu    sync.Mutex
	used  int64
	lru   *list.List // of *diskEntry, most recently used at the front
	items map[blockKey]*list.Element
}

type diskEntry struct {
	key  blockKey
	size int64
}

const diskHeader = 8 // xxhash64 of the block (chunkserver.Sum), little-endian

func newDiskCache(dir string, max int64) (*diskCache, error) {
	blocks := filepath.Join(dir, "blocks")
	if err := os.RemoveAll(blocks); err != nil {
		return nil, fmt.Errorf("block cache %s: %w", dir, err)
	}
	if err := os.MkdirAll(blocks, 0o700); err != nil {
		return nil, fmt.Errorf("block cache %s: %w", dir, err)
	}
	return &diskCache{dir: blocks, max: max, lru: list.New(), items: map[blockKey]*list.Element{}}, nil
}

func (d *diskCache) path(k blockKey) string {
	return filepath.Join(d.dir, fmt.Sprintf("%016x.%d", uint64(k.chunk), k.idx))
}

func (d *diskCache) has(k blockKey) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	_, ok := d.items[k]
	return ok
}

// get returns a cached block, or false when it is absent or damaged.
func (d *diskCache) get(k blockKey) ([]byte, bool) {
	d.mu.Lock()
	el, ok := d.items[k]
	if ok {
		d.lru.MoveToFront(el)
	}
	d.mu.Unlock()
	if !ok {
		return nil, false
	}
	b, err := os.ReadFile(d.path(k))
	if err != nil || len(b) < diskHeader || binary.LittleEndian.Uint64(b) != chunkserver.Sum(b[diskHeader:]) {
		d.drop(k)
		return nil, false
	}
	return b[diskHeader:], true
}

// put stores a block; a failure to write only means the block is not cached.
func (d *diskCache) put(k blockKey, data []byte) {
	size := int64(len(data) + diskHeader)
	if size > d.max || d.has(k) {
		return
	}
	buf := make([]byte, size)
	binary.LittleEndian.PutUint64(buf, chunkserver.Sum(data))
	copy(buf[diskHeader:], data)
	p := d.path(k)
	// A temporary name of its own: two readers may cache the same block at
	// once.
	f, err := os.CreateTemp(d.dir, ".tmp-*")
	if err != nil {
		return
	}
	tmp := f.Name()
	_, werr := f.Write(buf)
	if cerr := f.Close(); werr != nil || cerr != nil {
		os.Remove(tmp)
		return
	}
	if err := os.Rename(tmp, p); err != nil {
		os.Remove(tmp)
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.items[k]; ok {
		return
	}
	d.items[k] = d.lru.PushFront(&diskEntry{key: k, size: size})
	d.used += size
	for d.used > d.max {
		el := d.lru.Back()
		e := el.Value.(*diskEntry)
		d.lru.Remove(el)
		delete(d.items, e.key)
		d.used -= e.size
		os.Remove(d.path(e.key))
	}
}

func (d *diskCache) drop(k blockKey) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if el, ok := d.items[k]; ok {
		d.lru.Remove(el)
		delete(d.items, k)
		d.used -= el.Value.(*diskEntry).size
		os.Remove(d.path(k))
	}
}
