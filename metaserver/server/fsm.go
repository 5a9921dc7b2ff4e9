// Package server is the metaserver itself: the replicated state machine (FSM),
// the Raft node that drives it and the HTTP API in front of it.
//
// The FSM is deterministic: every time, lease and random seed an operation
// needs comes inside the command, chosen by the leader before proposing, and
// ids come from counters in the state. Two replicas that applied the same log
// hold the same state, byte for byte in their snapshots.
//
// It must never import echo, go-fuse, or the chunkserver's server code.
package server

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/btree"

	ms "github.com/dockyard/dockyard/metaserver"
)

// command is the envelope of every Raft log entry (encoded by codec.go).
// Type is an operation name of the metaserver package or one of the internal
// commands below.
type command struct {
	Type  string
	ReqID string
	// Time is the leader's wall clock (Unix nanos) when it proposed; it stamps
	// ctime/mtime, heartbeats and leases.
	Time int64
	// Seed drives placement choices.
	Seed uint64
	// Lease is when an allocated chunk becomes garbage if still uncommitted.
	Lease   int64
	Payload json.RawMessage

	// args is Payload decoded by the first decode of the entry, so the
	// change-feed hook and the operation do not decode it twice. Never
	// encoded: it is a cache of Payload.
	args any
}

// Internal commands, proposed by the leader itself.
const (
	cmdLiveness  = "_liveness"  // chunkserver state changes from missed heartbeats
	cmdGC        = "_gc"        // drop expired chunk leases, (re)assign repairs
	cmdSetMember = "_setmember" // record a metaserver's addresses
	cmdDelMember = "_delmember"
)

type livenessArgs struct {
	Changes []ms.SetStateArgs `json:"changes"`
}

type gcArgs struct {
	// RepairTimeout: a repair handed out longer ago than this is handed again.
	RepairTimeout int64 `json:"repairTimeout"`
}

// result is what applying a command yields, already in wire form so the
// dedup table can hand the very same answer to a retried request.
type result struct {
	Value json.RawMessage
	Err   *ms.WireError
}

// dedupCap bounds the request-id table. It is a constant, not a setting,
// because every replica must evict the same entries. At the target rate of
// 5,000 mutations/s it remembers the last ~25 s, longer than the client's
// retry window.
const dedupCap = 1 << 17

// inode is the FSM's record of a file. Parent is kept for directories only
// (they have exactly one), to answer ".." and to refuse moving a directory
// into its own subtree.
type inode struct {
	ms.Inode
	Parent ms.Ino
}

// dentry is a directory entry, ordered by (Parent, Name) in one B-tree so a
// directory's entries are a contiguous, sorted range.
type dentry struct {
	Parent ms.Ino
	Name   string
	Ino    ms.Ino
	Mode   uint32 // type bits
}

func dentryLess(a, b dentry) bool {
	if a.Parent != b.Parent {
		return a.Parent < b.Parent
	}
	return a.Name < b.Name
}

type kvItem struct {
	Key   string
	Value []byte
}

func kvLess(a, b kvItem) bool { return a.Key < b.Key }

// repairJob is a scheduled rebuild of one shard.
type repairJob struct {
	Chunk  ms.ChunkID
	Index  int
	Target ms.ServerID // "" while no server can take it
	Handed int64       // when it was last handed to Target, 0 = not yet
	Bad    bool        // the shard itself is missing/corrupt (not just its server)
}

type repairKey struct {
	Chunk ms.ChunkID
	Index int
}

// FSM is the metaserver's state machine. Apply and ApplyBatch mutate under mu;
// reads take mu shared.
type FSM struct {
	mu sync.RWMutex

	nextIno   ms.Ino
	nextChunk ms.ChunkID
	// clock is the latest command time applied. Commands stamped earlier (a
	// new leader whose clock lags) are applied at this time instead, so
	// timestamps never go backwards across leader changes.
	clock    int64
	inodes   map[ms.Ino]*inode
	dentries *btree.BTreeG[dentry]
	chunks   map[ms.ChunkID]*ms.Chunk
	servers  map[ms.ServerID]*ms.ChunkserverInfo
	repairs  map[repairKey]*repairJob
	deletes  map[ms.ServerID][]string // shard names to hand out in heartbeat replies
	kv       map[string]*btree.BTreeG[kvItem]
	members  map[string]ms.Member

	dedup      map[string]*result
	dedupOrder []string // FIFO of ids in dedup; dedupHead is the oldest
	dedupHead  int

	applied  atomic.Uint64 // last applied Raft index
	restores atomic.Int64  // snapshots restored since start

	notifyMu sync.Mutex
	notify   chan struct{} // closed and replaced after every applied batch

	feed changeFeed // namespace changes for watchers (watch.go)

	// gate, when set, blocks until the local Raft log holds an index on
	// disk: the leader appends its own log in parallel with replication,
	// and nothing may be applied before it is durable here (leaderlog.go).
	gate func(index uint64) error
}

// NewFSM returns an FSM holding an empty namespace: just the root directory,
// owned by root with mode 0755.
func NewFSM() *FSM {
	f := &FSM{}
	f.reset()
	root := &inode{Inode: ms.Inode{Attr: ms.Attr{Ino: ms.RootIno, Mode: sIFDIR | 0o755, Nlink: 2}}, Parent: ms.RootIno}
	f.inodes[ms.RootIno] = root
	return f
}

func (f *FSM) reset() {
	f.nextIno = ms.RootIno + 1
	f.nextChunk = 1
	f.clock = 0
	f.inodes = map[ms.Ino]*inode{}
	f.dentries = btree.NewG(32, dentryLess)
	f.chunks = map[ms.ChunkID]*ms.Chunk{}
	f.servers = map[ms.ServerID]*ms.ChunkserverInfo{}
	f.repairs = map[repairKey]*repairJob{}
	f.deletes = map[ms.ServerID][]string{}
	f.kv = map[string]*btree.BTreeG[kvItem]{}
	f.members = map[string]ms.Member{}
	f.dedup = map[string]*result{}
	f.dedupOrder = nil
	f.dedupHead = 0
}

// applyDone wakes readers waiting for an index.
func (f *FSM) applyDone() {
	f.notifyMu.Lock()
	if f.notify != nil {
		close(f.notify)
		f.notify = nil
	}
	f.notifyMu.Unlock()
}

// waitApplied blocks until the state reflects every log entry up to idx.
// Raft hands the FSM only commands and configurations; barrier and no-op
// entries never reach it, so applied can stay below idx for good. inert
// reports whether the entries in (from, to] are all such entries, in which
// case the state is current already.
func (f *FSM) waitApplied(ctx context.Context, idx uint64, inert func(from, to uint64) bool) error {
	for {
		a := f.applied.Load()
		if a >= idx || inert(a, idx) {
			return nil
		}
		f.notifyMu.Lock()
		if f.notify == nil {
			f.notify = make(chan struct{})
		}
		ch := f.notify
		f.notifyMu.Unlock()
		if f.applied.Load() != a {
			continue
		}
		// The entries may be applied already without a notification: a
		// restored snapshot covers them. Look again after a short while.
		t := time.NewTimer(5 * time.Millisecond)
		select {
		case <-ch:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("waiting for index %d: %w", idx, ctx.Err())
		}
		t.Stop()
	}
}

// AppliedIndex is the last Raft index applied.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

// applyCommand applies one decoded command; the caller holds mu.
func (f *FSM) applyCommand(c *command) *result {
	if c.ReqID != "" {
		if r, ok := f.dedup[c.ReqID]; ok {
			return r
		}
	}
	if c.Time < f.clock {
		c.Time = f.clock
	}
	f.clock = c.Time
	v, err := f.dispatchWatched(c)
	r := &result{}
	if err != nil {
		r.Err = ms.ToWire(err)
	} else if v != nil {
		// A binary request gets a binary reply; the form follows from the
		// entry itself, so every replica remembers the same bytes.
		b, merr := ms.MarshalReply(v, ms.IsBinary(c.Payload))
		if merr != nil {
			// Every value returned by dispatch is a plain data type; failing
			// to encode one is a programming error that would diverge replicas.
			panic(fmt.Sprintf("metaserver fsm: encoding result of %s: %v", c.Type, merr))
		}
		r.Value = b
	}
	if c.ReqID != "" {
		f.remember(c.ReqID, r)
	}
	return r
}

func (f *FSM) remember(id string, r *result) {
	f.dedup[id] = r
	f.dedupOrder = append(f.dedupOrder, id)
	for len(f.dedup) > dedupCap {
		delete(f.dedup, f.dedupOrder[f.dedupHead])
		f.dedupOrder[f.dedupHead] = ""
		f.dedupHead++
	}
	// Compact the queue once its dead head dominates, so memory stays bounded.
	if f.dedupHead > dedupCap {
		f.dedupOrder = append([]string(nil), f.dedupOrder[f.dedupHead:]...)
		f.dedupHead = 0
	}
}

// dispatchSafely turns a panic of an operation (a bug) into an error result.
// Every replica hits the same panic on the same entry, so they stay identical;
// crashing instead would take the whole cluster down on that entry, again on
// every restart.
func (f *FSM) dispatchSafely(c *command) (v any, err error) {
	defer func() {
		if p := recover(); p != nil {
			v, err = nil, fmt.Errorf("metaserver fsm: %s failed: %v", c.Type, p)
		}
	}()
	return f.dispatch(c)
}

func decode[T any](c *command) (T, error) {
	if v, ok := c.args.(T); ok {
		return v, nil
	}
	var v T
	if err := ms.Unmarshal(c.Payload, &v); err != nil {
		return v, fmt.Errorf("%w: decoding %s arguments: %v", ms.ErrBadRequest, c.Type, err)
	}
	c.args = v
	return v, nil
}

func (f *FSM) dispatch(c *command) (any, error) {
	switch c.Type {
	case ms.OpSetAttr:
		a, err := decode[ms.SetAttrArgs](c)
		if err != nil {
			return nil, err
		}
		return f.applySetAttr(c, a)
	case ms.OpCreate:
		a, err := decode[ms.CreateIn](c)
		if err != nil {
			return nil, err
		}
		return f.applyCreate(c, a)
	case ms.OpLink:
		a, err := decode[ms.LinkArgs](c)
		if err != nil {
			return nil, err
		}
		return f.applyLink(c, a)
	case ms.OpUnlink:
		a, err := decode[ms.NameArgs](c)
		if err != nil {
			return nil, err
		}
		return nil, f.applyUnlink(c, a)
	case ms.OpRmdir:
		a, err := decode[ms.NameArgs](c)
		if err != nil {
			return nil, err
		}
		return nil, f.applyRmdir(c, a)
	case ms.OpRename:
		a, err := decode[ms.RenameArgs](c)
		if err != nil {
			return nil, err
		}
		return nil, f.applyRename(c, a)
	case ms.OpSetXattr:
		a, err := decode[ms.XattrArgs](c)
		if err != nil {
			return nil, err
		}
		return nil, f.applySetXattr(c, a)
	case ms.OpRemoveXattr:
		a, err := decode[ms.XattrArgs](c)
		if err != nil {
			return nil, err
		}
		return nil, f.applyRemoveXattr(c, a)
	case ms.OpCreateTree:
		a, err := decode[ms.CreateTreeArgs](c)
		if err != nil {
			return nil, err
		}
		return f.applyCreateTree(c, a)
	case ms.OpCloneTree:
		a, err := decode[ms.CloneTreeArgs](c)
		if err != nil {
			return nil, err
		}
		return f.applyCloneTree(c, a)
	case ms.OpAllocChunk:
		a, err := decode[ms.AllocChunkArgs](c)
		if err != nil {
			return nil, err
		}
		return f.applyAllocChunk(c, a)
	case ms.OpCommitExtents:
		a, err := decode[ms.CommitExtentsArgs](c)
		if err != nil {
			return nil, err
		}
		return f.applyCommitExtents(c, a)
	case ms.OpAbandonChunk:
		a, err := decode[ms.ChunkArgs](c)
		if err != nil {
			return nil, err
		}
		return nil, f.applyAbandonChunk(a)
	case ms.OpReportBadShard:
		a, err := decode[ms.BadShardArgs](c)
		if err != nil {
			return nil, err
		}
		return nil, f.applyReportBadShard(c, a)
	case ms.OpHeartbeat:
		a, err := decode[ms.Heartbeat](c)
		if err != nil {
			return nil, err
		}
		return f.applyHeartbeat(c, a)
	case ms.OpSetChunkserverState:
		a, err := decode[ms.SetStateArgs](c)
		if err != nil {
			return nil, err
		}
		return nil, f.applySetState(c, a, true)
	case ms.OpCompleteRepair:
		a, err := decode[ms.RepairDone](c)
		if err != nil {
			return nil, err
		}
		return nil, f.applyCompleteRepair(c, a)
	case ms.OpKVTxn:
		a, err := decode[ms.KVTxnArgs](c)
		if err != nil {
			return nil, err
		}
		return nil, f.applyKVTxn(a)
	case cmdLiveness:
		a, err := decode[livenessArgs](c)
		if err != nil {
			return nil, err
		}
		for _, ch := range a.Changes {
			// Liveness changes race with heartbeats and admin actions; the
			// apply re-checks and skips what no longer holds.
			_ = f.applySetState(c, ch, false)
		}
		return nil, nil
	case cmdGC:
		a, err := decode[gcArgs](c)
		if err != nil {
			return nil, err
		}
		f.applyGC(c, a)
		return nil, nil
	case cmdSetMember:
		a, err := decode[ms.MemberArgs](c)
		if err != nil {
			return nil, err
		}
		f.members[a.ID] = ms.Member{ID: a.ID, RaftAddr: a.RaftAddr, APIAddr: a.APIAddr}
		return nil, nil
	case cmdDelMember:
		a, err := decode[ms.MemberArgs](c)
		if err != nil {
			return nil, err
		}
		delete(f.members, a.ID)
		return nil, nil
	default:
		return nil, fmt.Errorf("%w: unknown command %q", ms.ErrBadRequest, c.Type)
	}
}

// apply applies one command directly, without Raft: for single-process use
// (Memory) and tests. index is the log index to record.
func (f *FSM) apply(c *command, index uint64) *result {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.applyCommand(c)
	if index != 0 {
		f.applied.Store(index)
	}
	return r
}
