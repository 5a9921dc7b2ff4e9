// Package store keeps a chunkserver's shards: whole shards written durably
// (or buffered, made durable by a later Sync), read back in ranges with every 64 KiB block checked against its xxhash64,
// walked by the scrubber and counted for heartbeats.
//
// Two implementations share one contract, checked by storetest.Run: Disk (a
// file per shard, for real servers) and Memory (for tests and benchmarks of
// the layers above). A store never returns bytes whose block checksum does
// not match; it returns ErrCorrupt instead, so a caller can fall back to a
// degraded read and report the shard.
package store

import (
	"errors"
	"fmt"
	"io"

	"github.com/cespare/xxhash/v2"

	"github.com/dockyard/dockyard/chunkserver"
)

// BlockSize is the checksum granularity. 64 KiB keeps the checksum overhead at
// 8 bytes per block (0.01%) while a small ranged read verifies at most two
// blocks, i.e. reads no more than 128 KiB extra.
const BlockSize = 64 << 10

// The store's errors are the chunkserver package's, so one errors.Is works
// from the store up through the HTTP client.
var (
	ErrNotFound = chunkserver.ErrNotFound
	ErrCorrupt  = chunkserver.ErrCorrupt
	ErrNoSpace  = chunkserver.ErrNoSpace
	ErrBadName  = chunkserver.ErrBadName
	// ErrClosed is returned by every call after Close.
	ErrClosed = errors.New("shard store closed")
)

// Usage is a store's size at a glance, as sent in heartbeats.
type Usage struct {
	// Capacity is the most bytes the store will hold: the configured limit or,
	// for a disk store, what the file system can still give (used + free),
	// whichever is smaller.
	Capacity int64
	// Used counts the bytes the shards occupy, checksums and headers included.
	Used   int64
	Shards int
}

// Store holds shards by name. Names must satisfy chunkserver.ValidName.
// Implementations are safe for concurrent use.
type Store interface {
	// Put stores data as the whole shard name, replacing any shard of that
	// name, and returns its checksum (chunkserver.Sum). When Put returns nil
	// the shard is durable. If the shard would not fit it returns ErrNoSpace
	// and leaves the store as it was.
	Put(name string, data []byte) (sum uint64, err error)
	// PutBuffered stores data as Put does, reads back at once the same way,
	// but may return before the shard is durable: it survives a crash of
	// the process, not necessarily a power loss, until a Sync that began
	// after it returned has returned nil. Stores without a volatile cache
	// (Memory) treat it as Put.
	PutBuffered(name string, data []byte) (sum uint64, err error)
	// Sync makes every PutBuffered that returned before Sync was called
	// durable, or returns why it could not. Shards deleted or replaced
	// meanwhile are no error. With nothing buffered it returns at once.
	Sync() error
	// ReadAt reads len(p) bytes at off, verifying every block it touches, in
	// the manner of io.ReaderAt: fewer bytes only with an error, io.EOF at the
	// end of the shard. A block failing its checksum yields ErrCorrupt and no
	// bytes.
	ReadAt(name string, p []byte, off int64) (n int, err error)
	// Stat returns the shard's size and whole-shard checksum.
	Stat(name string) (chunkserver.ShardInfo, error)
	// Delete removes the shard; ErrNotFound when there is none.
	Delete(name string) error
	// Walk calls fn for every shard present when Walk began, in name order,
	// skipping shards deleted meanwhile. It stops at and returns fn's first
	// error.
	Walk(fn func(name string, info chunkserver.ShardInfo) error) error
	// Usage reports capacity, bytes used and the shard count.
	Usage() (Usage, error)
	// Close releases the store; later calls return ErrClosed.
	Close() error
}

// blockSums returns the xxhash64 of each BlockSize block of data (the last
// block may be short) and of the whole of data.
func blockSums(data []byte) (blocks []uint64, whole uint64) {
	n := numBlocks(int64(len(data)))
	blocks = make([]uint64, n)
	for i := range blocks {
		lo := i * BlockSize
		hi := min(lo+BlockSize, len(data))
		blocks[i] = xxhash.Sum64(data[lo:hi])
	}
	return blocks, chunkserver.Sum(data)
}

func numBlocks(size int64) int { return int((size + BlockSize - 1) / BlockSize) }

func checkName(name string) error {
	if !chunkserver.ValidName(name) {
		return fmt.Errorf("%q: %w", name, ErrBadName)
	}
	return nil
}

// readSpan validates a ReadAt of plen bytes at off in a shard of size bytes.
// It returns how many bytes can be served and the error to return with them:
// io.EOF when that is fewer than asked, as io.ReaderAt requires.
func readSpan(size int64, plen int, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("negative offset %d", off)
	}
	if off >= size {
		if plen == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	if int64(plen) > size-off {
		return int(size - off), io.EOF
	}
	return plen, nil
}
