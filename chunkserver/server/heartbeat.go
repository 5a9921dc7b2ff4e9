package server

import (
	"context"
	"errors"
	"time"

	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/metaserver"
)

// heartbeatLoop registers the server and refreshes its record every interval.
// A failed heartbeat is logged and retried at the next tick: the metaserver
// marks a silent server suspect, then down, so the loop must keep trying
// rather than give up.
func (s *Server) heartbeatLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.HeartbeatInterval)
	defer t.Stop()
	registered := false
	for {
		if err := s.heartbeat(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.metrics.heartbeatErrors.Add(1)
			s.log.Warn("heartbeat failed", "err", err)
		} else if !registered {
			registered = true
			s.log.Info("registered with the metaserver")
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// heartbeat sends one heartbeat and acts on the reply.
func (s *Server) heartbeat(ctx context.Context) error {
	u, err := s.store.Usage()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, max(5*time.Second, 3*s.cfg.HeartbeatInterval))
	defer cancel()
	reply, err := s.cfg.Cluster.Heartbeat(ctx, metaserver.Heartbeat{
		ID:       s.id,
		Addr:     s.Addr(),
		Labels:   s.cfg.Labels,
		Capacity: u.Capacity,
		Used:     u.Used,
		Shards:   u.Shards,
	})
	if err != nil {
		return err
	}
	for _, name := range reply.Deletes {
		err := s.store.Delete(name)
		switch {
		case err == nil:
			s.metrics.deletes.Add(1)
		case errors.Is(err, store.ErrNotFound):
			// Already gone: a delete repeated after a lost reply.
		default:
			s.log.Warn("deleting shard", "shard", name, "err", err)
		}
	}
	for _, task := range reply.Repairs {
		s.enqueueRepair(task)
	}
	return nil
}
