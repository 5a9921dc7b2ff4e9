package server

import (
	"cmp"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"

	ms "github.com/dockyard/dockyard/metaserver"
)

// Rebalancing moves shards from the fullest up chunkservers to the emptiest
// ones, so servers added to a cluster take their share of the data and not
// only of new writes. A move is a repair job on a healthy shard: the target
// receives it as a RepairTask, rebuilds the shard from the chunk's other
// shards, and CompleteRepair switches the location and queues the delete of
// the old copy, exactly as for a repair.
//
// Moves are planned inside Apply of the leader's periodic GC command, from
// FSM state and the command's seed only, so every replica plans the same
// moves. The limits are constants rather than settings for the same reason:
// replicas with different values would diverge.
const (
	// rebalanceThreshold: servers within this many percentage points (as a
	// fraction) of the cluster's mean utilisation count as balanced. It is the
	// hysteresis that keeps heartbeat noise from moving shards back and forth.
	rebalanceThreshold = 0.10
	// maxMovesPerServer bounds the jobs in flight on one server (as move
	// source, or as target of a move or repair), so foreground reads and
	// writes keep most of its disk and network.
	maxMovesPerServer = 4
	// maxMovesPerRound bounds the moves one GC round adds.
	maxMovesPerRound = 16
	// maxMovesInFlight bounds the moves queued in the whole cluster.
	maxMovesInFlight = 128
	// maxChunksPerPlan bounds the chunk ids one plan looks at: the leader
	// plans with the FSM locked, every second while the cluster is out of
	// balance (about 10 ms for this many on one busy core). Thousands of
	// chunks hold far more candidates than one round's budget.
	maxChunksPerPlan = 1 << 13
)

// move is one planned relocation of shard Index of Chunk to server To.
type move struct {
	Chunk ms.ChunkID
	Index int
	To    ms.ServerID
}

// isMove reports whether j is a rebalancing move: a job for a shard that is
// neither bad nor on a server whose shards must be rebuilt. A move whose
// source goes down turns into a repair by this definition, which is what it
// then is.
func (f *FSM) isMove(j *repairJob) bool {
	if j.Bad {
		return false
	}
	ch, ok := f.chunks[j.Chunk]
	if !ok || j.Index < 0 || j.Index >= len(ch.Shards) {
		return false
	}
	return !needsMove(f.servers[ch.Shards[j.Index].Server])
}

// jobCounts splits the queued jobs into repairs and rebalancing moves.
func (f *FSM) jobCounts() (repairs, moves uint64) {
	for _, j := range f.repairs {
		if f.isMove(j) {
			moves++
		} else {
			repairs++
		}
	}
	return repairs, moves
}

// rebalanceWork reports whether a GC round would likely plan a move now.
// Plans look at a seeded window of the chunk table, so on a table larger
// than the window the round's own seed may find nothing where this one did;
// that round is then a no-op and the next one looks elsewhere.
func (f *FSM) rebalanceWork(seed uint64) bool {
	return len(f.planMoves(1, rand.New(rand.NewPCG(seed, seed)))) > 0
}

// rebalance queues the moves of one round.
func (f *FSM) rebalance(rng *rand.Rand) {
	for _, m := range f.planMoves(maxMovesPerRound, rng) {
		f.repairs[repairKey{m.Chunk, m.Index}] = &repairJob{Chunk: m.Chunk, Index: m.Index, Target: m.To}
	}
}

// serverLoad is a server's projected usage: what it reported, plus the shards
// on their way to it, minus those on their way off it.
type serverLoad struct {
	cs   *ms.ChunkserverInfo
	used int64
	busy int // jobs in flight touching the server
}

func (l *serverLoad) util() float64 { return float64(l.used) / float64(l.cs.Capacity) }

// planMoves picks up to limit moves without changing any state. Each pick
// takes the fullest server above the mean and the emptiest below it, and a
// shard of the first that the second may hold: no other shard of that chunk
// on it, no loss of a zone, room for the shard, and afterwards the source
// still at least as full as the target (so a move never overshoots and
// invites a move back). It stops when every server is within the threshold
// of the mean, or when the limits leave nothing to do.
func (f *FSM) planMoves(limit int, rng *rand.Rand) []move {
	loads := map[ms.ServerID]*serverLoad{}
	for id, cs := range f.servers {
		if cs.State == ms.StateUp && cs.Capacity > 0 {
			loads[id] = &serverLoad{cs: cs, used: cs.Used}
		}
	}
	if len(loads) < 2 {
		return nil
	}
	busyChunks := map[ms.ChunkID]bool{}
	inFlight := 0
	for _, j := range f.repairs {
		// One job per chunk at a time: the zone and distinctness checks of
		// a move are only valid while the rest of the chunk stays put.
		busyChunks[j.Chunk] = true
		ch, ok := f.chunks[j.Chunk]
		if !ok {
			continue
		}
		if l := loads[j.Target]; l != nil {
			l.used += ch.ShardSize
			l.busy++
		}
		if f.isMove(j) {
			inFlight++
			if l := loads[ch.Shards[j.Index].Server]; l != nil {
				l.used -= ch.ShardSize
				l.busy++
			}
		}
	}
	limit = min(limit, maxMovesInFlight-inFlight)
	if limit <= 0 {
		return nil
	}
	// Integer sums: float additions in map order could round differently
	// on different replicas.
	var used, capacity int64
	for _, l := range loads {
		used += l.used
		capacity += l.cs.Capacity
	}
	mean := float64(used) / float64(capacity)
	// Most rounds find the cluster balanced or the limits reached; say so
	// before looking at any chunk, as the leader asks every second.
	sources := map[ms.ServerID]bool{}
	anyTarget, outOfBand := false, false
	for id, l := range loads {
		u := l.util()
		outOfBand = outOfBand || u > mean+rebalanceThreshold || u < mean-rebalanceThreshold
		if l.busy < maxMovesPerServer {
			anyTarget = anyTarget || u < mean
			if u > mean {
				sources[id] = true
			}
		}
	}
	if !outOfBand || !anyTarget || len(sources) == 0 {
		return nil
	}
	// Candidate shards of the sources, from a seeded window of chunk ids
	// walked in id order, so replicas agree without sorting the whole table
	// and a round costs the same however many chunks there are. Successive
	// rounds look at different windows.
	onServer := map[ms.ServerID][]repairKey{}
	if ids := uint64(f.nextChunk) - 1; ids > 0 {
		start := rng.Uint64N(ids)
		for p := range min(ids, maxChunksPerPlan) {
			id := ms.ChunkID(1 + (start+p)%ids)
			ch, ok := f.chunks[id]
			if !ok || !ch.Committed || busyChunks[id] {
				continue
			}
			for i, s := range ch.Shards {
				if sources[s.Server] {
					onServer[s.Server] = append(onServer[s.Server], repairKey{id, i})
				}
			}
		}
	}
	pendingDeletes := map[ms.ServerID]map[string]bool{}
	deleteQueued := func(id ms.ServerID, name string) bool {
		set, ok := pendingDeletes[id]
		if !ok {
			set = map[string]bool{}
			for _, n := range f.deletes[id] {
				set[n] = true
			}
			pendingDeletes[id] = set
		}
		return set[name]
	}
	var out []move
	for len(out) < limit {
		m, ok := f.nextMove(loads, mean, onServer, busyChunks, deleteQueued, rng)
		if !ok {
			break
		}
		ch := f.chunks[m.Chunk]
		src, dst := loads[ch.Shards[m.Index].Server], loads[m.To]
		src.used -= ch.ShardSize
		src.busy++
		dst.used += ch.ShardSize
		dst.busy++
		busyChunks[m.Chunk] = true
		out = append(out, m)
	}
	return out
}

// byUtil orders servers by projected utilisation (descending when desc),
// then by id so every replica sees the same order.
func byUtil(loads map[ms.ServerID]*serverLoad, desc bool) []*serverLoad {
	out := slices.Collect(maps.Values(loads))
	slices.SortFunc(out, func(a, b *serverLoad) int {
		c := cmp.Compare(a.util(), b.util())
		if desc {
			c = -c
		}
		return cmp.Or(c, cmp.Compare(a.cs.ID, b.cs.ID))
	})
	return out
}

func (f *FSM) nextMove(loads map[ms.ServerID]*serverLoad, mean float64, onServer map[ms.ServerID][]repairKey,
	busyChunks map[ms.ChunkID]bool, deleteQueued func(ms.ServerID, string) bool, rng *rand.Rand) (move, bool) {
	var targets []*serverLoad
	for _, l := range byUtil(loads, false) {
		if l.util() >= mean {
			break
		}
		if l.busy < maxMovesPerServer {
			targets = append(targets, l)
		}
	}
	if len(targets) == 0 {
		return move{}, false
	}
	for _, src := range byUtil(loads, true) {
		if src.util() <= mean {
			break
		}
		keys := onServer[src.cs.ID]
		if src.busy >= maxMovesPerServer || len(keys) == 0 {
			continue
		}
		var pairs []*serverLoad
		for _, dst := range targets {
			// A pair is worth a move only while one of them is out of
			// the band around the mean.
			if src.util() > mean+rebalanceThreshold || dst.util() < mean-rebalanceThreshold {
				pairs = append(pairs, dst)
			}
		}
		if len(pairs) == 0 {
			continue
		}
		// Start at a seeded position so successive rounds do not all pick
		// the lowest chunk ids of a server.
		start := rng.IntN(len(keys))
		for n := range keys {
			k := keys[(start+n)%len(keys)]
			ch := f.chunks[k.Chunk]
			if busyChunks[k.Chunk] || ch.Shards[k.Index].Server != src.cs.ID {
				continue
			}
			for _, dst := range pairs {
				if f.canMove(ch, k.Index, src, dst, deleteQueued) {
					return move{Chunk: k.Chunk, Index: k.Index, To: dst.cs.ID}, true
				}
			}
		}
	}
	return move{}, false
}

// canMove reports whether shard index of ch may go from src to dst.
func (f *FSM) canMove(ch *ms.Chunk, index int, src, dst *serverLoad, deleteQueued func(ms.ServerID, string) bool) bool {
	size := ch.ShardSize
	if dst.cs.Capacity-dst.used < size {
		return false
	}
	after := func(l *serverLoad, delta int64) float64 { return float64(l.used+delta) / float64(l.cs.Capacity) }
	if after(src, -size) < after(dst, size) {
		return false
	}
	srcDomain, dstDomain := domainOf(src.cs), domainOf(dst.cs)
	srcShared, dstPresent := false, false
	for i, s := range ch.Shards {
		if s.Server == dst.cs.ID {
			return false
		}
		if i == index {
			continue
		}
		cs := f.servers[s.Server]
		if cs == nil {
			continue
		}
		d := domainOf(cs)
		srcShared = srcShared || d == srcDomain
		dstPresent = dstPresent || d == dstDomain
	}
	// Leaving the source's zone empty while landing in a zone the chunk
	// already uses would lose a failure domain.
	if !srcShared && dstPresent {
		return false
	}
	// The target still has an old copy of this very shard to delete; the
	// delete could land after the rebuilt copy and remove it.
	return !deleteQueued(dst.cs.ID, ms.ShardName(ch.ID, index))
}

// unqueueDelete drops name from the server's pending deletes: the shard
// became a live location there again.
func (f *FSM) unqueueDelete(id ms.ServerID, name string) {
	d := f.deletes[id]
	if !slices.Contains(d, name) {
		return
	}
	d = slices.DeleteFunc(slices.Clone(d), func(n string) bool { return n == name })
	if len(d) == 0 {
		delete(f.deletes, id)
	} else {
		f.deletes[id] = d
	}
}

// deletedBytes is the size of the named shards whose chunks are still known;
// shards of freed chunks are not counted, their size is gone with them.
func (f *FSM) deletedBytes(names []string) int64 {
	var n int64
	for _, name := range names {
		id, _, ok := parseShardName(name)
		if !ok {
			continue
		}
		if ch, ok := f.chunks[id]; ok {
			n += ch.ShardSize
		}
	}
	return n
}

// parseShardName inverts ms.ShardName.
func parseShardName(name string) (ms.ChunkID, int, bool) {
	hex, idx, ok := strings.Cut(name, ".")
	if !ok {
		return 0, 0, false
	}
	id, err := strconv.ParseUint(hex, 16, 64)
	if err != nil {
		return 0, 0, false
	}
	i, err := strconv.Atoi(idx)
	if err != nil {
		return 0, 0, false
	}
	return ms.ChunkID(id), i, true
}
