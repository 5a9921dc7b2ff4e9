// Package metaserver owns Dockyard's replicated state: the namespace (inodes,
// directory entries, extents), the chunk table, chunkserver membership and
// placement, repair scheduling and the registry's records. Every mutation is a
// typed command applied through Raft; the FSM never reads a clock or a random
// source. The package also holds the HTTP API and its Go client.
//
// It must never import echo, go-fuse, or the chunkserver's server code.
//
// This file is the contract the other packages code against: the data types
// that cross the wire and the errors callers match with errors.Is/As.
package metaserver

import (
	"errors"
	"fmt"
	"syscall"
)

// Ino is an inode number. RootIno is the root directory of the namespace.
type Ino uint64

// RootIno is the inode of "/".
const RootIno Ino = 1

// MaxNameLen is the longest name a directory entry may have (bytes).
const MaxNameLen = 255

// Attr is what stat(2) reports about an inode. Mode carries the file type bits
// (syscall.S_IFREG, S_IFDIR, ...) as well as the permission bits. Times are Unix
// nanoseconds, stamped by the leader before a command is proposed.
type Attr struct {
	Ino   Ino    `json:"ino"`
	Mode  uint32 `json:"mode"`
	Uid   uint32 `json:"uid"`
	Gid   uint32 `json:"gid"`
	Size  uint64 `json:"size"`
	Nlink uint32 `json:"nlink"`
	Rdev  uint64 `json:"rdev,omitempty"`
	Atime int64  `json:"atime"`
	Mtime int64  `json:"mtime"`
	Ctime int64  `json:"ctime"`
	// Gen changes whenever the file's content changes (write, truncate). A
	// client keeps its page cache across opens while Gen is unchanged.
	Gen uint64 `json:"gen"`
}

// IsDir reports whether the attribute describes a directory.
func (a Attr) IsDir() bool { return a.Mode&syscall.S_IFMT == syscall.S_IFDIR }

// IsRegular reports whether the attribute describes a regular file.
func (a Attr) IsRegular() bool { return a.Mode&syscall.S_IFMT == syscall.S_IFREG }

// Inode is an inode with everything the client needs to read it.
type Inode struct {
	Attr
	Target  string            `json:"target,omitempty"` // symlink target
	Xattrs  map[string][]byte `json:"xattrs,omitempty"`
	Extents []Extent          `json:"extents,omitempty"`
	// Layer is set for files whose bytes live inside a (compressed) layer blob
	// instead of chunks of their own; see the converter package.
	Layer *LayerRef `json:"layer,omitempty"`
}

// Extent maps file bytes [Off, Off+Len) to chunk data bytes
// [ChunkOff, ChunkOff+Len). Extents of an inode are sorted by Off and never
// overlap; holes read as zeros.
type Extent struct {
	Off      uint64  `json:"off"`
	Len      uint64  `json:"len"`
	Chunk    ChunkID `json:"chunk"`
	ChunkOff uint64  `json:"chunkOff"`
}

// LayerRef points a file at a span of a layer blob's uncompressed stream.
// Blob is the inode of the blob file in the namespace; Offset and the file's
// Size give the span of the uncompressed tar stream holding its bytes.
type LayerRef struct {
	Blob   Ino    `json:"blob"`
	Digest string `json:"digest"`
	Offset uint64 `json:"offset"`
}

// ChunkID names a chunk. It is allocated by the FSM (a counter), so it is the
// same on every replica.
type ChunkID uint64

// Chunk is one stripe of data: K data shards and M parity shards (or, when
// Replicated, K=1 and M extra full copies). Size is the number of data bytes;
// ShardSize the length of each shard (the data is zero-padded to K*ShardSize).
type Chunk struct {
	ID         ChunkID `json:"id"`
	K          int     `json:"k"`
	M          int     `json:"m"`
	Size       int64   `json:"size"`
	ShardSize  int64   `json:"shardSize"`
	Replicated bool    `json:"replicated,omitempty"`
	Shards     []Shard `json:"shards"`
	Refs       int     `json:"refs"`
	// Committed is false between allocation and the extent commit that first
	// references the chunk; uncommitted chunks are collected after a lease.
	Committed bool  `json:"committed"`
	Lease     int64 `json:"lease,omitempty"` // unix nanos after which an uncommitted chunk is garbage
}

// Shard is one shard of a chunk: where it lives and its checksum (xxhash64 of
// the whole shard), recorded at commit.
type Shard struct {
	Index  int      `json:"index"`
	Server ServerID `json:"server"`
	Addr   string   `json:"addr"`
	Sum    uint64   `json:"sum,omitempty"`
}

// ShardName is how a chunkserver names a shard on disk and in its API.
func ShardName(c ChunkID, index int) string { return fmt.Sprintf("%016x.%d", uint64(c), index) }

// ServerID identifies a chunkserver; it is stable across restarts (kept in the
// chunkserver's data directory).
type ServerID string

// Chunkserver states.
const (
	StateUp       = "up"
	StateSuspect  = "suspect"  // missed heartbeats; placement skips it, reads still try it
	StateDown     = "down"     // its shards are rebuilt elsewhere
	StateDraining = "draining" // no new shards; existing shards are moved off
	StateRemoved  = "removed"
)

// ChunkserverInfo is the metaserver's record of one chunkserver.
type ChunkserverInfo struct {
	ID            ServerID          `json:"id"`
	Addr          string            `json:"addr"`
	Labels        map[string]string `json:"labels,omitempty"`
	Capacity      int64             `json:"capacity"`
	Used          int64             `json:"used"`
	State         string            `json:"state"`
	LastHeartbeat int64             `json:"lastHeartbeat"`
	Shards        int               `json:"shards"`
}

// DirEntry is one entry of a directory listing.
type DirEntry struct {
	Name string `json:"name"`
	Ino  Ino    `json:"ino"`
	Mode uint32 `json:"mode"` // type bits only are guaranteed
	// Attr is filled by ReadDirPlus.
	Attr *Attr `json:"attr,omitempty"`
}

// StatFS is what statfs(2) reports.
type StatFS struct {
	TotalBytes uint64 `json:"totalBytes"`
	FreeBytes  uint64 `json:"freeBytes"`
	Files      uint64 `json:"files"`
	FreeFiles  uint64 `json:"freeFiles"`
}

// Rename flags, as in renameat2(2).
const (
	RenameNoreplace = 1 << 0
	RenameExchange  = 1 << 1
)

// Error is an errno-typed failure of a namespace operation. errors.Is(err,
// syscall.ENOENT) works on it.
type Error struct {
	Op    string        `json:"op"`
	Errno syscall.Errno `json:"errno"`
	Msg   string        `json:"msg,omitempty"`
}

func (e *Error) Error() string {
	if e.Msg != "" {
		return fmt.Sprintf("%s: %s: %s", e.Op, e.Errno.Error(), e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Op, e.Errno.Error())
}

// Is makes errors.Is(err, syscall.EXXX) match.
func (e *Error) Is(target error) bool {
	t, ok := target.(syscall.Errno)
	return ok && t == e.Errno
}

// Unwrap exposes the errno.
func (e *Error) Unwrap() error { return e.Errno }

// Errf builds an *Error.
func Errf(op string, errno syscall.Errno, format string, args ...any) *Error {
	return &Error{Op: op, Errno: errno, Msg: fmt.Sprintf(format, args...)}
}

// ErrNotLeader is returned by a node that is not the Raft leader. Leader is the
// API address of the current leader, empty when unknown.
type ErrNotLeader struct{ Leader string }

func (e *ErrNotLeader) Error() string {
	if e.Leader == "" {
		return "not the leader; no leader known"
	}
	return "not the leader; leader is " + e.Leader
}

// ErrNoSpace is returned when placement cannot find enough chunkservers with
// room for a chunk.
var ErrNoSpace = errors.New("not enough chunkservers with free space for placement")

// ErrConflict is returned by KVTxn when a condition does not hold.
var ErrConflict = errors.New("transaction condition failed")
