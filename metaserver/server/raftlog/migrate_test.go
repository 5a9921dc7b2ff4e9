package raftlog

import (
	"errors"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

func openBolt(t testing.TB, path string) *raftboltdb.BoltStore {
	t.Helper()
	b, err := raftboltdb.New(raftboltdb.Options{Path: path, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestMigrateFromBolt(t *testing.T) {
	dir := t.TempDir()
	bolt := openBolt(t, filepath.Join(dir, "raft.db"))
	old := entries(40, 3000, 2) // a log compacted once already
	if err := bolt.StoreLogs(old); err != nil {
		t.Fatal(err)
	}
	if err := bolt.SetUint64([]byte("CurrentTerm"), 2); err != nil {
		t.Fatal(err)
	}
	s := open(t, filepath.Join(dir, "raftlog"), Options{SegmentSize: 64 << 10, NoSync: true})
	n, err := Migrate(s, bolt)
	if err != nil {
		t.Fatal(err)
	}
	if n != uint64(len(old)) {
		t.Fatalf("copied %d entries, want %d", n, len(old))
	}
	checkRange(t, s, old)
	if last, _ := bolt.LastIndex(); last != 0 {
		t.Fatalf("bolt still holds logs up to %d", last)
	}
	if term, err := bolt.GetUint64([]byte("CurrentTerm")); err != nil || term != 2 {
		t.Fatalf("stable state lost in migration: term %d, %v", term, err)
	}
	// Once only: later starts find nothing to copy, even after raft has
	// emptied the new log (as it does after installing a snapshot).
	if err := s.DeleteRange(40, 3000); err != nil {
		t.Fatal(err)
	}
	if n, err := Migrate(s, bolt); err != nil || n != 0 {
		t.Fatalf("second migration copied %d, %v", n, err)
	}
	checkRange(t, s, nil)
}

// TestMigrateInterrupted: a crash after part of the copy left a prefix in
// the new log and the old log whole; the next start copies it all again.
func TestMigrateInterrupted(t *testing.T) {
	dir := t.TempDir()
	bolt := openBolt(t, filepath.Join(dir, "raft.db"))
	if err := bolt.StoreLogs(entries(1, 2500, 1)); err != nil {
		t.Fatal(err)
	}
	s := open(t, filepath.Join(dir, "raftlog"), Options{NoSync: true})
	store(t, s, entries(1, migrateBatch, 1))
	if _, err := Migrate(s, bolt); err != nil {
		t.Fatal(err)
	}
	checkRange(t, s, entries(1, 2500, 1))
	// And a crash after the whole copy, before the old log was cleared:
	// nothing is copied twice.
	if err := bolt.StoreLogs(entries(1, 2500, 1)); err != nil {
		t.Fatal(err)
	}
	if n, err := Migrate(s, bolt); err != nil || n != 0 {
		t.Fatalf("migration after a complete copy copied %d, %v", n, err)
	}
	checkRange(t, s, entries(1, 2500, 1))
	var l raft.Log
	if err := bolt.GetLog(1, &l); !errors.Is(err, raft.ErrLogNotFound) {
		t.Fatalf("old log not cleared: %v", err)
	}
}
