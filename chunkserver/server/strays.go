package server

import (
	"context"
	"errors"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/store"
)

// Stray shards: files on this server that the chunk map does not place here
// and no repair or move is bound to write. The metaserver queues deletes for
// the copies it knows it abandoned, but a copy it never heard of stays on
// disk forever: a repair whose completion report was lost in transit, its
// task then handed to another server, is one. So every StrayInterval the
// server asks the metaserver about every shard it holds (StrayShards) and
// deletes those reported in two passes in a row. A shard written since the
// previous pass, such as a rebuilt copy whose completion is on its way, is
// never taken on one answer.

// strayBatch is how many names one StrayShards call carries.
const strayBatch = 4096

func (s *Server) strayLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.StrayInterval)
	defer t.Stop()
	suspects := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		next, err := s.strayPass(ctx, suspects)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("looking for stray shards", "err", err)
			}
			continue // the suspects stand until a pass completes
		}
		suspects = next
	}
}

// strayPass asks about every shard the store holds, deletes those reported
// stray now that were suspects already, and returns the new suspects.
func (s *Server) strayPass(ctx context.Context, suspects map[string]bool) (map[string]bool, error) {
	var names []string
	if err := s.store.Walk(func(name string, _ chunkserver.ShardInfo) error {
		names = append(names, name)
		return nil
	}); err != nil {
		return nil, err
	}
	next := map[string]bool{}
	for len(names) > 0 {
		batch := names[:min(strayBatch, len(names))]
		names = names[len(batch):]
		stray, err := s.cfg.Cluster.StrayShards(ctx, s.id, batch)
		if err != nil {
			return nil, err
		}
		for _, name := range stray {
			if !suspects[name] {
				next[name] = true
				continue
			}
			switch err := s.store.Delete(name); {
			case err == nil:
				s.metrics.strays.Add(1)
				s.log.Info("deleted a stray shard: no chunk places it here", "shard", name)
			case errors.Is(err, store.ErrNotFound):
			default:
				s.log.Warn("deleting a stray shard", "shard", name, "err", err)
			}
		}
	}
	return next, nil
}
