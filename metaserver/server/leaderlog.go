package server

import (
	"errors"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/dockyard/dockyard/metaserver/server/raftlog"
)

// The leader writes its own Raft log in parallel with replication.
//
// hashicorp/raft (v1.7.3) appends a batch to the leader's log and only then
// hands it to replication, so every commit waited for two fdatasyncs one
// after the other: the leader's, then a follower's. Most of a create's
// latency at 16 clients was that chain and the goroutine hand-offs around
// it (the leader's main loop sits in its fsync meanwhile and cannot
// process commits). Here the leader's StoreLogs writes to the page cache
// and returns; a syncer flushes it at once, while the followers already
// receive the entries (raftlog.StoreLogsDeferred).
//
// raft then counts the leader's copy towards the commit before it is on
// disk, so by itself a "committed" entry could be durable on a follower
// only. Nothing observable is allowed to depend on that commit until the
// leader's copy is durable too, which makes it durable on a majority (the
// commit quorum, which includes the leader):
//
//   - the FSM applies a batch only after the local log holds it on disk
//     (FSM.gate); clients get their answer and linearizable reads their
//     state from the FSM, watchers their changes from it, snapshots their
//     contents, so none of them sees an entry a crash could take back;
//   - followers learn a commit index no higher than the leader's durable
//     index (durableTransport), so they do not apply such an entry either;
//   - membership changes are appended with a synchronous StoreLogs, since
//     raft acts on a committed configuration inside its own loop.
//
// A follower's StoreLogs stays synchronous: its acknowledgement is its
// promise that the entry is on its disk.

// leaderLogStore is the log store raft sees (behind its cache): the
// leader's appends are deferred, everyone else's synchronous.
type leaderLogStore struct {
	*raftlog.Store
	raft *atomic.Pointer[raft.Raft] // nil until raft.NewRaft returned
	met  *metrics                   // nil in tests
}

var (
	_ raft.LogStore          = leaderLogStore{}
	_ raft.MonotonicLogStore = leaderLogStore{}
)

func (s leaderLogStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

func (s leaderLogStore) StoreLogs(logs []*raft.Log) error {
	start := time.Now()
	leader, deferred := s.mode(logs)
	var err error
	if deferred {
		err = s.Store.StoreLogsDeferred(logs)
	} else {
		err = s.Store.StoreLogs(logs)
	}
	if s.met != nil && err == nil {
		role := "follower"
		if leader {
			role = "leader"
		}
		s.met.logAppend.WithLabelValues(role).Observe(time.Since(start).Seconds())
		s.met.logEntries.WithLabelValues(role).Observe(float64(len(logs)))
	}
	return err
}

// mode reports whether the append is the leader's own and whether it may
// return before its fdatasync. raft appends as leader only from its leader
// loop; a leader that accepts a newer leader's entries becomes a follower
// before it stores them, so a follower's append is never deferred.
func (s leaderLogStore) mode(logs []*raft.Log) (leader, deferred bool) {
	r := s.raft.Load()
	if r == nil || r.State() != raft.Leader {
		return false, false
	}
	for _, l := range logs {
		if l.Type == raft.LogConfiguration {
			return true, false
		}
	}
	return true, true
}

// durableTransport is the Raft transport with the commit index it sends to
// followers held to what is durable in the local log.
type durableTransport struct {
	*raft.NetworkTransport
	log *raftlog.Store
}

var (
	_ raft.Transport   = durableTransport{}
	_ raft.WithPreVote = durableTransport{}
	_ raft.WithClose   = durableTransport{}
)

func (t durableTransport) clamp(a *raft.AppendEntriesRequest) {
	if d := t.log.Durable(); a.LeaderCommitIndex > d {
		a.LeaderCommitIndex = d
	}
}

func (t durableTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, a *raft.AppendEntriesRequest, r *raft.AppendEntriesResponse) error {
	t.clamp(a)
	return t.NetworkTransport.AppendEntries(id, target, a, r)
}

func (t durableTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := t.NetworkTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	return durablePipeline{AppendPipeline: p, t: t}, nil
}

type durablePipeline struct {
	raft.AppendPipeline
	t durableTransport
}

func (p durablePipeline) AppendEntries(a *raft.AppendEntriesRequest, r *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	p.t.clamp(a)
	return p.AppendPipeline.AppendEntries(a, r)
}

// durableGate makes the FSM wait until the local log holds an index on
// disk. It fails only when the node stops (or the log failed) first.
func durableGate(log *raftlog.Store, stop <-chan struct{}, met *metrics) func(uint64) error {
	return func(idx uint64) error {
		if log.Durable() >= idx {
			met.applyWait.Observe(0)
			return nil
		}
		start := time.Now()
		err := log.WaitDurable(idx, stop)
		met.applyWait.Observe(time.Since(start).Seconds())
		return err
	}
}

// errGateClosed reports whether a gate error is the node stopping rather
// than the log failing.
func errGateClosed(err error) bool {
	return errors.Is(err, raftlog.ErrCanceled) || errors.Is(err, raftlog.ErrClosed)
}
