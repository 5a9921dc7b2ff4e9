package raftlog_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"

	ms "github.com/dockyard/dockyard/metaserver"
	"github.com/dockyard/dockyard/metaserver/server"
	"github.com/dockyard/dockyard/metaserver/server/raftlog"
)

func startNode(t *testing.T, dir string) *server.Node {
	t.Helper()
	n, err := server.Start(server.Config{ID: "m1", DataDir: dir, APIAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond, NoSync: true, LogOutput: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNodeStartsOnBoltLogDataDir: a data directory whose Raft log lives in
// raft.db, as the BoltDB version of the metaserver left it, starts with its
// state intact, and the log leaves raft.db for good.
func TestNodeStartsOnBoltLogDataDir(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir)
	ctx := context.Background()
	for i := range 20 {
		if _, err := n.API().Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: fmt.Sprintf("f%d", i), Mode: syscall.S_IFREG | 0o644}); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	// Turn the directory into the old layout: every log entry in raft.db
	// (whose term and vote are already there), no segment files.
	logDir := filepath.Join(dir, "raftlog")
	lg, err := raftlog.Open(logDir, raftlog.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := lg.FirstIndex()
	last, _ := lg.LastIndex()
	for i := first; i <= last; i++ {
		var l raft.Log
		if err := lg.GetLog(i, &l); err != nil {
			t.Fatal(err)
		}
		if err := bolt.StoreLog(&l); err != nil {
			t.Fatal(err)
		}
	}
	last, _ = bolt.LastIndex()
	if last < 20 {
		t.Fatalf("old-layout raft.db holds logs up to %d only", last)
	}
	_ = lg.Close()
	_ = bolt.Close()
	if err := os.RemoveAll(logDir); err != nil {
		t.Fatal(err)
	}

	n = startNode(t, dir)
	for i := range 20 {
		if _, err := n.API().Lookup(ctx, ms.RootIno, fmt.Sprintf("f%d", i)); err != nil {
			t.Fatalf("f%d after the migration: %v", i, err)
		}
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	bolt, err = raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer bolt.Close()
	if last, _ := bolt.LastIndex(); last != 0 {
		t.Fatalf("raft.db still holds logs up to %d after the migration", last)
	}
}

// TestNodeStartsWithLogBehindSnapshot: a log that ends before the newest
// snapshot (a crash between installing a leader's snapshot and emptying the
// log) is dropped at start, so the next entries do not follow a gap.
func TestNodeStartsWithLogBehindSnapshot(t *testing.T) {
	dir := t.TempDir()
	n := startNode(t, dir)
	ctx := context.Background()
	create := func(n *server.Node, name string) {
		t.Helper()
		if _, err := n.API().Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: name, Mode: syscall.S_IFREG | 0o644}); err != nil {
			t.Fatalf("creating %s: %v", name, err)
		}
	}
	for i := range 10 {
		create(n, fmt.Sprintf("f%d", i))
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	lg, err := raftlog.Open(filepath.Join(dir, "raftlog"), raftlog.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	last, _ := lg.LastIndex()
	if err := lg.DeleteRange(last-3, last); err != nil {
		t.Fatal(err)
	}
	_ = lg.Close()

	n = startNode(t, dir)
	for i := range 10 {
		if _, err := n.API().Lookup(ctx, ms.RootIno, fmt.Sprintf("f%d", i)); err != nil {
			t.Fatalf("f%d after the restart: %v", i, err)
		}
	}
	create(n, "after")
}
