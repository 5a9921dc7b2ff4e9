package raftlog

import (
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// Deferred syncs let a Raft leader write its own log in parallel with
// replication (Raft thesis, section 10.2.1): the append returns once the
// records are written to the page cache and a syncer goroutine fdatasyncs
// them right away, while the leader already sends them to its followers.
// Whoever must not act on an entry before it is on this disk waits for
// Durable (WaitDurable). hashicorp/raft counts the leader's own copy
// towards the commit as soon as StoreLogs returns, so the caller is the
// one that must hold everything observable back until the entry is
// durable here too; the metaserver does so (see metaserver/server).
//
// The crash model is unchanged: records are written and checksummed as by
// StoreLogs, and a crash may leave any prefix of what was not yet synced.

// durability is how far the log is known to be on disk.
type durability struct {
	index  uint64        // highest index synced (0: none, or log empty)
	ch     chan struct{} // closed and replaced whenever index advances
	err    error         // the syncer's fdatasync failed: nothing advances again
	closed bool
}

// wake tells the waiters of WaitDurable that something changed; dmu is held.
func (d *durability) wake() {
	close(d.ch)
	d.ch = make(chan struct{})
}

// StoreLogsDeferred appends entries like StoreLogs but does not wait for
// the fdatasync: it returns once they are written and readable, and a
// background sync makes them durable (Durable, WaitDurable). An append
// that needs a new segment is synced before it returns, as by StoreLogs,
// since a segment must be whole on disk before the next one exists.
//
// Only a caller that holds back everything that depends on the entries
// until WaitDurable returns may use it; raft's followers must use
// StoreLogs, since their acknowledgement is a promise of durability.
func (s *Store) StoreLogsDeferred(logs []*raft.Log) error { return s.storeLogs(logs, true) }

// Durable returns the highest index known to be on disk.
func (s *Store) Durable() uint64 {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	return s.dur.index
}

// WaitDurable blocks until every entry up to index is on disk, or cancel
// is closed (it then returns ErrCanceled). It fails with ErrFailed when a
// sync failed and with ErrClosed when the store is closed first.
func (s *Store) WaitDurable(index uint64, cancel <-chan struct{}) error {
	for {
		s.dmu.Lock()
		d := s.dur
		s.dmu.Unlock()
		switch {
		case d.err != nil:
			return fmt.Errorf("%w: %w", ErrFailed, d.err)
		case d.index >= index:
			return nil
		case d.closed:
			return ErrClosed
		}
		select {
		case s.urgent <- struct{}{}: // someone waits: no point delaying the sync
		default:
		}
		select {
		case <-d.ch:
		case <-cancel:
			return ErrCanceled
		}
	}
}

// writeDeferred writes the encoded batch after the tail segment's records
// and publishes it without syncing, then wakes the syncer. It reports
// false, having written nothing, when the batch does not fit in the tail
// (or there is none): the caller then appends it with syncs. wmu is held.
func (s *Store) writeDeferred(logs []*raft.Log, buf []byte, ends []int) (bool, error) {
	s.mu.RLock()
	var tail *segment
	if n := len(s.segs); n > 0 {
		tail = s.segs[n-1]
	}
	s.mu.RUnlock()
	if tail == nil || tail.end+int64(len(buf)) > tail.size {
		return false, nil
	}
	if _, err := tail.f.WriteAt(buf, tail.end); err != nil {
		return true, fmt.Errorf("raft log: appending to %s: %w", tail.path, err)
	}
	s.mu.Lock()
	for k := range logs {
		start := 0
		if k > 0 {
			start = ends[k-1]
		}
		tail.offs = append(tail.offs, uint32(tail.end+int64(start)))
	}
	tail.end += int64(len(buf))
	s.last = logs[len(logs)-1].Index
	s.mu.Unlock()
	now := time.Now().UnixNano()
	if s.prevAppend != 0 {
		// A moving average over about the last eight appends.
		g := s.appendGap.Load()
		s.appendGap.Store(g - g/8 + (now-s.prevAppend)/8)
	}
	s.prevAppend = now
	select {
	case s.kick <- struct{}{}:
	default: // a sync is pending already; it will see these records
	}
	return true, nil
}

func (s *Store) startSyncer() {
	s.kick = make(chan struct{}, 1)
	s.urgent = make(chan struct{}, 1)
	s.quit = make(chan struct{})
	s.done = make(chan struct{})
	go s.syncer()
}

func (s *Store) stopSyncer() {
	close(s.quit)
	<-s.done
}

// syncer syncs the tail segment after deferred appends. A sync starts at
// once, unless appends come densely (on average less than half of
// Options.SyncDelay apart) and the previous sync started less than
// SyncDelay ago: then it waits for the rest of that interval, or until
// someone blocks in WaitDurable. Sparse appends (one client, say) thus
// sync at once and their commit finds them durable; dense ones share a
// sync. One fdatasync covers every append written before it started.
func (s *Store) syncer() {
	defer close(s.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	var lastStart time.Time
	for {
		urgent := false
		select {
		case <-s.quit:
			return
		case <-s.kick:
		case <-s.urgent:
			urgent = true
		}
		dense := s.appendGap.Load() < int64(s.opts.SyncDelay/2)
		if wait := time.Until(lastStart.Add(s.opts.SyncDelay)); wait > 0 && dense && !urgent {
			timer.Reset(wait)
			select {
			case <-s.quit:
				timer.Stop()
				return
			case <-s.urgent:
				timer.Stop()
			case <-timer.C:
			}
		}
		lastStart = time.Now()
		s.smu.Lock()
		err := s.flushLocked()
		s.smu.Unlock()
		if err != nil {
			return // recorded in dur.err; writes now fail with ErrFailed
		}
	}
}

// flushLocked syncs the tail segment if it holds records not yet known to
// be durable, and publishes them as durable. smu is held, so no segment is
// cut or closed meanwhile; appends may go on (records written before the
// sync starts are covered by it).
func (s *Store) flushLocked() error {
	s.mu.RLock()
	last := s.last
	var tail *segment
	if n := len(s.segs); n > 0 {
		tail = s.segs[n-1]
	}
	s.mu.RUnlock()
	s.dmu.Lock()
	d := s.dur
	s.dmu.Unlock()
	if d.err != nil {
		return d.err
	}
	if tail == nil || last <= d.index {
		return nil
	}
	if err := s.sync(tail); err != nil {
		s.dmu.Lock()
		s.dur.err = err
		s.dur.wake()
		s.dmu.Unlock()
		return err
	}
	s.setDurable(last)
	return nil
}

// setDurable publishes that the log is on disk up to index.
func (s *Store) setDurable(index uint64) {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if index > s.dur.index {
		s.dur.index = index
		s.dur.wake()
	}
}

// cutDurable lowers the durable index after the log lost its tail (or
// everything): the indexes will be written again, with other entries.
func (s *Store) cutDurable(index uint64) {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	s.dur.index = min(s.dur.index, index)
}

func (s *Store) closeDurable() {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	if !s.dur.closed {
		s.dur.closed = true
		s.dur.wake()
	}
}

// syncFailure is the syncer's fdatasync error, if one failed.
func (s *Store) syncFailure() error {
	s.dmu.Lock()
	defer s.dmu.Unlock()
	return s.dur.err
}
