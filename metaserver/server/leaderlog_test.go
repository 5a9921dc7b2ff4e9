package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	ms "github.com/dockyard/dockyard/metaserver"
	"github.com/dockyard/dockyard/metaserver/server/raftlog"
)

func createEntry(t *testing.T, index uint64, name string) *raft.Log {
	t.Helper()
	p, err := json.Marshal(ms.CreateIn{Parent: ms.RootIno, Name: name, Mode: syscall.S_IFREG | 0o644, Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	c := command{Type: ms.OpCreate, ReqID: "r-" + name, Time: 1_700_000_000_000_000_000, Payload: p}
	return &raft.Log{Index: index, Term: 1, Type: raft.LogCommand, Data: encodeCommand(&c)}
}

func hasRootName(f *FSM, name string) bool {
	_, err := f.query(ms.OpLookup, mustJSON(ms.NameArgs{Parent: ms.RootIno, Name: name}))
	return err == nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// The FSM applies nothing before the gate says the local log holds it on
// disk: the leader's own copy is written in parallel with replication.
func TestFSMWaitsForDurableLog(t *testing.T) {
	f := NewFSM()
	release := make(chan struct{})
	asked := make(chan uint64, 1)
	f.gate = func(idx uint64) error {
		asked <- idx
		<-release
		return nil
	}
	done := make(chan []any, 1)
	batch := []*raft.Log{createEntry(t, 1, "a"), createEntry(t, 2, "b")}
	go func() { done <- f.ApplyBatch(batch) }()
	if idx := <-asked; idx != 2 {
		t.Fatalf("gate asked for index %d, want the batch's last, 2", idx)
	}
	select {
	case <-done:
		t.Fatal("ApplyBatch returned before the log was durable")
	case <-time.After(20 * time.Millisecond):
	}
	if f.AppliedIndex() != 0 || hasRootName(f, "a") {
		t.Fatal("state changed before the log was durable")
	}
	close(release)
	out := <-done
	for i, r := range out {
		if res, ok := r.(*result); !ok || res.Err != nil {
			t.Fatalf("entry %d: %+v", i+1, r)
		}
	}
	if f.AppliedIndex() != 2 || !hasRootName(f, "a") || !hasRootName(f, "b") {
		t.Fatalf("after the gate opened: applied %d, a %v, b %v", f.AppliedIndex(), hasRootName(f, "a"), hasRootName(f, "b"))
	}
}

// A node stopping while its FSM waits for the log applies nothing; its
// proposers hear the node is unavailable (and retry elsewhere).
func TestFSMGateClosedAppliesNothing(t *testing.T) {
	f := NewFSM()
	f.gate = func(uint64) error { return raftlog.ErrCanceled }
	out := f.ApplyBatch([]*raft.Log{createEntry(t, 1, "a"), {Index: 2, Type: raft.LogNoop}})
	r, ok := out[0].(*result)
	if !ok || r.Err == nil || !errors.Is(r.Err.Err(), ms.ErrUnavailable) {
		t.Fatalf("result of a command while stopping: %+v, want ErrUnavailable", out[0])
	}
	if out[1] != nil {
		t.Fatalf("result of a no-op: %+v", out[1])
	}
	if f.AppliedIndex() != 0 || hasRootName(f, "a") {
		t.Fatal("a stopping node applied an entry its log did not hold on disk")
	}
}

// A log that could not be synced stops the FSM instead of letting it show
// or skip state.
func TestFSMGateFailurePanics(t *testing.T) {
	f := NewFSM()
	f.gate = func(uint64) error { return fmt.Errorf("%w: disk gone", raftlog.ErrFailed) }
	defer func() {
		if recover() == nil {
			t.Fatal("ApplyBatch went on after the log failed to sync")
		}
		if hasRootName(f, "a") {
			t.Fatal("applied an entry the log failed to sync")
		}
	}()
	f.ApplyBatch([]*raft.Log{createEntry(t, 1, "a")})
}

// Followers hear a commit index no higher than the leader's durable index.
func TestTransportHoldsCommitIndexToDurable(t *testing.T) {
	log, err := raftlog.Open(filepath.Join(t.TempDir(), "log"), raftlog.Options{SegmentSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	tr := durableTransport{log: log}
	for _, c := range []struct {
		store      uint64 // entries 1..store synced first (0: none)
		commit     uint64
		wantCommit uint64
	}{
		{0, 5, 0},
		{3, 5, 3},
		{3, 2, 2},
		{9, 9, 9},
	} {
		if last, _ := log.LastIndex(); c.store > last {
			var logs []*raft.Log
			for i := last + 1; i <= c.store; i++ {
				logs = append(logs, &raft.Log{Index: i, Term: 1, Type: raft.LogNoop})
			}
			if err := log.StoreLogs(logs); err != nil {
				t.Fatal(err)
			}
		}
		a := &raft.AppendEntriesRequest{LeaderCommitIndex: c.commit}
		tr.clamp(a)
		if a.LeaderCommitIndex != c.wantCommit {
			t.Errorf("durable %d, commit %d: sent %d, want %d", c.store, c.commit, a.LeaderCommitIndex, c.wantCommit)
		}
	}
}

// Only the leader defers its syncs: anything else stored through the
// node's log store is durable when StoreLogs returns.
func TestLeaderLogStoreSyncsWhenNotLeader(t *testing.T) {
	log, err := raftlog.Open(filepath.Join(t.TempDir(), "log"), raftlog.Options{SegmentSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	s := leaderLogStore{Store: log, raft: new(atomic.Pointer[raft.Raft])}
	if err := s.StoreLogs([]*raft.Log{{Index: 1, Term: 1, Type: raft.LogNoop}, {Index: 2, Term: 1, Type: raft.LogNoop}}); err != nil {
		t.Fatal(err)
	}
	if d := log.Durable(); d != 2 {
		t.Fatalf("durable %d after a follower's StoreLogs returned, want 2", d)
	}
}

// In a running cluster no node has applied what its own log does not hold
// on disk, and a create is answered only then.
func TestAppliedNeverAheadOfDurable(t *testing.T) {
	nodes := startCluster(t, 3)
	c, err := ms.NewClient(addrs(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	leader := leaderOf(nodes)
	for i := range 50 {
		if _, err := c.Create(context.Background(), ms.CreateIn{Parent: ms.RootIno, Name: fmt.Sprint("d", i), Mode: syscall.S_IFREG | 0o644, Exclusive: true}); err != nil {
			t.Fatal(err)
		}
		if a, d := leader.fsm.AppliedIndex(), leader.log.Durable(); a > d {
			t.Fatalf("leader answered a create at applied index %d with its log durable to %d", a, d)
		}
		for _, n := range nodes {
			if a, d := n.fsm.AppliedIndex(), n.log.Durable(); a > d {
				t.Fatalf("%s applied %d, its log durable to %d", n.ID(), a, d)
			}
		}
	}
}

// blockedFuture is a raft future nobody answers, as a proposal still queued
// for the FSM when raft shuts down is; done answers it.
type blockedFuture struct{ done chan error }

func (f blockedFuture) Error() error { return <-f.done }

// A proposal whose future raft never answers must not hold the node: await
// gives up once the node stops (Close used to hang on the node's own
// maintenance proposal, queued behind the FSM's wait for the log sync).
func TestAwaitReturnsWhenNodeStops(t *testing.T) {
	n := &Node{stop: make(chan struct{})}
	answered := blockedFuture{done: make(chan error, 1)}
	answered.done <- raft.ErrLeadershipLost
	if err := n.await(answered); !errors.Is(err, raft.ErrLeadershipLost) {
		t.Fatalf("await of an answered future: %v, want its error", err)
	}

	stuck := blockedFuture{done: make(chan error)}
	got := make(chan error, 1)
	go func() { got <- n.await(stuck) }()
	select {
	case err := <-got:
		t.Fatalf("await returned %v before the future was answered or the node stopped", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(n.stop)
	select {
	case err := <-got:
		if !errors.Is(err, raft.ErrRaftShutdown) {
			t.Fatalf("await after stop: %v, want raft.ErrRaftShutdown", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("await still blocked 5 s after the node stopped")
	}
	close(stuck.done) // lets the waiting goroutine end
}
