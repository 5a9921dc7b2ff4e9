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
// needs of an evicted inode move to one set every Sync covers: correct, at
// the price of syncing a few more servers than needed, while a client writes
// tens of thousands of files without ever syncing them.
const maxSyncInodes = 1 << 16

// syncSet remembers which buffered shards no Sync has covered yet, with a
// sequence number per chunkserver: every buffered Put acknowledged by a
// server takes that server's next number, an inode remembers the highest
// number of its own Puts per server, and a server's Sync that succeeds
// covers every number given out before the Sync was sent. An inode's data is
// durable once each of its servers is synced past the inode's number there.
//
// Numbers, rather than a set that a Sync takes away, keep concurrent Syncs
// honest: two fsyncs of one file (or a Sync of a file whose servers another
// file's Sync is flushing) each wait for a flush that covers their writes,
// and a failed flush leaves the need in place for every caller. The zero
// value is ready to use.
type syncSet struct {
	mu      sync.Mutex
	servers map[string]*serverSeq
	byIno   map[metaserver.Ino]map[string]uint64
	// overflow holds the needs of inodes evicted past maxSyncInodes; every
	// Sync covers them.
	overflow map[string]uint64
}

// serverSeq counts one chunkserver's buffered Puts: written is the last
// number given out, synced the highest a successful Sync covered.
type serverSeq struct{ written, synced uint64 }

// add records that ch's shards went to their servers buffered for ino.
func (s *syncSet) add(ino metaserver.Ino, ch metaserver.Chunk) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byIno == nil {
		s.byIno = map[metaserver.Ino]map[string]uint64{}
		s.servers = map[string]*serverSeq{}
	}
	need := s.byIno[ino]
	if need == nil {
		if len(s.byIno) >= maxSyncInodes {
			s.evictLocked()
		}
		need = map[string]uint64{}
		s.byIno[ino] = need
	}
	for _, sh := range ch.Shards {
		srv := s.servers[sh.Addr]
		if srv == nil {
			srv = &serverSeq{}
			s.servers[sh.Addr] = srv
		}
		srv.written++
		need[sh.Addr] = srv.written
	}
}

// evictLocked moves one inode's needs (whichever the map yields first) to
// the overflow.
func (s *syncSet) evictLocked() {
	if s.overflow == nil {
		s.overflow = map[string]uint64{}
	}
	for ino, need := range s.byIno {
		mergeNeed(s.overflow, need)
		delete(s.byIno, ino)
		return
	}
}

func mergeNeed(dst, src map[string]uint64) {
	for a, seq := range src {
		dst[a] = max(dst[a], seq)
	}
}

// due returns the servers a Sync of ino must flush (the inode's and the
// overflow's not yet covered) with, for each, the number a successful flush
// sent now covers.
func (s *syncSet) due(ino metaserver.Ino) map[string]uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out map[string]uint64
	for _, need := range []map[string]uint64{s.byIno[ino], s.overflow} {
		for a, seq := range need {
			srv := s.servers[a]
			if srv.synced >= seq {
				continue
			}
			if out == nil {
				out = map[string]uint64{}
			}
			out[a] = srv.written
		}
	}
	return out
}

// synced records a successful flush of addr covering Puts up to seq, and
// forgets the needs it satisfied.
func (s *syncSet) synced(ino metaserver.Ino, addr string, seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	srv := s.servers[addr]
	srv.synced = max(srv.synced, seq)
	for _, need := range []map[string]uint64{s.byIno[ino], s.overflow} {
		if need[addr] <= srv.synced {
			delete(need, addr)
		}
	}
	if need := s.byIno[ino]; need != nil && len(need) == 0 {
		delete(s.byIno, ino)
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
// that no Sync has covered yet: it syncs those chunkservers in parallel and
// returns their failures joined (each a *chunkserver.ShardError; a failed
// flush wraps chunkserver.ErrSync). Servers that failed are asked again by
// the next Sync, and a Sync running meanwhile for another caller does not
// count until it has succeeded. It does not flush open handles' buffers: File.Sync does
// that first. Writers outside File (the converter's WriteFile) call it
// before they record a file as done.
func (c *Client) SyncInode(ctx context.Context, ino metaserver.Ino) error {
	due := c.syncs.due(ino)
	if len(due) == 0 {
		return nil
	}
	var (
		mu     sync.Mutex
		errs   []error
		failed int
		wg     sync.WaitGroup
	)
	for a, seq := range due {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, c.opt.IOTimeout)
			defer cancel()
			err := c.shards.Sync(sctx, a)
			c.health.note(a, err)
			if err == nil {
				c.syncs.synced(ino, a, seq)
				return
			}
			mu.Lock()
			errs = append(errs, err)
			failed++
			mu.Unlock()
		})
	}
	wg.Wait()
	if failed == 0 {
		return nil
	}
	return fmt.Errorf("inode %d: making data durable on %d of %d chunkservers failed: %w",
		ino, failed, len(due), errors.Join(errs...))
}
