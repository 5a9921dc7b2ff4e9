package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/metaserver"
)

// scrubPiece is how much the scrubber reads at a time: large enough for
// sequential disk throughput, small enough that pacing stays smooth.
const scrubPiece = 1 << 20

// scrubLoop re-reads every shard, verifying every block's checksum, so bit rot
// is found and repaired while the other shards of the chunk are still healthy
// rather than when a reader needs it.
func (s *Server) scrubLoop(ctx context.Context) {
	for {
		if err := s.scrubPass(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("scrub pass failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(s.cfg.ScrubPause):
		}
	}
}

// pacer holds a reader to a byte rate, measured from the start of the pass so
// short stalls average out. A reader that fell far behind (the disk was busy
// with foreground traffic) is forgiven all but maxDebt of it, so it does not
// then race at full speed to catch up, just when the disk is needed most.
type pacer struct {
	rate  int64
	start time.Time
	done  int64
}

const maxDebt = time.Second

func (p *pacer) wait(ctx context.Context, n int64) error {
	p.done += n
	due := p.start.Add(time.Duration(float64(p.done) / float64(p.rate) * float64(time.Second)))
	d := time.Until(due)
	if d < -maxDebt {
		p.start = p.start.Add(-d - maxDebt)
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// scrubPass verifies every shard once.
func (s *Server) scrubPass(ctx context.Context) error {
	u, err := s.store.Usage()
	if err != nil {
		return err
	}
	total := max(u.Shards, 1)
	p := &pacer{rate: s.cfg.ScrubRate, start: time.Now()}
	buf := make([]byte, scrubPiece)
	done := 0
	s.metrics.setScrubProgress(0)
	err = s.store.Walk(func(name string, info chunkserver.ShardInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		// One read per piece; a zero-length shard still gets one (empty)
		// read, which makes a disk store check the shard's header.
		for off := int64(0); ; {
			n := min(int64(scrubPiece), info.Size-off)
			_, err := s.store.ReadAt(name, buf[:n], off)
			if errors.Is(err, store.ErrCorrupt) {
				s.metrics.corrupt.Add(1)
				s.log.Warn("scrub found a corrupt shard", "shard", name, "err", err)
				s.reportBad(ctx, name, err)
				break
			}
			if errors.Is(err, store.ErrNotFound) {
				break // deleted since the walk began
			}
			if err != nil {
				return fmt.Errorf("scrubbing %s: %w", name, err)
			}
			s.metrics.scrubBytes.Add(n)
			if err := p.wait(ctx, n); err != nil {
				return err
			}
			if off += n; off >= info.Size {
				break
			}
		}
		done++
		s.metrics.scrubShards.Add(1)
		s.metrics.setScrubProgress(min(float64(done)/float64(total), 1))
		return nil
	})
	if err != nil {
		return err
	}
	s.metrics.scrubPasses.Add(1)
	s.metrics.setScrubProgress(1)
	return nil
}

// reportInterval is how often one shard is reported corrupt at most: the
// metaserver needs one report to schedule the rebuild, but a report lost to a
// leader change must not be the last.
const reportInterval = 10 * time.Minute

// reportBad tells the metaserver that a local shard is corrupt so it schedules
// a rebuild. The shard stays in place: reads of it fail cleanly, and the
// repair overwrites it or the metaserver orders it deleted. Reports of one
// shard are spaced by reportInterval, since every read of it finds it again.
func (s *Server) reportBad(ctx context.Context, name string, cause error) {
	if s.cfg.Chunks == nil {
		return
	}
	now := time.Now()
	if last, ok := s.reported.Load(name); ok && now.Sub(last.(time.Time)) < reportInterval {
		return
	}
	s.reported.Store(name, now)
	chunk, index, err := chunkserver.ParseName(name)
	if err != nil {
		s.log.Warn("cannot report shard with a foreign name", "shard", name, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	reason := fmt.Sprintf("chunkserver %s: %v", s.id, cause)
	if err := s.cfg.Chunks.ReportBadShard(ctx, metaserver.ChunkID(chunk), index, reason); err != nil {
		s.reported.Delete(name) // try again at the next detection
		s.log.Warn("reporting corrupt shard", "shard", name, "err", err)
	}
}

// reportBadAsync reports a corrupt shard found while serving a request,
// without holding up the reply.
func (s *Server) reportBadAsync(name string, cause error) {
	if s.cfg.Chunks == nil || s.life.Err() != nil {
		return
	}
	s.wg.Go(func() { s.reportBad(s.life, name, cause) })
}
