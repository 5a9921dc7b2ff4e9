package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/klauspost/reedsolomon"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/metaserver"
)

// Repair errors callers and tests can match.
var (
	// ErrTooFewShards: fewer than K healthy source shards could be fetched.
	ErrTooFewShards = errors.New("too few healthy shards to rebuild from")
	// ErrRebuiltMismatch: the rebuilt shard does not hash to the checksum
	// the metaserver recorded for it, or the fetched shards disagree.
	ErrRebuiltMismatch = errors.New("rebuilt shard does not match its recorded checksum")
	// ErrBadTask: the repair task itself is inconsistent.
	ErrBadTask = errors.New("invalid repair task")
)

// enqueueRepair queues a task unless the same shard is already queued or
// being rebuilt; the metaserver repeats unfinished tasks in later heartbeat
// replies, so duplicates are expected and a full queue may drop work.
func (s *Server) enqueueRepair(task metaserver.RepairTask) {
	name := metaserver.ShardName(task.Chunk.ID, task.Index)
	if _, dup := s.inflight.LoadOrStore(name, struct{}{}); dup {
		return
	}
	select {
	case s.repairs <- task:
	default:
		s.inflight.Delete(name)
		s.log.Warn("repair queue full; the metaserver will hand the task out again", "shard", name)
	}
}

func (s *Server) repairWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case task := <-s.repairs:
			name := metaserver.ShardName(task.Chunk.ID, task.Index)
			start := time.Now()
			sum, err := s.Repair(ctx, task)
			s.inflight.Delete(name)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				s.metrics.repairsFailed.Add(1)
				s.log.Warn("repair failed", "shard", name, "err", err)
				continue
			}
			s.metrics.repairsOK.Add(1)
			s.log.Info("shard rebuilt", "shard", name, "sum", chunkserver.FormatSum(sum), "took", time.Since(start))
		}
	}
}

// Repair rebuilds shard task.Index of task.Chunk from the chunk's other shards,
// stores it locally and reports it with CompleteRepair. Erasure-coded chunks
// are reconstructed from any K healthy shards; replicated chunks are copied
// from any healthy replica. A fetched shard is used only if it matches the
// checksum the metaserver recorded for it, and the result only if it matches
// the target's recorded checksum (or, when none is recorded, if every extra
// shard fetched agrees with the rebuilt stripe).
func (s *Server) Repair(ctx context.Context, task metaserver.RepairTask) (uint64, error) {
	c := task.Chunk
	name := metaserver.ShardName(c.ID, task.Index)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RepairTimeout)
	defer cancel()
	if s.cfg.Cluster == nil {
		return 0, fmt.Errorf("repair %s: no metaserver to report to: %w", name, ErrBadTask)
	}
	total := c.K + c.M
	if c.K < 1 || c.M < 0 || task.Index < 0 || task.Index >= total || c.ShardSize < 0 ||
		c.ShardSize > s.cfg.MaxShardSize || (c.Replicated && c.K != 1) {
		return 0, fmt.Errorf("repair %s: k=%d m=%d index %d shard size %d: %w", name, c.K, c.M, task.Index, c.ShardSize, ErrBadTask)
	}
	// The metaserver never keeps two shards of one chunk on one server (one
	// lost server must cost a chunk at most one shard), so it would refuse
	// the result; say so now instead of after rebuilding.
	for _, sh := range c.Shards {
		if sh.Server == s.id && sh.Index != task.Index {
			return 0, fmt.Errorf("repair %s: this server already holds shard %d of the chunk: %w", name, sh.Index, ErrBadTask)
		}
	}
	var (
		data []byte
		err  error
	)
	if c.Replicated {
		data, err = s.copyReplica(ctx, task)
	} else {
		data, err = s.reconstruct(ctx, task)
	}
	if err != nil {
		return 0, fmt.Errorf("repair %s: %w", name, err)
	}
	sum, err := s.store.Put(name, data)
	if err != nil {
		return 0, fmt.Errorf("repair %s: storing: %w", name, err)
	}
	done := metaserver.RepairDone{Chunk: c.ID, Index: task.Index, Server: s.id, Sum: sum}
	if err := s.cfg.Cluster.CompleteRepair(ctx, done); err != nil {
		return 0, fmt.Errorf("repair %s: reporting completion: %w", name, err)
	}
	return sum, nil
}

// recordedSum is the checksum the metaserver holds for shard index, 0 when
// none is recorded.
func recordedSum(c metaserver.Chunk, index int) uint64 {
	for _, sh := range c.Shards {
		if sh.Index == index && sh.Sum != 0 {
			return sh.Sum
		}
	}
	return 0
}

// fetch reads a whole source shard, from the local store when it lives here.
func (s *Server) fetch(ctx context.Context, c metaserver.Chunk, sh metaserver.Shard) ([]byte, error) {
	name := metaserver.ShardName(c.ID, sh.Index)
	buf := make([]byte, c.ShardSize)
	var err error
	if sh.Server == s.id {
		_, err = s.store.ReadAt(name, buf, 0)
	} else {
		_, err = s.client.ReadAt(ctx, sh.Addr, name, buf, 0)
	}
	if err != nil {
		return nil, err
	}
	if sh.Sum != 0 && chunkserver.Sum(buf) != sh.Sum {
		return nil, fmt.Errorf("shard %s from %s: checksum %016x, recorded %016x: %w",
			name, sh.Addr, chunkserver.Sum(buf), sh.Sum, chunkserver.ErrCorrupt)
	}
	return buf, nil
}

func (s *Server) copyReplica(ctx context.Context, task metaserver.RepairTask) ([]byte, error) {
	c := task.Chunk
	want := recordedSum(c, task.Index)
	var errs []error
	for _, sh := range c.Shards {
		if sh.Index == task.Index {
			continue
		}
		data, err := s.fetch(ctx, c, sh)
		if err == nil && want != 0 && chunkserver.Sum(data) != want {
			err = fmt.Errorf("replica %d: %w", sh.Index, ErrRebuiltMismatch)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		return data, nil
	}
	return nil, fmt.Errorf("%w: no healthy replica: %w", ErrTooFewShards, errors.Join(errs...))
}

type fetched struct {
	index int
	data  []byte
	err   error
}

func (s *Server) reconstruct(ctx context.Context, task metaserver.RepairTask) ([]byte, error) {
	c := task.Chunk
	total := c.K + c.M
	enc, err := reedsolomon.New(c.K, c.M)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadTask, err)
	}
	want := recordedSum(c, task.Index)

	// Fetch every other shard in parallel. With a recorded checksum K good
	// shards are enough and the slower fetches are cancelled; without one,
	// all are awaited so the extra shards can check the rebuilt stripe.
	fctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan fetched)
	pending := 0
	seen := make([]bool, total)
	for _, sh := range c.Shards {
		if sh.Index == task.Index || sh.Index < 0 || sh.Index >= total || seen[sh.Index] {
			continue
		}
		seen[sh.Index] = true
		pending++
		go func() {
			data, err := s.fetch(fctx, c, sh)
			results <- fetched{sh.Index, data, err}
		}()
	}
	shards := make([][]byte, total)
	good := 0
	var errs []error
	for ; pending > 0; pending-- {
		r := <-results
		if r.err != nil {
			errs = append(errs, fmt.Errorf("shard %d: %w", r.index, r.err))
			continue
		}
		shards[r.index] = r.data
		good++
		if good == c.K && want != 0 {
			cancel()
		}
	}
	if good < c.K {
		return nil, fmt.Errorf("%w: %d of the %d needed: %w", ErrTooFewShards, good, c.K, errors.Join(errs...))
	}
	// Rebuild only the target when its checksum will vouch for it; otherwise
	// rebuild every missing shard so the whole stripe can be verified.
	required := make([]bool, total)
	for i := range shards {
		required[i] = shards[i] == nil && (i == task.Index || want == 0)
	}
	if err := enc.ReconstructSome(shards, required); err != nil {
		return nil, fmt.Errorf("reconstructing: %w", err)
	}
	rebuilt := shards[task.Index]
	if want != 0 {
		if got := chunkserver.Sum(rebuilt); got != want {
			return nil, fmt.Errorf("%w: %016x, recorded %016x", ErrRebuiltMismatch, got, want)
		}
		return rebuilt, nil
	}
	// No recorded checksum (the chunk was never committed with sums): the
	// only evidence is consistency. With more than K sources every shard is
	// now present and the stripe must verify; with exactly K there is no
	// redundancy left to check against.
	if good > c.K {
		ok, err := enc.Verify(shards)
		if err != nil {
			return nil, fmt.Errorf("verifying stripe: %w", err)
		}
		if !ok {
			return nil, fmt.Errorf("%w: the fetched shards disagree", ErrRebuiltMismatch)
		}
	}
	return rebuilt, nil
}
