package raftlog

import (
	"fmt"

	"github.com/hashicorp/raft"
)

// migrateBatch bounds the entries copied per StoreLogs call, so a long old
// log is never held in memory whole.
const migrateBatch = 1024

// Migrate moves the entries of an older log store (the BoltDB one earlier
// metaserver versions kept in raft.db) into s, once: it copies them when s
// holds fewer, then deletes them from src, so src is never read for logs
// again. Call it before raft starts. A crash half way leaves src whole and
// s with a prefix of it, and the next call starts the copy over.
// It returns how many entries it copied.
func Migrate(s *Store, src raft.LogStore) (uint64, error) {
	first, err := src.FirstIndex()
	if err != nil {
		return 0, fmt.Errorf("raft log migration: %w", err)
	}
	last, err := src.LastIndex()
	if err != nil {
		return 0, fmt.Errorf("raft log migration: %w", err)
	}
	if last == 0 {
		return 0, nil
	}
	var copied uint64
	mine, err := s.LastIndex()
	if err != nil {
		return 0, fmt.Errorf("raft log migration: %w", err)
	}
	if mine < last {
		if mine > 0 {
			// Only an earlier, interrupted migration wrote here.
			myFirst, _ := s.FirstIndex()
			if err := s.DeleteRange(myFirst, mine); err != nil {
				return 0, fmt.Errorf("raft log migration: %w", err)
			}
		}
		batch := make([]*raft.Log, 0, migrateBatch)
		for i := first; i <= last; i++ {
			l := new(raft.Log)
			if err := src.GetLog(i, l); err != nil {
				return copied, fmt.Errorf("raft log migration: reading index %d: %w", i, err)
			}
			batch = append(batch, l)
			if len(batch) == migrateBatch || i == last {
				if err := s.StoreLogs(batch); err != nil {
					return copied, fmt.Errorf("raft log migration: %w", err)
				}
				copied += uint64(len(batch))
				batch = batch[:0]
			}
		}
	}
	if err := src.DeleteRange(first, last); err != nil {
		return copied, fmt.Errorf("raft log migration: clearing the old log: %w", err)
	}
	return copied, nil
}
