package fs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"sync"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/metaserver"
)

// readChunkData reads chunk data bytes [a, a+n) into dst (len n), or only
// warms the cache when dst is nil.
func (c *Client) readChunkData(ctx context.Context, id metaserver.ChunkID, dst []byte, a, n int64) error {
	return c.withChunk(ctx, id, func(ch *metaserver.Chunk) error { return c.readChunk(ctx, ch, dst, a, n) })
}

// lendChunkData returns chunk data bytes [a, a+n) as slices of cached blocks,
// appended to l, without copying them; see Data.
func (c *Client) lendChunkData(ctx context.Context, id metaserver.ChunkID, l *Data, a, n int64) error {
	return c.withChunk(ctx, id, func(ch *metaserver.Chunk) error { return c.lendChunk(ctx, ch, l, a, n) })
}

// withChunk runs read on the chunk's record. When too few shards answer it
// refreshes the chunk's locations and tries once more, since a repair may
// have moved shards since they were cached.
func (c *Client) withChunk(ctx context.Context, id metaserver.ChunkID, read func(*metaserver.Chunk) error) error {
	ch, err := c.chunk(ctx, id, false)
	if err != nil {
		return err
	}
	err = read(ch)
	if err != nil && errors.Is(err, ErrUnreadable) {
		if fresh, ferr := c.chunk(ctx, id, true); ferr == nil && !sameLocations(ch, fresh) {
			err = read(fresh)
		}
	}
	if err != nil && ctx.Err() == nil {
		c.ctr.readErrors.Add(1)
	}
	return err
}

func sameLocations(a, b *metaserver.Chunk) bool {
	if len(a.Shards) != len(b.Shards) {
		return false
	}
	for i := range a.Shards {
		if a.Shards[i].Index != b.Shards[i].Index || a.Shards[i].Addr != b.Shards[i].Addr {
			return false
		}
	}
	return true
}

// readChunk serves [a, a+n) of a chunk from the block cache, fetching the
// missing blocks in runs (one ranged request per shard per run) and sharing
// fetches already in flight. With dst nil it only warms the cache.
func (c *Client) readChunk(ctx context.Context, ch *metaserver.Chunk, dst []byte, a, n int64) error {
	if err := checkChunkRange(ch, a, n); err != nil || n == 0 {
		return err
	}
	if c.cache == nil {
		if dst == nil {
			return nil
		}
		return c.readShards(ctx, ch, dst, a)
	}
	blocks, slabs, err := c.cachedBlocks(ctx, ch, a, n, dst != nil)
	if err != nil || dst == nil {
		return err
	}
	blockSpans(blocks, a, n, func(_ int, b []byte, at int64) { copy(dst[at-a:], b) })
	// The copies are made: the slabs may go back to their pools once the
	// cache lets go of them too.
	c.cache.leave(slabs, nil)
	return nil
}

// checkChunkRange refuses a read of [a, a+n) outside the chunk's bytes.
func checkChunkRange(ch *metaserver.Chunk, a, n int64) error {
	if a < 0 || a+n > ch.Size {
		return fmt.Errorf("chunk %d: read [%d,%d) outside its %d bytes", ch.ID, a, a+n, ch.Size)
	}
	return nil
}

// blockSpans calls fn, in order, with the part of each cached block that
// falls within [a, a+n) of its chunk and that part's offset in the chunk;
// blocks are the chunk's blocks from the one holding a on.
func blockSpans(blocks [][]byte, a, n int64, fn func(i int, b []byte, at int64)) {
	first := a / blockSize
	for i, b := range blocks {
		bStart := (first + int64(i)) * blockSize
		lo := max(a, bStart)
		hi := min(a+n, bStart+int64(len(b)))
		fn(i, b[lo-bStart:hi-bStart], lo)
	}
}

// lendChunk appends [a, a+n) of a chunk to l as slices of cached blocks, with
// a reference to each block's slab. It needs the cache.
func (c *Client) lendChunk(ctx context.Context, ch *metaserver.Chunk, l *Data, a, n int64) error {
	if err := checkChunkRange(ch, a, n); err != nil || n == 0 {
		return err
	}
	blocks, slabs, err := c.cachedBlocks(ctx, ch, a, n, true)
	if err != nil {
		return err
	}
	blockSpans(blocks, a, n, func(i int, b []byte, _ int64) { l.add(b, slabs[i]) })
	return nil
}

// cachedBlocks makes sure the cache blocks covering chunk bytes [a, a+n) are
// cached or fetched, fetching the missing ones in runs. With use set it waits
// for them and returns them in order, each with a reference to its slab
// (nil for a block not from a pool) that the caller gives back with
// blockCache.leave; without it, it returns once the fetches it started are
// done and takes no references.
func (c *Client) cachedBlocks(ctx context.Context, ch *metaserver.Chunk, a, n int64, use bool) ([][]byte, []*slab, error) {
	bc := c.cache
	first, last := a/blockSize, (a+n-1)/blockSize
	blocks := make([][]byte, last-first+1)
	slabs := make([]*slab, last-first+1) // references this read holds
	waits := make([]*flight, last-first+1)
	type run struct{ from, to int64 } // block indexes [from, to)
	var runs []run
	var runFlights [][]*flight
	type diskLoad struct {
		key blockKey
		fl  *flight
	}
	var fromDisk []diskLoad
	var hits uint64
	bc.mu.Lock()
	for i := first; i <= last; i++ {
		k := blockKey{ch.ID, i}
		if b, sl, ok := bc.lookupLocked(k, use); ok {
			blocks[i-first], slabs[i-first] = b, sl
			hits++
			continue
		}
		if fl, ok := bc.flights[k]; ok {
			if use {
				fl.waiters++
				waits[i-first] = fl
			}
			continue
		}
		fl := &flight{done: make(chan struct{})}
		bc.flights[k] = fl
		if use {
			fl.waiters++
			waits[i-first] = fl
		}
		if c.disk != nil && c.disk.has(k) {
			fromDisk = append(fromDisk, diskLoad{k, fl})
			continue
		}
		if len(runs) > 0 && runs[len(runs)-1].to == i {
			runs[len(runs)-1].to++
			runFlights[len(runFlights)-1] = append(runFlights[len(runFlights)-1], fl)
		} else {
			runs = append(runs, run{i, i + 1})
			runFlights = append(runFlights, []*flight{fl})
		}
	}
	bc.mu.Unlock()
	// Counted once per call, outside the lock.
	if hits > 0 {
		c.ctr.cacheHits.Add(hits)
	}
	if misses := uint64(last-first+1) - hits; misses > 0 {
		c.ctr.cacheMisses.Add(misses)
	}

	var wg sync.WaitGroup
	for ri, r := range runs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			from := r.from * blockSize
			to := min(r.to*blockSize, ch.Size)
			sl := getSlab(to - from)
			defer sl.release()
			buf := sl.buf
			// The fetch is not tied to this caller's context alone: other
			// readers may be waiting on the same flight.
			err := c.fetchRun(context.WithoutCancel(ctx), ch, buf, from)
			keys := make([]blockKey, 0, r.to-r.from)
			bl := make([][]byte, 0, r.to-r.from)
			for i := r.from; i < r.to; i++ {
				keys = append(keys, blockKey{ch.ID, i})
				lo := i*blockSize - from
				bl = append(bl, buf[lo:min(lo+blockSize, int64(len(buf)))])
			}
			// Blocks go to the disk cache before the waiters wake, so a
			// read that returned has left its blocks where the next one
			// (in this process or the next) finds them.
			if err == nil && c.disk != nil {
				for i, k := range keys {
					c.disk.put(k, bl[i])
				}
			}
			bc.finish(keys, runFlights[ri], bl, sl, err)
		}()
	}
	for _, dl := range fromDisk {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if b, ok := c.disk.get(dl.key); ok {
				bc.finish([]blockKey{dl.key}, []*flight{dl.fl}, [][]byte{b}, nil, nil)
				return
			}
			// Gone or damaged on disk: fetch it from the shards.
			from := dl.key.idx * blockSize
			sl := getSlab(min(from+blockSize, ch.Size) - from)
			defer sl.release()
			buf := sl.buf
			err := c.fetchRun(context.WithoutCancel(ctx), ch, buf, from)
			if err == nil {
				c.disk.put(dl.key, buf)
			}
			bc.finish([]blockKey{dl.key}, []*flight{dl.fl}, [][]byte{buf}, sl, err)
		}()
	}
	if !use {
		wg.Wait()
		return nil, nil, nil
	}
	for i, fl := range waits {
		if fl == nil {
			continue
		}
		select {
		case <-fl.done:
		case <-ctx.Done():
			bc.leave(slabs, waits)
			return nil, nil, ctx.Err()
		}
		if fl.err != nil {
			bc.leave(slabs, waits)
			return nil, nil, fl.err
		}
		blocks[i], slabs[i] = fl.data, fl.slab
		waits[i] = nil
	}
	return blocks, slabs, nil
}

// shardsByIndex maps shard index to its location; a missing entry means the
// metaserver knows no live copy.
func shardsByIndex(ch *metaserver.Chunk) []*metaserver.Shard {
	out := make([]*metaserver.Shard, ch.K+ch.M)
	for i := range ch.Shards {
		s := &ch.Shards[i]
		if s.Index >= 0 && s.Index < len(out) {
			out[s.Index] = s
		}
	}
	return out
}

// fetchShard reads shard-local bytes [lo, lo+len(dst)) of shard idx.
// Unless force is set, a server that failed to answer moments ago is not
// asked.
func (c *Client) fetchShard(ctx context.Context, ch *metaserver.Chunk, locs []*metaserver.Shard, idx int, lo int64, dst []byte, force bool) error {
	s := locs[idx]
	if s == nil || s.Addr == "" {
		return fmt.Errorf("shard %s: no known location: %w", metaserver.ShardName(ch.ID, idx), chunkserver.ErrNotFound)
	}
	name := metaserver.ShardName(ch.ID, idx)
	if !force && c.health.isDown(s.Addr) {
		return errDown(s.Addr, name)
	}
	parent := ctx
	ctx, cancel := context.WithTimeout(ctx, c.opt.IOTimeout)
	defer cancel()
	_, err := c.shards.ReadAt(ctx, s.Addr, name, dst, lo)
	c.health.note(s.Addr, err)
	if err != nil {
		// A read cancelled because another answer won is no failure.
		if parent.Err() == nil {
			c.ctr.shardErrors.Add(1)
		}
		return err
	}
	local := c.shards.Attached(s.Addr)
	c.ctr.shardBytes.Add(uint64(len(dst)))
	if local {
		c.ctr.localShardBytes.Add(uint64(len(dst)))
	}
	// A whole shard can be checked end to end against the checksum the
	// metaserver recorded at commit, on top of the chunkserver's own block
	// checksums: over HTTP the network or a proxy can damage bytes after the
	// chunkserver verified them. An in-process chunkserver hands over the
	// very bytes its store just verified block by block, so hashing them
	// again would only cost CPU (a whole pass over every shard read).
	if lo == 0 && int64(len(dst)) == ch.ShardSize && s.Sum != 0 && !local {
		if got := chunkserver.Sum(dst); got != s.Sum {
			c.ctr.shardErrors.Add(1)
			return fmt.Errorf("shard %s on %s: checksum %016x, recorded %016x: %w", name, s.Addr, got, s.Sum, chunkserver.ErrCorrupt)
		}
	}
	return nil
}

// noteShardError reports damage the metaserver should repair. Unreachable
// servers are not reported: heartbeats tell the metaserver about those.
func (c *Client) noteShardError(ch *metaserver.Chunk, idx int, err error) {
	var from metaserver.ServerID
	for _, s := range ch.Shards {
		if s.Index == idx {
			from = s.Server
		}
	}
	switch {
	case errors.Is(err, chunkserver.ErrCorrupt):
		c.reportBadShard(ch.ID, idx, from, "corrupt")
	case errors.Is(err, chunkserver.ErrNotFound):
		c.reportBadShard(ch.ID, idx, from, "missing")
	}
}

// readShards reads chunk data [a, a+len(dst)) from the data shards holding
// it, in parallel. Shards that fail — or are slower than HedgeAfter — are
// rebuilt from the same range of other shards; whichever answer comes first
// wins. It never returns bytes it could not read or rebuild.
func (c *Client) readShards(ctx context.Context, ch *metaserver.Chunk, dst []byte, a int64) error {
	locs := shardsByIndex(ch)
	ps := dataPieces(ch, a, dst)
	if ch.Replicated && len(ps) == 1 {
		// Every copy holds all the data: spread reads of small files over
		// the copies instead of always asking the first.
		ps[0].idx = int(uint64(ch.ID) % uint64(len(locs)))
	}
	type result struct {
		i   int
		err error
	}
	results := make(chan result, len(ps))
	cancels := make([]context.CancelFunc, len(ps))
	for i, p := range ps {
		pctx, cancel := context.WithCancel(ctx)
		cancels[i] = cancel
		go func() { results <- result{i, c.fetchShard(pctx, ch, locs, p.idx, p.lo, p.dst, false)} }()
	}
	defer func() {
		for _, cancel := range cancels {
			cancel()
		}
	}()

	const (
		running = iota
		ok
		failed
	)
	state := make([]int, len(ps))
	errs := make([]error, len(ps))
	pending := len(ps)
	take := func(r result) {
		pending--
		if r.err != nil {
			state[r.i], errs[r.i] = failed, r.err
			c.noteShardError(ch, ps[r.i].idx, r.err)
		} else {
			state[r.i] = ok
		}
	}
	waitAll := func() {
		for pending > 0 {
			take(<-results)
		}
	}

	hedge := time.NewTimer(c.opt.HedgeAfter)
	defer hedge.Stop()
phase1:
	for pending > 0 {
		select {
		case r := <-results:
			take(r)
		case <-hedge.C:
			break phase1
		case <-ctx.Done():
			for _, cancel := range cancels {
				cancel()
			}
			waitAll()
			return ctx.Err()
		}
	}
	// Rebuild every piece that failed or is still running after the hedge
	// delay, without asking the shards being rebuilt; meanwhile the slow
	// ones may still answer.
	targets, lo, hi, exclude, known := rebuildPlan(ps, state, locs, ok)
	if len(targets) == 0 {
		return nil
	}
	slow := false
	for _, i := range targets {
		slow = slow || state[i] == running
	}
	type rebuilt struct {
		data    map[int][]byte
		release func()
		err     error
	}
	rctx, rcancel := context.WithCancel(ctx)
	defer rcancel()
	recon := make(chan rebuilt, 1)
	go func() {
		d, release, err := c.reconstruct(rctx, ch, locs, lo, hi, exclude, known)
		recon <- rebuilt{d, release, err}
	}()
	for {
		select {
		case r := <-results:
			take(r)
			if r.err == nil && allOK(state, targets, ok) {
				rcancel()
				(<-recon).release()
				return nil
			}
			continue
		case rb := <-recon:
			// Its buffers are copied out below, before this returns.
			defer rb.release()
			if rb.err != nil {
				if !slow {
					return withPieceErrors(rb.err, errs)
				}
				// Rebuilding around the slow shards was not possible: wait
				// for them, then rebuild whatever is still missing with
				// their help.
				waitAll()
				targets, lo, hi, exclude, known = rebuildPlan(ps, state, locs, ok)
				if len(targets) == 0 {
					return nil
				}
				data, release, err := c.reconstruct(ctx, ch, locs, lo, hi, exclude, known)
				defer release()
				if err != nil {
					return withPieceErrors(err, errs)
				}
				copyRebuilt(ps, targets, data, lo)
				c.ctr.degraded.Add(1)
				return nil
			}
			for _, i := range targets {
				if state[i] == running {
					cancels[i]()
				}
			}
			waitAll()
			var missing []int
			for _, i := range targets {
				if state[i] != ok {
					missing = append(missing, i)
				}
			}
			copyRebuilt(ps, missing, rb.data, lo)
			if len(missing) > 0 {
				c.ctr.degraded.Add(1)
			}
			return nil
		}
	}
}

// rebuildPlan lists the pieces not read (yet), the union [lo, hi) of their
// shard ranges, the shards not to ask (theirs, and those with no known
// location) and the shards already read over exactly that range.
func rebuildPlan(ps []piece, state []int, locs []*metaserver.Shard, ok int) (targets []int, lo, hi int64, exclude map[int]bool, known map[int][]byte) {
	lo = -1
	exclude = map[int]bool{}
	for i, st := range state {
		if st == ok {
			continue
		}
		targets = append(targets, i)
		exclude[ps[i].idx] = true
		if lo < 0 || ps[i].lo < lo {
			lo = ps[i].lo
		}
		hi = max(hi, ps[i].hi)
	}
	known = map[int][]byte{}
	for i, p := range ps {
		if state[i] == ok && p.lo == lo && p.hi == hi {
			known[p.idx] = p.dst
		}
	}
	for i, s := range locs {
		if s == nil {
			exclude[i] = true
		}
	}
	return targets, lo, hi, exclude, known
}

func copyRebuilt(ps []piece, targets []int, data map[int][]byte, lo int64) {
	for _, i := range targets {
		p := ps[i]
		copy(p.dst, data[p.idx][p.lo-lo:p.hi-lo])
	}
}

// withPieceErrors adds what the data shards themselves answered to a
// ChunkError, so the message names every shard that failed.
func withPieceErrors(err error, pieceErrs []error) error {
	var ce *ChunkError
	if errors.As(err, &ce) {
		var first []error
		for _, e := range pieceErrs {
			if e != nil {
				first = append(first, e)
			}
		}
		ce.Errs = append(first, ce.Errs...)
	}
	return err
}

func allOK(state []int, targets []int, ok int) bool {
	for _, i := range targets {
		if state[i] != ok {
			return false
		}
	}
	return true
}

// reconstruct rebuilds shard-local bytes [lo, hi) of every shard in exclude
// that is a data shard, from K other shards. known holds that range of shards
// already read. It fetches as few shards as it can: data shards first, since
// for them the rebuild is a copy, then parity, one more for each failure.
//
// The buffers it fetches into and rebuilds into come from the read slab pools:
// call release once the returned bytes are copied out (also after an error).
func (c *Client) reconstruct(ctx context.Context, ch *metaserver.Chunk, locs []*metaserver.Shard, lo, hi int64, exclude map[int]bool, known map[int][]byte) (_ map[int][]byte, release func(), _ error) {
	k, n := ch.K, ch.K+ch.M
	size := hi - lo
	var slabs []*slab
	release = func() {
		for _, sl := range slabs {
			sl.release()
		}
		slabs = nil
	}
	buffer := func() []byte {
		sl := getSlab(size)
		slabs = append(slabs, sl)
		return sl.buf[:size]
	}
	shards := make([][]byte, n)
	have := 0
	for idx, b := range known {
		if !exclude[idx] && have < k {
			shards[idx] = b
			have++
		}
	}
	// Servers that failed moments ago come last, and are asked only if the
	// others are not enough.
	var candidates, downs []int
	for idx := 0; idx < n; idx++ {
		if exclude[idx] || shards[idx] != nil {
			continue
		}
		if locs[idx] != nil && c.health.isDown(locs[idx].Addr) {
			downs = append(downs, idx)
		} else {
			candidates = append(candidates, idx)
		}
	}
	candidates = append(candidates, downs...)
	var errs []error
	for have < k && len(candidates) > 0 {
		batch := candidates[:min(k-have, len(candidates))]
		candidates = candidates[len(batch):]
		bufs := make([][]byte, len(batch))
		ferrs := make([]error, len(batch))
		var wg sync.WaitGroup
		for j, idx := range batch {
			bufs[j] = buffer()
			wg.Add(1)
			go func() {
				defer wg.Done()
				ferrs[j] = c.fetchShard(ctx, ch, locs, idx, lo, bufs[j], true)
			}()
		}
		wg.Wait()
		for j, idx := range batch {
			if ferrs[j] != nil {
				if ctx.Err() != nil {
					return nil, release, ctx.Err()
				}
				errs = append(errs, ferrs[j])
				c.noteShardError(ch, idx, ferrs[j])
				continue
			}
			shards[idx] = bufs[j]
			have++
		}
	}
	if have < k {
		for idx := range exclude {
			if locs[idx] == nil {
				errs = append(errs, fmt.Errorf("shard %s: no known location", metaserver.ShardName(ch.ID, idx)))
			}
		}
		return nil, release, &ChunkError{Chunk: ch.ID, Readable: have, Need: k, Errs: errs}
	}
	out := map[int][]byte{}
	if ch.Replicated || k == 1 {
		// Every shard is a full copy: any one of them is the data, for
		// whichever copy was wanted.
		for _, b := range shards {
			if b != nil {
				for idx := range exclude {
					out[idx] = b
				}
				break
			}
		}
		return out, release, nil
	}
	enc, err := c.encoder(k, ch.M)
	if err != nil {
		return nil, release, err
	}
	for idx := range exclude {
		if idx < k {
			// Empty with room: ReconstructData rebuilds into it.
			shards[idx] = buffer()[:0]
		}
	}
	if err := enc.ReconstructData(shards); err != nil {
		return nil, release, fmt.Errorf("chunk %d: rebuilding shard range [%d,%d): %w", ch.ID, lo, hi, err)
	}
	for idx := range exclude {
		if idx < k {
			out[idx] = shards[idx]
		}
	}
	return out, release, nil
}

// Data is file bytes a read lends out of the client's block cache instead of
// copying them: Bufs, in order, hold N bytes. They must not be written to.
// The cache blocks they point into are not reused until Release, which must
// be called once the bytes are no longer needed (a FUSE reply written to the
// kernel, say). A Data not from the cache holds nothing; Release is a no-op.
type Data struct {
	Bufs  [][]byte
	N     int
	slabs []*slab
}

// zeros backs the holes of lent data. Nothing writes to it.
var zeros = make([]byte, blockSize)

// add appends b, held by a reference to s (nil: none), merging it with the
// previous slice when it continues it in memory, as blocks fetched in one
// run do: the kernel is then handed fewer pieces.
func (d *Data) add(b []byte, s *slab) {
	if s != nil {
		d.slabs = append(d.slabs, s)
	}
	if len(b) == 0 {
		return
	}
	d.N += len(b)
	if k := len(d.Bufs) - 1; k >= 0 {
		last := d.Bufs[k]
		if cap(last) > len(last) && &last[:len(last)+1][len(last)] == &b[0] {
			d.Bufs[k] = last[:len(last)+len(b)]
			return
		}
	}
	d.Bufs = append(d.Bufs, b)
}

// addZeros appends n zero bytes (a hole).
func (d *Data) addZeros(n int64) {
	for n > 0 {
		m := min(n, int64(len(zeros)))
		d.Bufs = append(d.Bufs, zeros[:m])
		d.N += int(m)
		n -= m
	}
}

// Release lets the cache reuse the blocks Bufs points into. Bufs must not be
// used afterwards.
func (d *Data) Release() {
	for _, s := range d.slabs {
		s.release()
	}
	d.slabs = nil
}

// ReadData reads like ReadAt(buf, off), with the same io.EOF convention, but
// where it can it lends the bytes out of the block cache instead of copying
// them into buf: a caller that passes the bytes on (a FUSE reply) saves a
// copy and the clearing of buf. buf is used when the bytes must be
// assembled: unflushed writes, layer-backed files, no cache.
func (f *File) ReadData(buf []byte, off int64) (Data, error) { return f.readData(buf, off, false) }

// ReadDataKept is ReadData for a caller that keeps what it reads, as the
// kernel's page cache does behind a FUSE mount: blocks a read of a
// sequential stream covers whole leave the block cache once lent (a block
// read in parts stays, so requests arriving out of order never refetch it). The cache then holds
// what was read ahead and what random reads fetched, not a second copy of
// what the caller has; and the buffers of a long stream go back to their
// pools at once instead of the cache growing to its bound with fresh memory
// (page faults and zeroing by the kernel, about a tenth of a FUSE mount's CPU
// for a cold read).
func (f *File) ReadDataKept(buf []byte, off int64) (Data, error) { return f.readData(buf, off, true) }

func (f *File) readData(buf []byte, off int64, kept bool) (Data, error) {
	copied := func() (Data, error) {
		n, err := f.ReadAt(buf, off)
		return Data{Bufs: [][]byte{buf[:n]}, N: n}, err
	}
	if off < 0 || f.layer != nil || f.layerErr != nil || f.c.cache == nil {
		return copied()
	}
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return Data{}, fmt.Errorf("inode %d: %w", f.ino, ErrClosed)
	}
	if len(f.wbufs) > 0 {
		// Buffered writes overlay the committed bytes: assemble them.
		f.mu.Unlock()
		return copied()
	}
	size := int64(f.size)
	if off >= size {
		f.mu.Unlock()
		return Data{}, io.EOF
	}
	n := min(int64(len(buf)), size-off)
	exts := overlapping(f.extents, off, n)
	f.mu.Unlock()

	ctx, cancel := f.ioCtx()
	defer cancel()
	d, err := f.c.lendExtents(ctx, exts, off, n)
	if err != nil {
		return Data{}, fmt.Errorf("inode %d: reading [%d,%d): %w", f.ino, off, off+n, err)
	}
	f.mu.Lock()
	ra := f.readAheadLocked(off, n, size)
	sequential := f.ra.sequential()
	f.mu.Unlock()
	if ra != nil {
		go f.prefetch(ra)
	}
	if kept && sequential {
		f.c.cache.dropRead(exts)
	}
	if n < int64(len(buf)) {
		return d, io.EOF
	}
	return d, nil
}

// clearHoles zeroes the parts of p (file bytes from off) that no extent of
// exts covers, the holes: the rest is about to be overwritten by the chunks'
// bytes, and clearing all of p first cost a pass over every byte read.
func clearHoles(p []byte, off int64, exts []metaserver.Extent) {
	at := off
	for _, e := range exts {
		clear(p[at-off : int64(e.Off)-off])
		at = int64(e.Off + e.Len)
	}
	clear(p[at-off:])
}

// lendExtents lends file bytes [off, off+n) from the chunks of exts, which
// lie inside that range in order; the gaps between them are holes. Chunks
// are read in parallel.
func (c *Client) lendExtents(ctx context.Context, exts []metaserver.Extent, off, n int64) (Data, error) {
	parts := make([]Data, len(exts))
	err := eachExtent(exts, func(i int, e metaserver.Extent) error {
		return c.lendChunkData(ctx, e.Chunk, &parts[i], int64(e.ChunkOff), int64(e.Len))
	})
	var d Data
	for _, p := range parts {
		d.slabs = append(d.slabs, p.slabs...)
	}
	if err != nil {
		d.Release()
		return Data{}, err
	}
	at := off
	for i, e := range exts {
		d.addZeros(int64(e.Off) - at)
		for _, b := range parts[i].Bufs {
			d.add(b, nil)
		}
		at = int64(e.Off + e.Len)
	}
	d.addZeros(off + n - at)
	return d, nil
}

// Read-ahead
//
// A file follows up to maxStreams read streams. A read belongs to the stream
// whose range it starts within streamSlack of: the kernel sends a sequential
// reader's requests several at a time (its own read-ahead), so they arrive
// slightly out of order. The stream counts as sequential once it has had two
// reads (one, if it starts at offset 0) and they cover at least half the
// range they span, so random reads near each other do not trigger
// read-ahead, however close they land.
//
// The window grows with the stream, as far ahead as the stream has already
// read (rounded up to a power of two), from one chunk up to
// Options.ReadAhead: a file read only in part fetches little it will not
// use, a long stream soon keeps a full window in flight. The window is
// fetched a chunk at a time by up to window/ChunkSize workers, each taking
// the next chunk as soon as it finished one, so the chunkservers always have
// the whole window's reads queued instead of a batch that drains before the
// next one starts. A read near no stream starts a new one in place of the
// least recently read, with a window of one chunk; the old stream's workers
// stop after the chunk they are fetching.
//
// Memory: prefetched blocks live in the block cache, so they count against
// Options.CacheBytes; the bytes being fetched before they get there are
// bounded, over all files of the client, by half of it (blockCache's
// prefetch budget). Read-ahead needs the cache.

// streamSlack is how far outside the range a stream spans a read may start
// and still belong to it. It covers the kernel's own read-ahead (the
// device's read_ahead_kb, which the mount raises).
const streamSlack = 8 << 20

// maxStreams is how many read streams a file follows at once: every open of
// a file in a FUSE mount shares one File, so two processes reading the same
// file, or one reading two parts of it, must not keep resetting each other's
// stream. The least recently read stream gives way to a new one.
const maxStreams = 4

// readAhead is a file's read streams.
type readAhead struct {
	streams [maxStreams]stream
	last    int    // the stream of the latest read
	clock   uint64 // counts reads, for choosing the stream to give way
	gens    uint64 // stream generations handed out
}

// stream is one sequence of reads and its read-ahead.
type stream struct {
	start, next int64 // its reads span [start, next)
	seen        int64 // bytes they asked for
	reads       int   // 0: the slot is free
	window      int64
	issued      int64  // prefetched (or being prefetched) up to here
	gen         uint64 // changes when the slot starts a new stream; workers of the old one stop
	workers     int    // prefetch workers running in this slot, of any generation
	sequential  bool   // as of its latest read
	used        uint64 // readAhead.clock at its latest read
}

// restart forgets every stream, as after a truncate.
func (r *readAhead) restart() {
	for i := range r.streams {
		r.gens++
		r.streams[i] = stream{gen: r.gens, workers: r.streams[i].workers}
	}
}

// sequential reports whether the latest read belonged to a sequential stream.
func (r *readAhead) sequential() bool { return r.streams[r.last].sequential }

// pick returns the stream a read at off belongs to: the one whose range it
// starts nearest to, within streamSlack; else a free slot or the least
// recently read one, restarted for a new stream.
func (r *readAhead) pick(off int64) int {
	best, bestDist := -1, int64(-1)
	for i := range r.streams {
		st := &r.streams[i]
		if st.reads == 0 || off < st.start-streamSlack || off > st.next+streamSlack {
			continue
		}
		d := max(off-st.next, st.next-off)
		if best < 0 || d < bestDist {
			best, bestDist = i, d
		}
	}
	if best >= 0 {
		return best
	}
	for i := range r.streams {
		if r.streams[i].reads == 0 {
			return i
		}
		if best < 0 || r.streams[i].used < r.streams[best].used {
			best = i
		}
	}
	return best
}

// target is where prefetching of the current window ends: a chunk boundary,
// so chunks are fetched whole, or the end of the file.
func (st *stream) target(size, cs int64) int64 {
	return min((st.next+st.window+cs-1)/cs*cs, size)
}

type readAheadJob struct {
	slot    int
	gen     uint64
	workers int
}

// readAheadLocked notes a read of [off, off+n) and returns the prefetch
// workers to start, if any; f.mu is held.
func (f *File) readAheadLocked(off, n, size int64) *readAheadJob {
	r := &f.ra
	r.clock++
	i := r.pick(off)
	st := &r.streams[i]
	r.last = i
	if st.reads > 0 {
		st.start = min(st.start, off)
		st.next = max(st.next, off+n)
		st.seen += n
		st.reads++
	} else {
		r.gens++
		*st = stream{start: off, next: off + n, seen: n, reads: 1, gen: r.gens, workers: st.workers}
	}
	st.used = r.clock
	ra, cs := f.c.opt.ReadAhead, f.c.opt.ChunkSize
	// A stream from the start of the file is taken as sequential from its
	// first read, as the kernel's read-ahead does: that is how whole-file
	// readers begin.
	st.sequential = (st.reads >= 2 || st.start == 0) && 2*st.seen >= st.next-st.start
	// Only a read at the stream's front asks for more: a stream read
	// backwards is dense too, but never reaches what lies ahead of it.
	if ra <= 0 || f.c.cache == nil || !st.sequential || off+n < st.next-streamSlack {
		return nil
	}
	st.window = min(ra, max(cs, int64(1)<<bits.Len64(uint64(st.seen-1))))
	from := max(st.issued, st.next)
	target := st.target(size, cs)
	if from >= target {
		return nil
	}
	units := int((target - from + cs - 1) / cs)
	spawn := min(int((st.window+cs-1)/cs)-st.workers, units)
	if spawn <= 0 {
		return nil
	}
	st.workers += spawn
	return &readAheadJob{slot: i, gen: st.gen, workers: spawn}
}

// prefetch runs the job's workers; each fetches the next chunk of its
// stream's window into the cache until the window is fetched or the stream
// ended.
func (f *File) prefetch(job *readAheadJob) {
	for range job.workers - 1 {
		go f.prefetchWorker(job.slot, job.gen)
	}
	f.prefetchWorker(job.slot, job.gen)
}

func (f *File) prefetchWorker(slot int, gen uint64) {
	cs := f.c.opt.ChunkSize
	ctx, cancel := f.ioCtx()
	defer cancel()
	for {
		f.mu.Lock()
		st := &f.ra.streams[slot]
		from, to := max(st.issued, st.next), st.target(int64(f.size), cs)
		if f.closed || st.gen != gen || from >= to {
			st.workers--
			f.mu.Unlock()
			return
		}
		to = min(to, (from/cs+1)*cs)
		st.issued = to
		exts := overlapping(f.extents, from, to-from)
		f.mu.Unlock()

		f.c.cache.startPrefetch(to - from)
		err := f.c.readExtents(ctx, exts, nil, 0)
		f.c.cache.endPrefetch(to - from)
		if err != nil {
			// The reader's own read of these bytes will fail or succeed
			// on its own; read-ahead only stops.
			f.c.log.Debug("read-ahead failed", "ino", f.ino, "err", err)
			f.mu.Lock()
			f.ra.streams[slot].workers--
			f.mu.Unlock()
			return
		}
	}
}
