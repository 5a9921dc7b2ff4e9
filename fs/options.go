// Package fs is Dockyard's file-system client: namespace calls go straight to
// the metaserver, file bytes go to and from erasure-coded chunks on the
// chunkservers. It owns the chunk layout (how a chunk's bytes are split into
// shards), the write pipeline (buffer, encode, upload, commit), the read path
// (ranged shard reads, degraded reads, hedging), the client block cache and
// read-ahead. fs/fuse is a thin adapter over it.
//
// It must never import the metaserver's or chunkserver's server code, echo or
// go-fuse: it is used by the FUSE mount, the registry, the converter and the CLI
// alike.
package fs

import (
	"context"
	"io"
	"log/slog"
	"time"

	"github.com/dockyard/dockyard/metaserver"
)

// Defaults, kept in one place (see Options for what each one means).
const (
	DefaultChunkSize      = 4 << 20
	DefaultK              = 4
	DefaultM              = 2
	DefaultReplicateBelow = 128 << 10
	DefaultCacheBytes     = 256 << 20
	DefaultDiskCacheBytes = 4 << 30
	DefaultReadAhead      = 8 << 20
	DefaultHedgeAfter     = time.Second
	DefaultIOTimeout      = 30 * time.Second
	DefaultMaxUploads     = 8
	DefaultWriteAttempts  = 8
	DefaultRetryBackoff   = 100 * time.Millisecond
	DefaultMaxDirtyChunks = 8
	DefaultCommitEvery    = 16
	DefaultCommitAfter    = 5 * time.Second
)

// blockSize is the unit of the client cache. 128 KiB matches the largest read
// the kernel sends through FUSE by default, so a sequential reader hits whole
// blocks, and keeps a small random read from pulling a whole chunk.
const blockSize = 128 << 10

// Options configure a Client. Zero values mean the defaults above.
type Options struct {
	ChunkSize      int64 // data bytes per chunk, default 4 MiB
	K, M           int   // erasure coding, default 4+2
	ReplicateBelow int64 // chunks smaller than this are stored as M+1 full copies instead, default 128 KiB
	// CacheBytes bounds the client block cache, default 256 MiB; negative
	// disables it.
	CacheBytes int64
	// ReadAhead is the sequential read-ahead window, default 8 MiB; negative
	// disables it.
	ReadAhead int64
	// CacheDir, when set, adds a block cache on local disk below the memory
	// one, bounded by DiskCacheBytes (default 4 GiB). It is emptied when
	// the client starts. It needs the memory cache.
	CacheDir       string
	DiskCacheBytes int64
	LayerOpener    LayerOpener // reads files whose Inode.Layer is set (nil = EIO on them)
	Logger         *slog.Logger

	// HedgeAfter is how long a shard read may take before the same bytes are
	// also reconstructed from other shards; the first answer wins.
	HedgeAfter time.Duration
	// IOTimeout bounds every single shard request and metaserver call made
	// on behalf of calls that carry no context (ReadAt, WriteAt, Close).
	IOTimeout time.Duration
	// MaxUploads bounds the chunks being encoded or uploaded at once, over
	// all files of the client; it is what bounds write memory, at about
	// MaxUploads*(K+M)/K*ChunkSize.
	MaxUploads int
	// WriteAttempts is how many placements a chunk is tried on before the
	// write fails.
	WriteAttempts int
	// RetryBackoff is the wait before the second placement, doubling for
	// each further one up to 2 s. A chunkserver that just died keeps being
	// placed on until the metaserver misses its heartbeats (a few seconds),
	// so the default attempts span that window instead of failing inside it.
	RetryBackoff time.Duration
	// MaxDirtyChunks bounds the partially written chunks a file buffers; past
	// it the oldest is written out as a smaller chunk.
	MaxDirtyChunks int
	// CommitEvery is how many uploaded chunks a file collects before it
	// commits them without waiting for Flush, so a long stream never outlives
	// the lease of its uncommitted chunks.
	CommitEvery int
	// CommitAfter is the longest an uploaded chunk waits for its commit when
	// the file is left open without a Flush: the metaserver collects
	// uncommitted chunks after a lease (minutes), so a file written and then
	// left alone must still commit on its own.
	CommitAfter time.Duration
	// DurableWrites makes every shard durable on its chunkserver before the
	// write of its chunk completes, as before buffered writes: each shard
	// costs the chunkserver two flushes, and File.Sync has nothing left to
	// ask the chunkservers. By default (false) shards are written buffered
	// and made durable by File.Sync, as a local file system makes a file's
	// data durable at fsync; see fs/sync.go.
	DurableWrites bool
	// P2P, when set, serves this client's cached blocks to peers and
	// fetches missing blocks from peers before the chunkservers (see
	// p2p.go). Several clients may share one. It needs the memory cache.
	P2P *P2P
	// Counters, when set, is where the client counts its reads (see
	// Client.Stats); several clients may share one. Nil: its own.
	Counters *Counters
}

// LayerOpener reads files whose bytes live inside a layer blob.
type LayerOpener interface {
	OpenLayerFile(ctx context.Context, ino metaserver.Inode) (io.ReaderAt, error)
}

func (o Options) withDefaults() Options {
	if o.ChunkSize <= 0 {
		o.ChunkSize = DefaultChunkSize
	}
	if o.K <= 0 {
		o.K = DefaultK
	}
	if o.M <= 0 {
		o.M = DefaultM
	}
	if o.ReplicateBelow == 0 {
		o.ReplicateBelow = DefaultReplicateBelow
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = DefaultCacheBytes
	}
	if o.CacheDir != "" && o.DiskCacheBytes <= 0 {
		o.DiskCacheBytes = DefaultDiskCacheBytes
	}
	if o.ReadAhead == 0 {
		o.ReadAhead = DefaultReadAhead
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.HedgeAfter <= 0 {
		o.HedgeAfter = DefaultHedgeAfter
	}
	if o.IOTimeout <= 0 {
		o.IOTimeout = DefaultIOTimeout
	}
	if o.MaxUploads <= 0 {
		o.MaxUploads = DefaultMaxUploads
	}
	if o.WriteAttempts <= 0 {
		o.WriteAttempts = DefaultWriteAttempts
	}
	if o.RetryBackoff <= 0 {
		o.RetryBackoff = DefaultRetryBackoff
	}
	if o.MaxDirtyChunks <= 0 {
		o.MaxDirtyChunks = DefaultMaxDirtyChunks
	}
	if o.CommitEvery <= 0 {
		o.CommitEvery = DefaultCommitEvery
	}
	if o.CommitAfter <= 0 {
		o.CommitAfter = DefaultCommitAfter
	}
	return o
}
