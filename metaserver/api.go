package metaserver

import "context"

// API is the metaserver's operation set. Client (client.go, HTTP) implements
// it against a cluster, following leader changes and retrying with request ids so a retried
// mutation is applied once. An in-process node implements it too, for tests.
//
// Every mutation is linearizable; reads are linearizable by default (the leader
// confirms it still leads before answering).
type API interface {
	Namespace
	Chunks
	Cluster
	KV
}

// SetAttrIn says which attributes to change; nil fields stay as they are.
type SetAttrIn struct {
	Mode  *uint32 `json:"mode,omitempty"` // permission bits only; type bits are kept
	Uid   *uint32 `json:"uid,omitempty"`
	Gid   *uint32 `json:"gid,omitempty"`
	Size  *uint64 `json:"size,omitempty"` // truncate: extents past Size are dropped (chunk refs released)
	Atime *int64  `json:"atime,omitempty"`
	Mtime *int64  `json:"mtime,omitempty"`
}

// CreateIn describes a new inode. Mode carries the type bits (S_IFREG, S_IFDIR,
// S_IFLNK, S_IFIFO, S_IFCHR, S_IFBLK, S_IFSOCK).
type CreateIn struct {
	Parent    Ino               `json:"parent"`
	Name      string            `json:"name"`
	Mode      uint32            `json:"mode"`
	Uid       uint32            `json:"uid"`
	Gid       uint32            `json:"gid"`
	Rdev      uint64            `json:"rdev,omitempty"`
	Target    string            `json:"target,omitempty"` // symlinks
	Xattrs    map[string][]byte `json:"xattrs,omitempty"`
	Exclusive bool              `json:"exclusive,omitempty"` // EEXIST if the name exists (else open the existing regular file)
}

// Namespace holds the POSIX file-system operations. Errors are *Error carrying
// an errno (ENOENT, EEXIST, ENOTEMPTY, ENOTDIR, EISDIR, EINVAL, ENAMETOOLONG...).
// Names are single path components: "", ".", "..", and names containing '/' or
// NUL are EINVAL; names longer than MaxNameLen are ENAMETOOLONG.
type Namespace interface {
	Lookup(ctx context.Context, parent Ino, name string) (Attr, error)
	GetAttr(ctx context.Context, ino Ino) (Attr, error)
	// GetInode returns attributes, xattrs, symlink target and extents.
	GetInode(ctx context.Context, ino Ino) (Inode, error)
	SetAttr(ctx context.Context, ino Ino, in SetAttrIn) (Attr, error)
	// Create makes files, directories, symlinks, fifos, devices and sockets.
	// Directories get the parent's gid and S_ISGID when the parent is setgid.
	Create(ctx context.Context, in CreateIn) (Attr, error)
	Link(ctx context.Context, ino Ino, newParent Ino, newName string) (Attr, error)
	Unlink(ctx context.Context, parent Ino, name string) error
	Rmdir(ctx context.Context, parent Ino, name string) error
	Rename(ctx context.Context, oldParent Ino, oldName string, newParent Ino, newName string, flags uint32) error
	// ReadDir lists entries with names sorted bytewise, strictly after `after`,
	// at most limit (0 = all). plus fills DirEntry.Attr.
	ReadDir(ctx context.Context, dir Ino, after string, limit int, plus bool) ([]DirEntry, error)
	SetXattr(ctx context.Context, ino Ino, name string, value []byte, flags int) error
	GetXattr(ctx context.Context, ino Ino, name string) ([]byte, error)
	ListXattr(ctx context.Context, ino Ino) ([]string, error)
	RemoveXattr(ctx context.Context, ino Ino, name string) error
	StatFS(ctx context.Context) (StatFS, error)
	// ResolvePath walks an absolute slash-separated path from the root (no
	// symlink following) and returns the final inode's attributes.
	ResolvePath(ctx context.Context, path string) (Attr, error)
	// CreateTree creates a whole tree under parent in one Raft entry: entries
	// are in parent-before-child order and name their parent by index into the
	// same slice (-1 = parent). Used by the converter and batch imports.
	CreateTree(ctx context.Context, parent Ino, entries []TreeEntry) ([]Ino, error)
	// CloneTree copies the file or directory tree at src to newName in
	// newParent in one Raft entry, sharing every chunk (only metadata is
	// copied; see docs/volumes.md for the semantics) and returns the copy's
	// root. Errors: EEXIST for a taken name, EINVAL for a destination
	// inside the source, E2BIG past MaxCloneInodes.
	CloneTree(ctx context.Context, src Ino, newParent Ino, newName string) (Attr, error)
}

// MaxCloneInodes bounds one CloneTree. The copy is applied in one Raft entry
// under the state lock, which every other metadata operation waits for: at
// 2 to 5 µs per inode (BenchmarkCloneTree, docs/benchmarks.md) the largest
// clone pauses the namespace for a few seconds. Larger trees are refused
// before anything changes rather than stall the cluster longer.
const MaxCloneInodes = 1_000_000

// TreeEntry is one node of a CreateTree batch.
type TreeEntry struct {
	ParentIdx int `json:"parentIdx"` // -1 for the CreateTree parent
	CreateIn
	Size      uint64    `json:"size,omitempty"`
	Mtime     int64     `json:"mtime,omitempty"`
	Extents   []Extent  `json:"extents,omitempty"`
	Layer     *LayerRef `json:"layer,omitempty"`
	LinkToIdx int       `json:"linkToIdx,omitempty"` // >0: hard link to entries[LinkToIdx-1]
}

// Chunks holds the data-path bookkeeping.
type Chunks interface {
	// AllocChunk picks k+m distinct chunkservers (spread over label domains,
	// weighted by free space, skipping suspect/down/draining servers) and records
	// an uncommitted chunk with a lease. Returns ErrNoSpace when it cannot.
	// With replicated set, k must be 1: m+1 full copies.
	AllocChunk(ctx context.Context, k, m int, shardSize int64, size int64, replicated bool) (Chunk, error)
	// CommitExtents writes extents into the inode (replacing what they
	// overlap), records the shard checksums, marks the chunks committed, sets
	// size to max(size, newSize) and mtime/ctime, and bumps Gen — one Raft entry.
	CommitExtents(ctx context.Context, ino Ino, extents []Extent, sums map[ChunkID][]uint64, newSize uint64) (Attr, error)
	// AbandonChunk gives back a chunk that AllocChunk placed and its writer
	// will not commit (storing its shards failed): the metaserver forgets it
	// and has its chunkservers delete whatever shards landed, now rather than
	// when the lease runs out. A chunk already forgotten is no error; a
	// committed one is refused (EBUSY), since files use it.
	AbandonChunk(ctx context.Context, id ChunkID) error
	GetChunk(ctx context.Context, id ChunkID) (Chunk, error)
	// ReportBadShard tells the metaserver a shard is missing or corrupt; it
	// schedules a repair.
	ReportBadShard(ctx context.Context, id ChunkID, index int, reason string) error
}

// Cluster holds membership of chunkservers and metaservers.
type Cluster interface {
	// Heartbeat registers or refreshes a chunkserver and returns work for it
	// (repairs to perform, shards to delete).
	Heartbeat(ctx context.Context, hb Heartbeat) (HeartbeatReply, error)
	Chunkservers(ctx context.Context) ([]ChunkserverInfo, error)
	SetChunkserverState(ctx context.Context, id ServerID, state string) error
	// CompleteRepair records that a shard was rebuilt at a new location.
	CompleteRepair(ctx context.Context, r RepairDone) error
	// StrayShards returns those of names (shards a chunkserver holds) that
	// the chunk map does not place on server id, nor a repair or move
	// bound for it: files nothing will ever read, such as a rebuilt copy
	// whose completion report was lost.
	StrayShards(ctx context.Context, id ServerID, names []string) ([]string, error)
	Members(ctx context.Context) ([]Member, error)
	AddMember(ctx context.Context, id, raftAddr, apiAddr string) error
	RemoveMember(ctx context.Context, id string) error
	Status(ctx context.Context) (Status, error)
}

// Heartbeat is what a chunkserver sends every few seconds.
type Heartbeat struct {
	ID       ServerID          `json:"id"`
	Addr     string            `json:"addr"`
	Labels   map[string]string `json:"labels,omitempty"`
	Capacity int64             `json:"capacity"`
	Used     int64             `json:"used"`
	Shards   int               `json:"shards"`
}

// StrayShardsArgs asks which of a chunkserver's shards are strays.
type StrayShardsArgs struct {
	Server ServerID `json:"server"`
	Names  []string `json:"names"`
}

// HeartbeatReply hands work to a chunkserver.
type HeartbeatReply struct {
	Repairs []RepairTask `json:"repairs,omitempty"`
	Deletes []string     `json:"deletes,omitempty"` // shard names to delete
}

// RepairTask asks a chunkserver to rebuild shard Index of Chunk from the other
// shards (listed in Chunk.Shards) and store it locally.
type RepairTask struct {
	Chunk Chunk `json:"chunk"`
	Index int   `json:"index"`
}

// RepairDone reports a rebuilt shard.
type RepairDone struct {
	Chunk  ChunkID  `json:"chunk"`
	Index  int      `json:"index"`
	Server ServerID `json:"server"`
	Sum    uint64   `json:"sum"`
}

// Member is one metaserver in the Raft configuration.
type Member struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raftAddr"`
	APIAddr  string `json:"apiAddr"`
	Leader   bool   `json:"leader"`
	Voter    bool   `json:"voter"`
}

// Status is the cluster at a glance.
type Status struct {
	Leader        string            `json:"leader"`
	Members       []Member          `json:"members"`
	Chunkservers  []ChunkserverInfo `json:"chunkservers"`
	Inodes        uint64            `json:"inodes"`
	Chunks        uint64            `json:"chunks"`
	Degraded      uint64            `json:"degraded"`      // chunks with fewer than k+m healthy shards
	Lost          uint64            `json:"lost"`          // chunks with fewer than k healthy shards
	RepairsQueued uint64            `json:"repairsQueued"` // rebuilds of shards on down or draining servers, or reported bad
	MovesQueued   uint64            `json:"movesQueued"`   // rebalancing moves of healthy shards in flight
	AppliedIndex  uint64            `json:"appliedIndex"`
}

// KV is a small replicated key-value store with transactions, for records that
// are not files: the registry's repositories, manifests, tags, referrers and
// uploads; later users, volumes and layer trees. Buckets are namespaces.
type KV interface {
	KVGet(ctx context.Context, bucket, key string) ([]byte, bool, error)
	// KVList returns keys with the prefix, sorted, strictly after `after`, at
	// most limit (0 = all).
	KVList(ctx context.Context, bucket, prefix, after string, limit int) ([]KVPair, error)
	// KVTxn applies all ops atomically if every condition holds; otherwise
	// it changes nothing and returns ErrConflict.
	KVTxn(ctx context.Context, conds []KVCond, ops []KVOp) error
}

// KVPair is one key and its value.
type KVPair struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// KVCond is a precondition of a transaction: the key exists (or not) and, when
// Value is non-nil, holds exactly Value.
type KVCond struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	Exists bool   `json:"exists"`
	Value  []byte `json:"value,omitempty"`
}

// KVOp is a put (Value non-nil) or delete (Delete true).
type KVOp struct {
	Bucket string `json:"bucket"`
	Key    string `json:"key"`
	Value  []byte `json:"value,omitempty"`
	Delete bool   `json:"delete,omitempty"`
}
