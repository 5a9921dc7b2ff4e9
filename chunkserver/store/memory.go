package store

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"

	"github.com/cespare/xxhash/v2"

	"github.com/dockyard/dockyard/chunkserver"
)

// Memory is a Store in RAM. It keeps block checksums like the disk store and
// verifies them on every read, so tests of the layers above exercise the same
// corruption paths without touching a disk.
type Memory struct {
	mu       sync.RWMutex
	shards   map[string]*memShard
	used     int64
	capacity int64
	closed   bool
}

type memShard struct {
	data   []byte
	blocks []uint64
	sum    uint64
}

// footprint is what a shard counts against capacity: its bytes plus their
// block checksums, the same accounting the disk store uses minus its header.
func (s *memShard) footprint() int64 { return int64(len(s.data)) + 8*int64(len(s.blocks)) }

var _ Store = (*Memory)(nil)

// NewMemory returns an empty in-memory store holding at most capacity bytes
// (0 = unlimited).
func NewMemory(capacity int64) *Memory {
	if capacity <= 0 {
		capacity = math.MaxInt64
	}
	return &Memory{shards: make(map[string]*memShard), capacity: capacity}
}

// Put implements Store.
func (m *Memory) Put(name string, data []byte) (uint64, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	blocks, sum := blockSums(data)
	sh := &memShard{data: slices.Clone(data), blocks: blocks, sum: sum}
	if sh.data == nil {
		sh.data = []byte{}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return 0, ErrClosed
	}
	var old int64
	if prev, ok := m.shards[name]; ok {
		old = prev.footprint()
	}
	if m.used-old+sh.footprint() > m.capacity {
		return 0, fmt.Errorf("put %s: %d bytes, %d of %d used: %w", name, len(data), m.used, m.capacity, ErrNoSpace)
	}
	m.shards[name] = sh
	m.used += sh.footprint() - old
	return sum, nil
}

// PutBuffered implements Store. Memory has nothing more durable to reach
// than its map, so a buffered Put is a Put.
func (m *Memory) PutBuffered(name string, data []byte) (uint64, error) { return m.Put(name, data) }

// Sync implements Store: every Put is already as durable as Memory gets.
func (m *Memory) Sync() error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return ErrClosed
	}
	return nil
}

// ReadAt implements Store.
func (m *Memory) ReadAt(name string, p []byte, off int64) (int, error) {
	if err := checkName(name); err != nil {
		return 0, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return 0, ErrClosed
	}
	sh, ok := m.shards[name]
	if !ok {
		return 0, fmt.Errorf("read %s: %w", name, ErrNotFound)
	}
	n, eof := readSpan(int64(len(sh.data)), len(p), off)
	if n == 0 {
		return 0, eof
	}
	first, last := int(off/BlockSize), int((off+int64(n)-1)/BlockSize)
	for b := first; b <= last; b++ {
		lo := b * BlockSize
		hi := min(lo+BlockSize, len(sh.data))
		if xxhash.Sum64(sh.data[lo:hi]) != sh.blocks[b] {
			return 0, fmt.Errorf("read %s: block %d: %w", name, b, ErrCorrupt)
		}
	}
	copy(p[:n], sh.data[off:])
	return n, eof
}

// Stat implements Store.
func (m *Memory) Stat(name string) (chunkserver.ShardInfo, error) {
	if err := checkName(name); err != nil {
		return chunkserver.ShardInfo{}, err
	}
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return chunkserver.ShardInfo{}, ErrClosed
	}
	sh, ok := m.shards[name]
	if !ok {
		return chunkserver.ShardInfo{}, fmt.Errorf("stat %s: %w", name, ErrNotFound)
	}
	return chunkserver.ShardInfo{Size: int64(len(sh.data)), Sum: sh.sum}, nil
}

// Delete implements Store.
func (m *Memory) Delete(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	sh, ok := m.shards[name]
	if !ok {
		return fmt.Errorf("delete %s: %w", name, ErrNotFound)
	}
	delete(m.shards, name)
	m.used -= sh.footprint()
	return nil
}

// Walk implements Store.
func (m *Memory) Walk(fn func(name string, info chunkserver.ShardInfo) error) error {
	m.mu.RLock()
	if m.closed {
		m.mu.RUnlock()
		return ErrClosed
	}
	names := make([]string, 0, len(m.shards))
	for name := range m.shards {
		names = append(names, name)
	}
	m.mu.RUnlock()
	slices.Sort(names)
	for _, name := range names {
		info, err := m.Stat(name)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				continue
			}
			return err
		}
		if err := fn(name, info); err != nil {
			return err
		}
	}
	return nil
}

// Usage implements Store.
func (m *Memory) Usage() (Usage, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.closed {
		return Usage{}, ErrClosed
	}
	return Usage{Capacity: m.capacity, Used: m.used, Shards: len(m.shards)}, nil
}

// Close implements Store.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	m.shards = nil
	return nil
}

// FlipByte inverts one stored byte at offset off of shard name without
// updating its checksums: fault injection for tests of the corruption paths
// (scrub, degraded reads, repair), the in-memory analogue of a bad sector.
func (m *Memory) FlipByte(name string, off int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	sh, ok := m.shards[name]
	if !ok {
		return fmt.Errorf("flip %s: %w", name, ErrNotFound)
	}
	if off < 0 || off >= int64(len(sh.data)) {
		return fmt.Errorf("flip %s: offset %d outside %d bytes", name, off, len(sh.data))
	}
	sh.data[off] ^= 0xff
	return nil
}
