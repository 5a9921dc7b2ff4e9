package fs

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/dockyard/dockyard/metaserver"
)

// Durability of file data. By default shards are written buffered
// (chunkserver.Client.PutBuffered): a chunkserver acknowledges a shard once
// it is written to its file system and makes it durable at the next Sync, or
// on its own within its flush interval (5 s by default). That is the contract
// of a local file system: write and close return before the data is on disk;
// fsync returns after. File.Sync is fsync: it flushes the file, then syncs
// every chunkserver that got a buffered shard of the file from this client
// since the file's last Sync, in parallel, and returns their errors.
//
// The servers are remembered per inode, not per handle, because fsync(2)
// covers every write to the file, also through a descriptor closed since
// (tools such as `sync FILE` open the file afresh just to fsync it). A
// chunkserver's Sync covers all its buffered shards, so syncing one file can
// make others durable too; that costs nothing extra.
//
// Options.DurableWrites makes every shard durable before its write returns
// instead, and File.Sync then calls no chunkserver.

// maxSyncInodes bounds the inodes whose servers are remembered. Past it the
// servers of an inode are moved to one set every Sync covers: correct, at the
// price of syncing a few more servers than needed, while a client writes
// tens of thousands of files without ever syncing them.
const maxSyncInodes = 1 << 16

// syncSet remembers, per inode, the chunkservers holding buffered shards
// this client wrote for it that no Sync has covered yet. The zero value is
// ready to use.
type syncSet struct {
	mu    sync.Mutex
	byIno map[metaserver.Ino]map[string]struct{}
	// overflow holds the servers of inodes evicted past maxSyncInodes;
	// every Sync covers them.
	overflow map[string]struct{}
}

// add records that ch's shards went to their servers buffered for ino.
func (s *syncSet) add(ino metaserver.Ino, ch metaserver.Chunk) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byIno == nil {
		s.byIno = map[metaserver.Ino]map[string]struct{}{}
	}
	set := s.byIno[ino]
	if set == nil {
		if len(s.byIno) >= maxSyncInodes {
			s.evictLocked()
		}
		set = map[string]struct{}{}
		s.byIno[ino] = set
	}
	for _, sh := range ch.Shards {
		set[sh.Addr] = struct{}{}
	}
}

// evictLocked moves one inode's servers (whichever the map yields first) to
// the overflow set.
func (s *syncSet) evictLocked() {
	if s.overflow == nil {
		s.overflow = map[string]struct{}{}
	}
	for ino, set := range s.byIno {
		for a := range set {
			s.overflow[a] = struct{}{}
		}
		delete(s.byIno, ino)
		return
	}
}

// take removes and returns the servers a Sync of ino must cover: the
// inode's own and the overflow's. shared marks those that came from the
// overflow, so a failure puts them back where other inodes find them.
func (s *syncSet) take(ino metaserver.Ino) (addrs []string, shared map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	own := s.byIno[ino]
	delete(s.byIno, ino)
	for a := range own {
		addrs = append(addrs, a)
	}
	if len(s.overflow) > 0 {
		shared = make(map[string]bool, len(s.overflow))
		for a := range s.overflow {
			// A server in both sets goes back to the overflow on
			// failure, which every Sync covers, the inode's included.
			shared[a] = true
			if _, dup := own[a]; !dup {
				addrs = append(addrs, a)
			}
		}
		s.overflow = nil
	}
	return addrs, shared
}

// putBack records again servers whose Sync failed, so the next Sync asks
// them again.
func (s *syncSet) putBack(ino metaserver.Ino, failed []string, shared map[string]bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range failed {
		if shared[a] {
			if s.overflow == nil {
				s.overflow = map[string]struct{}{}
			}
			s.overflow[a] = struct{}{}
			continue
		}
		if s.byIno == nil {
			s.byIno = map[metaserver.Ino]map[string]struct{}{}
		}
		set := s.byIno[ino]
		if set == nil {
			set = map[string]struct{}{}
			s.byIno[ino] = set
		}
		set[a] = struct{}{}
	}
}

// noteBuffered records a chunk just written for ino, unless its shards were
// written durably.
func (c *Client) noteBuffered(ino metaserver.Ino, ch metaserver.Chunk) {
	if !c.opt.DurableWrites {
		c.syncs.add(ino, ch)
	}
}

// SyncInode makes durable every shard this client wrote buffered for ino
// since the inode's last Sync: it syncs those chunkservers in parallel and
// returns their failures joined (each a *chunkserver.ShardError; a failed
// flush wraps chunkserver.ErrSync). Servers that failed are asked again by
// the next Sync. It does not flush open handles' buffers: File.Sync does
// that first. Writers outside File (the converter's WriteFile) call it
// before they record a file as done.
func (c *Client) SyncInode(ctx context.Context, ino metaserver.Ino) error {
	addrs, shared := c.syncs.take(ino)
	if len(addrs) == 0 {
		return nil
	}
	errs := make([]error, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, c.opt.IOTimeout)
			defer cancel()
			errs[i] = c.shards.Sync(sctx, a)
			c.health.note(a, errs[i])
		})
	}
	wg.Wait()
	var failed []string
	for i, err := range errs {
		if err != nil {
			failed = append(failed, addrs[i])
		}
	}
	if len(failed) == 0 {
		return nil
	}
	c.syncs.putBack(ino, failed, shared)
	return fmt.Errorf("inode %d: making data durable on %d of %d chunkservers failed: %w",
		ino, len(failed), len(addrs), errors.Join(errs...))
}
