package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	ms "github.com/dockyard/dockyard/metaserver"
)

// The change feed. While applying a namespace command the FSM notes which
// names and inodes it touched and, once applied, their new values; the
// changes go into a bounded ring, stamped with a log index, that any node
// serves to watchers (Watch, GET /v1/watch) from its own applied state.
//
// Stamps. The FSM does not learn the index of each entry while applying it
// (ApplyBatch stores it after), so a change is stamped when the feed is next
// read: a command's stamp is the applied index just before the next recorded
// command of the batch (the index of its own entry, unless a configuration
// entry sits between), the last one's is the batch's end. That is never
// below the entry's index, which is what a cache needs: a read answered at
// index V reflects every change stamped at or below V (reads only ever see
// whole batches), and a change stamped above V may be newer than the read.

// feedCap bounds the ring (changes, not commands: a create makes three).
// 64 Ki changes are ~20,000 creates: at the target rate of 5,000/s, four
// seconds, far more than a live watcher lags.
const feedCap = 1 << 16

// maxWatchChanges bounds one reply; a watcher that is further behind gets
// the rest on its next call.
const maxWatchChanges = 4096

// maxFollowerSilence is how long a follower may go without hearing from its
// leader and still serve the feed. Past it, its applied state may have
// stopped while the cluster moves on: answering "nothing new" then would
// keep watchers' caches stale, so it answers unavailable and they move on.
const maxFollowerSilence = 2 * time.Second

// pendingGroup is one command's changes, not yet stamped. lo is the applied
// index when it was recorded, which is the index of the entry before it.
type pendingGroup struct {
	lo      uint64
	changes []ms.Change
}

// changeFeed is the FSM's ring of changes. record runs under the FSM's
// write lock; settle and since run under its read lock (so they see whole
// batches); mu orders them among themselves.
type changeFeed struct {
	mu      sync.Mutex
	ring    []ms.Change // circular, len == limit once allocated
	limit   int         // ring capacity; 0 means feedCap (tests shrink it)
	head, n int         // oldest change and how many
	// floor: a watcher whose since is below it missed changes. It rises as
	// the ring forgets its oldest changes.
	floor   uint64
	pending []pendingGroup
	// restores is the FSM's restore count the ring is valid for. After a
	// restore the feed restarts at the first batch applied after it.
	restores  int64
	restarted bool
	atRestore uint64 // applied index when the restore was noticed
	wake      chan struct{}
}

// touched is what a command may change: names, inodes, whole directories.
type touched struct {
	entries []dentry // Parent+Name; Ino is the child before the command
	inos    []ms.Ino
	dirs    []ms.Ino
}

// dispatchWatched applies c and records what it changed in the feed.
func (f *FSM) dispatchWatched(c *command) (any, error) {
	t := f.touches(c)
	v, err := f.dispatchSafely(c)
	var e *ms.Error
	// A command refused with an errno changed nothing; anything else (a
	// panic turned into an error) may have changed part of what it touched.
	if t != nil && (err == nil || !errors.As(err, &e)) {
		f.feed.record(f.changesOf(t, ms.OriginOf(c.ReqID)), f.applied.Load(), f.restores.Load())
	}
	return v, err
}

// touches lists what c may change, with the children its names held
// before (an unlink or a rename changes the inode a name held).
func (f *FSM) touches(c *command) *touched {
	t := &touched{}
	name := func(dir ms.Ino, n string) {
		d, _ := f.entry(dir, n)
		t.entries = append(t.entries, dentry{Parent: dir, Name: n, Ino: d.Ino})
	}
	switch c.Type {
	case ms.OpCreate:
		a, err := decode[ms.CreateIn](c)
		if err != nil {
			return nil
		}
		name(a.Parent, a.Name)
		t.inos = append(t.inos, a.Parent)
	case ms.OpUnlink, ms.OpRmdir:
		a, err := decode[ms.NameArgs](c)
		if err != nil {
			return nil
		}
		name(a.Parent, a.Name)
		t.inos = append(t.inos, a.Parent)
	case ms.OpLink:
		a, err := decode[ms.LinkArgs](c)
		if err != nil {
			return nil
		}
		name(a.NewParent, a.NewName)
		t.inos = append(t.inos, a.Ino, a.NewParent)
	case ms.OpRename:
		a, err := decode[ms.RenameArgs](c)
		if err != nil {
			return nil
		}
		name(a.OldParent, a.OldName)
		name(a.NewParent, a.NewName)
		t.inos = append(t.inos, a.OldParent, a.NewParent)
	case ms.OpSetAttr:
		a, err := decode[ms.SetAttrArgs](c)
		if err != nil {
			return nil
		}
		t.inos = append(t.inos, a.Ino)
	case ms.OpSetXattr, ms.OpRemoveXattr:
		a, err := decode[ms.XattrArgs](c)
		if err != nil {
			return nil
		}
		t.inos = append(t.inos, a.Ino)
	case ms.OpCommitExtents:
		a, err := decode[ms.CommitExtentsArgs](c)
		if err != nil {
			return nil
		}
		t.inos = append(t.inos, a.Ino)
	case ms.OpCreateTree:
		a, err := decode[ms.CreateTreeArgs](c)
		if err != nil {
			return nil
		}
		// The new inodes are unknown to every cache; the names in parent
		// are one change instead of one per entry.
		t.dirs = append(t.dirs, a.Parent)
		t.inos = append(t.inos, a.Parent)
	case ms.OpCloneTree:
		a, err := decode[ms.CloneTreeArgs](c)
		if err != nil {
			return nil
		}
		// One new name in the destination; the inodes under it are new
		// to every cache, and the source does not change.
		name(a.NewParent, a.NewName)
		t.inos = append(t.inos, a.NewParent)
	default:
		return nil
	}
	return t
}

// changesOf reads the values of what t touched, after the command.
func (f *FSM) changesOf(t *touched, origin string) []ms.Change {
	out := make([]ms.Change, 0, 2*len(t.entries)+len(t.inos)+len(t.dirs))
	inos := t.inos
	for _, d := range t.dirs {
		out = append(out, ms.Change{Kind: ms.ChangeDir, Ino: d, Origin: origin})
	}
	for _, e := range t.entries {
		now, _ := f.entry(e.Parent, e.Name)
		out = append(out, ms.Change{Kind: ms.ChangeEntry, Ino: e.Parent, Name: e.Name, Child: now.Ino, Origin: origin})
		inos = append(inos, e.Ino, now.Ino)
	}
	for i, ino := range inos {
		// A command touches a handful of inodes: a scan beats a map.
		if ino == 0 || slices.Contains(inos[:i], ino) {
			continue
		}
		ch := ms.Change{Kind: ms.ChangeAttr, Ino: ino, Origin: origin}
		if n, ok := f.inodes[ino]; ok {
			a := n.Attr
			ch.Attr = &a
		}
		out = append(out, ch)
	}
	return out
}

func (fd *changeFeed) record(changes []ms.Change, applied uint64, restores int64) {
	fd.mu.Lock()
	defer fd.mu.Unlock()
	fd.checkRestore(applied, restores)
	fd.pending = append(fd.pending, pendingGroup{lo: applied, changes: changes})
	if fd.wake != nil {
		close(fd.wake)
		fd.wake = nil
	}
}

// settle stamps the pending changes and moves them into the ring. The
// caller holds the FSM's read lock: no batch is half applied, so applied is
// the end of the last one. fd.mu is held.
func (fd *changeFeed) settle(applied uint64, restores int64) {
	fd.checkRestore(applied, restores)
	if fd.restarted {
		if applied == fd.atRestore {
			return
		}
		// The first batch after the restore: the feed starts over at its
		// end, and its own changes are already part of that state.
		fd.restarted = false
		fd.floor = applied
		fd.pending = nil
		return
	}
	if len(fd.pending) == 0 {
		return
	}
	if fd.ring == nil {
		if fd.limit <= 0 {
			fd.limit = feedCap
		}
		fd.ring = make([]ms.Change, fd.limit)
	}
	for i, g := range fd.pending {
		stamp := applied
		if i+1 < len(fd.pending) {
			stamp = fd.pending[i+1].lo
		}
		for _, ch := range g.changes {
			ch.Index = stamp
			if fd.n == len(fd.ring) {
				fd.floor = max(fd.floor, fd.ring[fd.head].Index)
				fd.ring[fd.head] = ms.Change{}
				fd.head = (fd.head + 1) % len(fd.ring)
				fd.n--
			}
			fd.ring[(fd.head+fd.n)%len(fd.ring)] = ch
			fd.n++
		}
	}
	clear(fd.pending)
	fd.pending = fd.pending[:0]
}

// checkRestore notices that the FSM replaced its state from a snapshot:
// what the ring says happened before no longer leads to the state. The
// applied index is stale until the first batch after the restore (Restore
// does not know the snapshot's index), so the feed restarts at that batch's
// end. It is noticed at the first command recorded after the restore or,
// when that is not a namespace command, at the first read after it; in the
// latter case the restart waits for one more batch (heartbeats make one
// every few seconds). fd.mu is held.
func (fd *changeFeed) checkRestore(applied uint64, restores int64) {
	if restores == fd.restores {
		return
	}
	fd.restores = restores
	fd.restarted, fd.atRestore = true, applied
	clear(fd.pending)
	fd.pending = fd.pending[:0]
	clear(fd.ring)
	fd.head, fd.n = 0, 0
}

func (fd *changeFeed) at(i int) *ms.Change { return &fd.ring[(fd.head+i)%len(fd.ring)] }

// changesSince answers a watcher from the state as applied now, and returns
// the channel that is closed when more changes are recorded.
func (f *FSM) changesSince(since uint64) (ms.WatchReply, <-chan struct{}) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fd := &f.feed
	fd.mu.Lock()
	defer fd.mu.Unlock()
	applied := f.applied.Load()
	fd.settle(applied, f.restores.Load())
	if fd.wake == nil {
		fd.wake = make(chan struct{})
	}
	if fd.restarted {
		// The applied index is stale until the first batch after the
		// restore; a watcher must not resume from it.
		return ms.WatchReply{Reset: true}, fd.wake
	}
	if since < fd.floor {
		return ms.WatchReply{Applied: applied, Reset: true}, fd.wake
	}
	// The first change stamped above since. A since above applied (a
	// watcher coming from a node further ahead, or one asking where the
	// feed is) gets no changes and this node's applied index.
	i := sort.Search(fd.n, func(i int) bool { return fd.at(i).Index > since })
	r := ms.WatchReply{Applied: applied}
	if i == fd.n {
		return r, fd.wake
	}
	end := i
	for end < fd.n && (end-i < maxWatchChanges || fd.at(end).Index == fd.at(end-1).Index) {
		end++
	}
	r.Changes = make([]ms.Change, 0, end-i)
	for j := i; j < end; j++ {
		c := *fd.at(j)
		if c.Attr != nil {
			a := *c.Attr
			c.Attr = &a
		}
		r.Changes = append(r.Changes, c)
	}
	if end < fd.n {
		// Cut at a stamp boundary: the watcher resumes after it.
		r.Applied = r.Changes[len(r.Changes)-1].Index
	}
	return r, fd.wake
}

// watch is the long poll shared by Node and Memory: changes after since,
// waiting up to wait for the first one.
func (f *FSM) watch(ctx context.Context, since uint64, wait time.Duration) (ms.WatchReply, error) {
	wait = min(max(wait, 0), ms.MaxWatchWait)
	var timer *time.Timer
	for {
		r, wake := f.changesSince(since)
		restarting := r.Reset && r.Applied == 0
		if (r.Reset && !restarting) || len(r.Changes) > 0 || wait == 0 {
			return r, nil
		}
		if timer == nil {
			timer = time.NewTimer(wait)
			defer timer.Stop()
		}
		var poll *time.Timer
		var pollC <-chan time.Time
		if restarting {
			// The restart ends with a batch that may record nothing.
			poll = time.NewTimer(restartPoll)
			pollC = poll.C
		}
		select {
		case <-wake:
		case <-pollC:
		case <-timer.C:
			r, _ := f.changesSince(since)
			return r, nil
		case <-ctx.Done():
			return ms.WatchReply{}, fmt.Errorf("watch: %w", ctx.Err())
		}
		if poll != nil {
			poll.Stop()
		}
	}
}

// restartPoll is how often a watch waiting out a restart looks again.
const restartPoll = 20 * time.Millisecond

// Watch implements metaserver.Watcher on this node's applied state.
func (n *Node) Watch(ctx context.Context, since uint64, wait time.Duration) (ms.WatchReply, error) {
	if err := n.feedLive(); err != nil {
		return ms.WatchReply{}, err
	}
	r, err := n.fsm.watch(ctx, since, wait)
	if err != nil {
		return r, err
	}
	// The node may have been cut off while the request waited.
	if err := n.feedLive(); err != nil {
		return ms.WatchReply{}, err
	}
	return r, nil
}

// feedLive refuses to serve the feed from a state that may have stopped
// following the cluster.
func (n *Node) feedLive() error {
	switch st := n.raft.State(); st {
	case raft.Leader:
		// A leader cut off from its quorum steps down within its lease.
		return nil
	case raft.Follower:
		if silent := time.Since(n.raft.LastContact()); silent > maxFollowerSilence {
			return fmt.Errorf("watch: %w: no word from a leader for %s", ms.ErrUnavailable, silent.Round(time.Millisecond))
		}
		return nil
	default:
		return fmt.Errorf("watch: %w: node is %s", ms.ErrUnavailable, st)
	}
}

// Watch implements metaserver.Watcher for the in-memory metaserver.
func (m *Memory) Watch(ctx context.Context, since uint64, wait time.Duration) (ms.WatchReply, error) {
	return m.fsm.watch(ctx, since, wait)
}

var (
	_ ms.Watcher = (*Node)(nil)
	_ ms.Watcher = (*Memory)(nil)
)

// serveWatch is GET /v1/watch?since=N&wait=MS.
func (n *Node) serveWatch(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	since, err := strconv.ParseUint(q.Get("since"), 10, 64)
	if err != nil && q.Get("since") != "" {
		writeError(w, ms.ToWire(fmt.Errorf("%w: watch: since %q is not an index", ms.ErrBadRequest, q.Get("since"))))
		return
	}
	var wait time.Duration
	if s := q.Get("wait"); s != "" {
		millis, err := strconv.ParseInt(s, 10, 64)
		if err != nil || millis < 0 {
			writeError(w, ms.ToWire(fmt.Errorf("%w: watch: wait %q is not a number of milliseconds", ms.ErrBadRequest, s)))
			return
		}
		wait = time.Duration(millis) * time.Millisecond
	}
	reply, err := n.Watch(r.Context(), since, wait)
	if err != nil {
		writeError(w, ms.ToWire(err))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(reply) // a broken reply fails the watcher's call; it retries
}
