package fs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dockyard/dockyard/metaserver"
)

// Write policy. A chunk of at least ReplicateBelow bytes is erasure coded K+M
// onto K+M distinct chunkservers. A smaller one is stored as M+1 full copies:
// for a few KiB, parity costs more in requests than it saves in bytes, and M+1
// copies survive the same M losses. When the metaserver cannot place K+M
// shards (fewer than K+M chunkservers up or with room), the chunk falls back
// to M+1 copies, which still survives the loss of any M servers; with fewer
// than M+1 the write fails — durability is never traded for availability.
// A shard that cannot be stored (server down, disk full) makes the whole chunk
// go to a fresh placement, up to WriteAttempts times.

// ErrSlowPut marks a shard write given up on because its chunkserver did not
// answer long after the chunk's other shards were stored.
var ErrSlowPut = errors.New("no answer")

// maxRetryBackoff caps the wait between two placements of one chunk.
const maxRetryBackoff = 2 * time.Second

// writeChunk stores chunk data held at the start of *buf (size bytes; *buf has
// room for parity behind it) and returns the chunk record with its shard
// checksums in shard order. It encodes in place, overwriting *buf past size.
func (c *Client) writeChunk(ctx context.Context, buf []byte, size int64) (metaserver.Chunk, []uint64, error) {
	if size <= 0 {
		return metaserver.Chunk{}, nil, errors.New("writing an empty chunk")
	}
	replicated := size < c.opt.ReplicateBelow
	var shards [][]byte
	var err error
	if !replicated {
		if shards, err = c.encode(buf, size); err != nil {
			return metaserver.Chunk{}, nil, err
		}
	}
	var lastErr error
	backoff := c.opt.RetryBackoff
	for attempt := 0; attempt < c.opt.WriteAttempts; attempt++ {
		if attempt > 0 {
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				return metaserver.Chunk{}, nil, ctx.Err()
			}
			backoff = min(2*backoff, maxRetryBackoff)
		}
		var ch metaserver.Chunk
		if !replicated {
			ch, err = c.alloc(ctx, c.opt.K, c.opt.M, shardSizeFor(size, c.opt.K), size, false)
			if errors.Is(err, metaserver.ErrNoSpace) {
				c.log.Debug("cannot place an erasure-coded chunk; falling back to copies", "k", c.opt.K, "m", c.opt.M, "err", err)
				replicated = true
			}
		}
		if replicated {
			ch, err = c.alloc(ctx, 1, c.opt.M, size, size, true)
		}
		if err != nil {
			// Placement itself failed: another attempt asks the same
			// metaserver the same question, so stop here.
			return metaserver.Chunk{}, nil, fmt.Errorf("allocating a chunk of %d bytes: %w", size, err)
		}
		if replicated {
			shards = make([][]byte, 1+c.opt.M)
			for i := range shards {
				shards[i] = buf[:size]
			}
		}
		// A placement on a server that just failed to answer is not tried,
		// except on the last attempt: that server may be back.
		lastAttempt := attempt == c.opt.WriteAttempts-1
		sums, err := c.putShards(ctx, ch, shards, !lastAttempt, !lastAttempt)
		if err == nil {
			c.rememberChunk(withSums(ch, sums))
			return ch, sums, nil
		}
		lastErr = err
		c.log.Debug("chunk write failed; retrying on a new placement", "chunk", ch.ID, "attempt", attempt+1, "err", err)
		c.abandon(ctx, ch.ID)
	}
	return metaserver.Chunk{}, nil, fmt.Errorf("writing a chunk of %d bytes: %d placements failed, last: %w", size, c.opt.WriteAttempts, lastErr)
}

// abandon gives a chunk whose shards could not all be stored back to the
// metaserver, so its placement is freed now and not when its lease runs out
// (minutes later), and the shards that did land are deleted. Best effort:
// the lease still collects the chunk if this fails.
func (c *Client) abandon(ctx context.Context, id metaserver.ChunkID) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.opt.IOTimeout)
	defer cancel()
	if err := c.meta.AbandonChunk(ctx, id); err != nil {
		c.log.Debug("abandoning a chunk; its lease will collect it", "chunk", id, "err", err)
	}
}

func (c *Client) alloc(ctx context.Context, k, m int, shardSize, size int64, replicated bool) (metaserver.Chunk, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opt.IOTimeout)
	defer cancel()
	ch, err := c.meta.AllocChunk(ctx, k, m, shardSize, size, replicated)
	if err != nil {
		return ch, err
	}
	if len(ch.Shards) != k+m {
		return ch, fmt.Errorf("metaserver placed chunk %d on %d servers, want %d", ch.ID, len(ch.Shards), k+m)
	}
	return ch, nil
}

func withSums(ch metaserver.Chunk, sums []uint64) metaserver.Chunk {
	ch.Shards = append([]metaserver.Shard(nil), ch.Shards...)
	for i := range ch.Shards {
		if idx := ch.Shards[i].Index; idx >= 0 && idx < len(sums) {
			ch.Shards[i].Sum = sums[idx]
		}
	}
	return ch
}

// encode lays size data bytes at the start of buf out as K data shards
// (zero-padded) followed by M parity shards, all slices of buf.
func (c *Client) encode(buf []byte, size int64) ([][]byte, error) {
	k, m := c.opt.K, c.opt.M
	ss := shardSizeFor(size, k)
	if int64(len(buf)) < int64(k+m)*ss {
		return nil, fmt.Errorf("chunk buffer of %d bytes too small for %d+%d shards of %d", len(buf), k, m, ss)
	}
	clear(buf[size : int64(k)*ss])
	shards := make([][]byte, k+m)
	for i := range shards {
		shards[i] = buf[int64(i)*ss : int64(i+1)*ss : int64(i+1)*ss]
	}
	enc, err := c.encoder(k, m)
	if err != nil {
		return nil, err
	}
	if err := enc.Encode(shards); err != nil {
		return nil, fmt.Errorf("encoding %d+%d: %w", k, m, err)
	}
	return shards, nil
}

// putShards stores every shard of ch in parallel. On any failure it removes
// the shards that did land (best effort; the metaserver's lease collects what
// remains) and returns the failures joined.
// With skipDown, a placement on a server that just failed to answer fails at
// once; with abandonSlow, shards that lag far behind the others fail the
// placement too (see below). The last attempt of a chunk does neither.
func (c *Client) putShards(ctx context.Context, ch metaserver.Chunk, shards [][]byte, skipDown, abandonSlow bool) ([]uint64, error) {
	if skipDown {
		for _, s := range ch.Shards {
			if c.health.isDown(s.Addr) {
				return nil, errDown(s.Addr, metaserver.ShardName(ch.ID, s.Index))
			}
		}
	}
	sums := make([]uint64, len(shards))
	errs := make([]error, len(ch.Shards))
	putCtx, cancelPuts := context.WithCancel(ctx)
	defer cancelPuts()
	finished := make(chan int, len(ch.Shards))
	launched := make([]bool, len(ch.Shards))
	started, begin := 0, time.Now()
	for i, s := range ch.Shards {
		if s.Index < 0 || s.Index >= len(shards) {
			errs[i] = fmt.Errorf("metaserver placed shard index %d of chunk %d, want 0..%d", s.Index, ch.ID, len(shards)-1)
			continue
		}
		started++
		launched[i] = true
		go func() {
			defer func() { finished <- i }()
			pctx, cancel := context.WithTimeout(putCtx, c.opt.IOTimeout)
			defer cancel()
			// Put hashes the shard, sends the sum along and checks the
			// server stored exactly that, so its answer is the checksum
			// to record; hashing again here would cost a second pass.
			put := c.shards.PutBuffered
			if c.opt.DurableWrites {
				put = c.shards.Put
			}
			sum, err := put(pctx, s.Addr, metaserver.ShardName(ch.ID, s.Index), shards[s.Index])
			c.health.note(s.Addr, err)
			if err != nil {
				errs[i] = err
				return
			}
			sums[s.Index] = sum
		}()
	}
	// A server that hangs (a stalled disk, a half-dead host) would hold the
	// chunk for the whole IOTimeout. Once every other shard is stored, the
	// last few get as long again as the rest took (at least HedgeAfter);
	// then the placement is abandoned for another. The laggard is not
	// marked down: it may only be busy, and with exactly K+M chunkservers
	// every placement needs it.
	done := make([]bool, len(ch.Shards))
	slow := make([]bool, len(ch.Shards))
	failed := 0
	var straggle <-chan time.Time
	for n := 0; n < started; {
		select {
		case i := <-finished:
			done[i] = true
			n++
			if errs[i] != nil {
				failed++
			}
			if abandonSlow && straggle == nil && failed == 0 && n < started && started-n <= c.opt.M {
				straggle = time.After(max(c.opt.HedgeAfter, 2*time.Since(begin)))
			}
		case <-straggle:
			straggle = nil
			for i := range ch.Shards {
				if launched[i] && !done[i] {
					slow[i] = true
				}
			}
			cancelPuts()
		}
	}
	for i, s := range ch.Shards {
		if slow[i] {
			errs[i] = fmt.Errorf("chunkserver %s: shard %s: %w after %v, while the others were stored",
				s.Addr, metaserver.ShardName(ch.ID, s.Index), ErrSlowPut, time.Since(begin).Round(time.Millisecond))
		}
	}
	if err := errors.Join(errs...); err != nil {
		for i, s := range ch.Shards {
			if errs[i] == nil {
				go c.deleteShard(s.Addr, metaserver.ShardName(ch.ID, s.Index))
			}
		}
		return nil, err
	}
	return sums, nil
}

func (c *Client) deleteShard(addr, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opt.IOTimeout)
	defer cancel()
	if err := c.shards.Delete(ctx, addr, name); err != nil {
		c.log.Debug("removing an abandoned shard failed; the lease will collect it", "shard", name, "addr", addr, "err", err)
	}
}

// dropChunk removes the shards of a chunk that was written but will never be
// committed (overwritten before the commit).
func (c *Client) dropChunk(ch metaserver.Chunk) {
	for _, s := range ch.Shards {
		go c.deleteShard(s.Addr, metaserver.ShardName(ch.ID, s.Index))
	}
}
