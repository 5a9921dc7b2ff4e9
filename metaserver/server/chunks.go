package server

import (
	"cmp"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"syscall"

	ms "github.com/dockyard/dockyard/metaserver"
)

// Limits of one heartbeat reply, so a server coming back after a long absence
// gets its backlog in digestible pieces.
const (
	maxRepairsPerReply = 64
	maxDeletesPerReply = 1024
)

// zoneLabel is the chunkserver label whose values are failure domains.
// Unlabelled servers are each a domain of their own.
const zoneLabel = "zone"

func domainOf(cs *ms.ChunkserverInfo) string {
	if z, ok := cs.Labels[zoneLabel]; ok {
		return "zone:" + z
	}
	return "id:" + string(cs.ID)
}

func rngFor(c *command) *rand.Rand {
	return rand.New(rand.NewPCG(c.Seed, c.Seed^0x9e3779b97f4a7c15))
}

// --- extents ---

func (f *FSM) checkExtent(op string, x ms.Extent) error {
	ch, ok := f.chunks[x.Chunk]
	switch {
	case !ok:
		return ms.Errf(op, syscall.ENOENT, "chunk %d", x.Chunk)
	case x.Len == 0:
		return ms.Errf(op, syscall.EINVAL, "empty extent at %d", x.Off)
	case x.Off+x.Len < x.Off || x.ChunkOff+x.Len < x.ChunkOff:
		return ms.Errf(op, syscall.EINVAL, "extent at %d overflows", x.Off)
	case x.ChunkOff+x.Len > uint64(ch.Size):
		return ms.Errf(op, syscall.EINVAL, "extent [%d,+%d) past the %d bytes of chunk %d", x.ChunkOff, x.Len, ch.Size, x.Chunk)
	}
	return nil
}

func (f *FSM) markCommitted(id ms.ChunkID) {
	if ch, ok := f.chunks[id]; ok {
		ch.Committed = true
		ch.Lease = 0
	}
}

func (f *FSM) incRef(id ms.ChunkID) { f.chunks[id].Refs++ }

func (f *FSM) decRef(id ms.ChunkID) {
	ch, ok := f.chunks[id]
	if !ok {
		return
	}
	ch.Refs--
	if ch.Refs <= 0 && ch.Committed {
		f.freeChunk(ch)
	}
}

// freeChunk forgets a chunk and queues the deletion of its shards; the
// chunkservers get the names in their next heartbeat replies.
func (f *FSM) freeChunk(ch *ms.Chunk) {
	for _, s := range ch.Shards {
		f.queueDelete(s.Server, ms.ShardName(ch.ID, s.Index))
	}
	for i := range ch.Shards {
		delete(f.repairs, repairKey{ch.ID, i})
	}
	delete(f.chunks, ch.ID)
}

func (f *FSM) queueDelete(id ms.ServerID, name string) {
	if cs, ok := f.servers[id]; ok && cs.State != ms.StateRemoved {
		f.deletes[id] = append(f.deletes[id], name)
	}
}

// cutExtents returns exts without the byte range [from, to), splitting the
// extents it partly covers and adjusting chunk references: a dropped piece
// releases its reference, a split adds one. exts is not modified, so
// snapshots taken earlier stay valid.
func (f *FSM) cutExtents(exts []ms.Extent, from, to uint64) []ms.Extent {
	out := make([]ms.Extent, 0, len(exts)+1)
	for _, e := range exts {
		end := e.Off + e.Len
		if end <= from || e.Off >= to {
			out = append(out, e)
			continue
		}
		pieces := 0
		if e.Off < from {
			out = append(out, ms.Extent{Off: e.Off, Len: from - e.Off, Chunk: e.Chunk, ChunkOff: e.ChunkOff})
			pieces++
		}
		if end > to {
			out = append(out, ms.Extent{Off: to, Len: end - to, Chunk: e.Chunk, ChunkOff: e.ChunkOff + (to - e.Off)})
			pieces++
		}
		switch pieces {
		case 0:
			f.decRef(e.Chunk)
		case 2:
			f.incRef(e.Chunk)
		}
	}
	return out
}

// insertExtents writes add over exts (later extents win where they overlap)
// and returns the new, sorted list. References to the new chunks are taken
// before old ones are released, so rewriting a range of a chunk with the
// same chunk never frees it in between.
func (f *FSM) insertExtents(exts []ms.Extent, add []ms.Extent) []ms.Extent {
	for _, x := range add {
		f.incRef(x.Chunk)
	}
	out := slices.Clone(exts)
	for _, x := range add {
		out = f.cutExtents(out, x.Off, x.Off+x.Len)
		out = append(out, x)
	}
	slices.SortFunc(out, func(a, b ms.Extent) int { return cmp.Compare(a.Off, b.Off) })
	return out
}

func (f *FSM) releaseExtents(exts []ms.Extent) {
	for _, e := range exts {
		f.decRef(e.Chunk)
	}
}

func (f *FSM) applyCommitExtents(c *command, a ms.CommitExtentsArgs) (ms.Attr, error) {
	const op = "commitextents"
	n, err := f.getInode(op, a.Ino)
	if err != nil {
		return ms.Attr{}, err
	}
	switch {
	case isDir(n.Mode):
		return ms.Attr{}, ms.Errf(op, syscall.EISDIR, "inode %d", a.Ino)
	case !n.IsRegular():
		return ms.Attr{}, ms.Errf(op, syscall.EINVAL, "inode %d is not a regular file", a.Ino)
	}
	for _, x := range a.Extents {
		if err := f.checkExtent(op, x); err != nil {
			return ms.Attr{}, err
		}
	}
	for id, sums := range a.Sums {
		ch, ok := f.chunks[id]
		if !ok {
			return ms.Attr{}, ms.Errf(op, syscall.ENOENT, "chunk %d", id)
		}
		if len(sums) != len(ch.Shards) {
			return ms.Attr{}, ms.Errf(op, syscall.EINVAL, "%d checksums for the %d shards of chunk %d", len(sums), len(ch.Shards), id)
		}
	}
	for id, sums := range a.Sums {
		ch := f.chunks[id]
		for i := range ch.Shards {
			ch.Shards[i].Sum = sums[i]
		}
	}
	for _, x := range a.Extents {
		f.markCommitted(x.Chunk)
	}
	n.Extents = f.insertExtents(n.Extents, a.Extents)
	n.Size = max(n.Size, a.NewSize)
	n.Mtime, n.Ctime = c.Time, c.Time
	n.Gen++
	return n.Attr, nil
}

// --- placement ---

// place picks n distinct up servers with room for shardSize, skipping
// exclude. Each pick goes to the least used failure domain so far (counts in
// domains, updated), and within those domains is weighted by free space so
// fuller servers fill more slowly.
func (f *FSM) place(n int, shardSize int64, exclude map[ms.ServerID]bool, domains map[string]int, rng *rand.Rand) ([]*ms.ChunkserverInfo, error) {
	var cands []*ms.ChunkserverInfo
	notUp := map[string]int{}
	full := 0
	for _, cs := range f.servers {
		switch {
		case exclude[cs.ID] || cs.State == ms.StateRemoved:
		case cs.State != ms.StateUp:
			notUp[cs.State]++
		case cs.Capacity-cs.Used < shardSize:
			full++
		default:
			cands = append(cands, cs)
		}
	}
	if len(cands) < n {
		// Say why servers were passed over: "no space" after an election
		// usually means "not heard from yet", not full disks.
		why := fmt.Sprintf("%d full", full)
		for _, st := range slices.Sorted(maps.Keys(notUp)) {
			why += fmt.Sprintf(", %d %s", notUp[st], st)
		}
		return nil, fmt.Errorf("%w: need %d chunkservers that are up with %d bytes free, %d eligible (%s)",
			ms.ErrNoSpace, n, shardSize, len(cands), why)
	}
	// Map order is random; sort so every replica draws the same servers.
	slices.SortFunc(cands, func(a, b *ms.ChunkserverInfo) int { return cmp.Compare(a.ID, b.ID) })
	picked := make([]*ms.ChunkserverInfo, 0, n)
	for range n {
		least := -1
		for _, cs := range cands {
			if d := domains[domainOf(cs)]; least < 0 || d < least {
				least = d
			}
		}
		var total float64
		for _, cs := range cands {
			if domains[domainOf(cs)] == least {
				total += float64(max(cs.Capacity-cs.Used, 1))
			}
		}
		r := rng.Float64() * total
		choice := -1
		for i, cs := range cands {
			if domains[domainOf(cs)] != least {
				continue
			}
			choice = i
			r -= float64(max(cs.Capacity-cs.Used, 1))
			if r < 0 {
				break
			}
		}
		cs := cands[choice]
		picked = append(picked, cs)
		domains[domainOf(cs)]++
		cands = slices.Delete(cands, choice, choice+1)
	}
	return picked, nil
}

func (f *FSM) applyAllocChunk(c *command, a ms.AllocChunkArgs) (ms.Chunk, error) {
	const op = "allocchunk"
	switch {
	case a.K < 1 || a.M < 0 || a.K+a.M > 256:
		return ms.Chunk{}, ms.Errf(op, syscall.EINVAL, "geometry %d+%d", a.K, a.M)
	case a.Replicated && a.K != 1:
		return ms.Chunk{}, ms.Errf(op, syscall.EINVAL, "replicated chunks need k=1, got %d", a.K)
	case a.ShardSize <= 0 || a.Size < 0 || a.Size > int64(a.K)*a.ShardSize:
		return ms.Chunk{}, ms.Errf(op, syscall.EINVAL, "size %d does not fit %d shards of %d bytes", a.Size, a.K, a.ShardSize)
	}
	picked, err := f.place(a.K+a.M, a.ShardSize, nil, map[string]int{}, rngFor(c))
	if err != nil {
		return ms.Chunk{}, err
	}
	ch := &ms.Chunk{
		ID: f.nextChunk, K: a.K, M: a.M, Size: a.Size, ShardSize: a.ShardSize,
		Replicated: a.Replicated, Lease: c.Lease,
	}
	f.nextChunk++
	for i, cs := range picked {
		ch.Shards = append(ch.Shards, ms.Shard{Index: i, Server: cs.ID, Addr: cs.Addr})
		// Count the space now; the next heartbeat reports the truth.
		cs.Used += a.ShardSize
	}
	f.chunks[ch.ID] = ch
	return cloneChunk(ch), nil
}

func cloneChunk(ch *ms.Chunk) ms.Chunk {
	out := *ch
	out.Shards = slices.Clone(ch.Shards)
	return out
}

func (f *FSM) getChunk(id ms.ChunkID) (ms.Chunk, error) {
	ch, ok := f.chunks[id]
	if !ok {
		return ms.Chunk{}, ms.Errf("getchunk", syscall.ENOENT, "chunk %d", id)
	}
	return cloneChunk(ch), nil
}

// --- chunkservers ---

func (f *FSM) applyHeartbeat(c *command, hb ms.Heartbeat) (ms.HeartbeatReply, error) {
	const op = "heartbeat"
	if hb.ID == "" || hb.Addr == "" {
		return ms.HeartbeatReply{}, ms.Errf(op, syscall.EINVAL, "heartbeat without id or address")
	}
	cs, ok := f.servers[hb.ID]
	if ok && cs.State == ms.StateRemoved {
		return ms.HeartbeatReply{}, ms.Errf(op, syscall.EPERM, "chunkserver %s was removed", hb.ID)
	}
	if !ok {
		cs = &ms.ChunkserverInfo{ID: hb.ID, State: ms.StateUp}
		f.servers[hb.ID] = cs
	}
	if cs.Addr != hb.Addr {
		for _, ch := range f.chunks {
			for i := range ch.Shards {
				if ch.Shards[i].Server == hb.ID {
					ch.Shards[i].Addr = hb.Addr
				}
			}
		}
	}
	cs.Addr, cs.Capacity, cs.Used, cs.Shards = hb.Addr, hb.Capacity, hb.Used, hb.Shards
	cs.Labels = hb.Labels
	cs.LastHeartbeat = c.Time
	if cs.State == ms.StateDown {
		f.rejoin(cs)
	}
	if cs.State == ms.StateSuspect || cs.State == ms.StateDown {
		cs.State = ms.StateUp
	}
	var reply ms.HeartbeatReply
	var jobs []*repairJob
	incoming := map[string]bool{}
	for _, j := range f.repairs {
		if j.Target != hb.ID {
			continue
		}
		incoming[ms.ShardName(j.Chunk, j.Index)] = true
		if j.Handed == 0 {
			jobs = append(jobs, j)
		}
	}
	reply.Deletes = f.takeDeletes(hb.ID, incoming)
	// The chunkserver runs these deletes before its next report; counting
	// them now keeps the next rebalancing round from seeing moved shards on
	// both their old and new servers.
	cs.Used = max(cs.Used-f.deletedBytes(reply.Deletes), 0)
	slices.SortFunc(jobs, func(a, b *repairJob) int {
		return cmp.Or(cmp.Compare(a.Chunk, b.Chunk), cmp.Compare(a.Index, b.Index))
	})
	for _, j := range jobs[:min(len(jobs), maxRepairsPerReply)] {
		j.Handed = c.Time
		reply.Repairs = append(reply.Repairs, ms.RepairTask{Chunk: cloneChunk(f.chunks[j.Chunk]), Index: j.Index})
	}
	return reply, nil
}

// takeDeletes hands out up to maxDeletesPerReply of the server's pending
// deletes. Names being rebuilt onto the server stay queued: the chunkserver
// runs repairs in the background, and a delete arriving in a later reply
// could remove the new copy. The completion unqueues them, or a dropped job
// leaves them for a later reply.
func (f *FSM) takeDeletes(id ms.ServerID, incoming map[string]bool) []string {
	d := f.deletes[id]
	if len(d) == 0 {
		return nil
	}
	var out, keep []string
	for _, name := range d {
		if len(out) < maxDeletesPerReply && !incoming[name] {
			out = append(out, name)
		} else {
			keep = append(keep, name)
		}
	}
	if len(keep) == 0 {
		delete(f.deletes, id)
	} else {
		f.deletes[id] = keep
	}
	return out
}

// rejoin handles a server back in service: a down server heartbeating
// again, or one an administrator sets up. Shards already rebuilt
// elsewhere no longer point at it and their deletes are queued for it; the
// copies whose rebuild has not completed are still its locations, so those
// rebuilds are cancelled rather than finished into a second copy. A target
// still working on one gets ESTALE when it reports and is told to delete
// its copy.
// Bad shards stay queued: their copies are damaged wherever they are.
func (f *FSM) rejoin(cs *ms.ChunkserverInfo) {
	for k, j := range f.repairs {
		if !j.Bad && f.chunks[k.Chunk].Shards[k.Index].Server == cs.ID {
			delete(f.repairs, k)
		}
	}
}

// shardsOn counts the shards placed on each server.
func (f *FSM) shardsOn() map[ms.ServerID]int {
	n := map[ms.ServerID]int{}
	for _, ch := range f.chunks {
		for _, s := range ch.Shards {
			n[s.Server]++
		}
	}
	return n
}

func (f *FSM) chunkservers() []ms.ChunkserverInfo {
	counts := f.shardsOn()
	out := make([]ms.ChunkserverInfo, 0, len(f.servers))
	for _, cs := range f.servers {
		v := *cs
		v.Labels = cloneLabels(cs.Labels)
		v.Shards = counts[cs.ID]
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b ms.ChunkserverInfo) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

func cloneLabels(m map[string]string) map[string]string {
	if m == nil {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// applySetState changes a chunkserver's state. admin is false for the
// leader's liveness decisions, which only ever demote up -> suspect -> down
// and must not override an administrator's drain or removal.
func (f *FSM) applySetState(c *command, a ms.SetStateArgs, admin bool) error {
	const op = "setchunkserverstate"
	cs, ok := f.servers[a.ID]
	if !ok {
		return ms.Errf(op, syscall.ENOENT, "chunkserver %s", a.ID)
	}
	if !admin {
		switch {
		case a.State == ms.StateSuspect && cs.State == ms.StateUp,
			a.State == ms.StateDown && (cs.State == ms.StateUp || cs.State == ms.StateSuspect):
		default:
			return nil
		}
	}
	switch a.State {
	case ms.StateUp, ms.StateDraining, ms.StateDown, ms.StateSuspect:
		if cs.State == ms.StateRemoved {
			return ms.Errf(op, syscall.EPERM, "chunkserver %s was removed", a.ID)
		}
	case ms.StateRemoved:
		if n := f.shardsOn()[a.ID]; n > 0 {
			return ms.Errf(op, syscall.EBUSY, "chunkserver %s still holds %d shards; drain it first", a.ID, n)
		}
		delete(f.deletes, a.ID)
	default:
		return ms.Errf(op, syscall.EINVAL, "unknown state %q", a.State)
	}
	cs.State = a.State
	if a.State == ms.StateUp {
		// A server back in service keeps its shards: drop the moves that were
		// only scheduled because of its state.
		f.rejoin(cs)
	}
	f.reconcileRepairs(rngFor(c))
	return nil
}

// needsMove reports whether a shard on this server must be rebuilt elsewhere.
func needsMove(cs *ms.ChunkserverInfo) bool {
	return cs == nil || cs.State == ms.StateDown || cs.State == ms.StateDraining || cs.State == ms.StateRemoved
}

// reconcileRepairs makes sure every committed shard on a down or draining
// server has a repair job, and that every job has a live target.
func (f *FSM) reconcileRepairs(rng *rand.Rand) {
	ids := slices.Sorted(maps.Keys(f.chunks))
	for _, id := range ids {
		ch := f.chunks[id]
		if !ch.Committed {
			continue
		}
		for i, s := range ch.Shards {
			if needsMove(f.servers[s.Server]) {
				if _, ok := f.repairs[repairKey{id, i}]; !ok {
					f.repairs[repairKey{id, i}] = &repairJob{Chunk: id, Index: i}
				}
			}
		}
	}
	keys := slices.SortedFunc(maps.Keys(f.repairs), func(a, b repairKey) int {
		return cmp.Or(cmp.Compare(a.Chunk, b.Chunk), cmp.Compare(a.Index, b.Index))
	})
	for _, k := range keys {
		j := f.repairs[k]
		if j.Target != "" {
			if t, ok := f.servers[j.Target]; ok && t.State == ms.StateUp && f.canTake(j, j.Target) {
				continue
			}
		}
		f.retarget(k, j, rng)
	}
}

// retarget finds a new target for a job whose target cannot take it. A
// rebalancing move is dropped instead: its target was chosen for its low
// usage, and the next round plans afresh from current usage.
func (f *FSM) retarget(k repairKey, j *repairJob, rng *rand.Rand) {
	if j.Target != "" && f.isMove(j) {
		delete(f.repairs, k)
		return
	}
	j.Target, j.Handed = "", 0
	f.assignRepair(j, rng)
}

// canTake reports whether server may receive the rebuilt shard of j: it
// holds no other shard of the chunk. Another repair of the same chunk may have
// completed onto it since j was assigned, and two shards of one chunk on one
// server would let a single failure take both.
func (f *FSM) canTake(j *repairJob, server ms.ServerID) bool {
	for i, s := range f.chunks[j.Chunk].Shards {
		if s.Server == server && i != j.Index {
			return false
		}
	}
	return true
}

func (f *FSM) assignRepair(j *repairJob, rng *rand.Rand) {
	ch := f.chunks[j.Chunk]
	exclude := map[ms.ServerID]bool{}
	domains := map[string]int{}
	for i, s := range ch.Shards {
		exclude[s.Server] = true
		if cs, ok := f.servers[s.Server]; ok && i != j.Index && !needsMove(cs) {
			domains[domainOf(cs)]++
		}
	}
	picked, err := f.place(1, ch.ShardSize, exclude, domains, rng)
	if err != nil {
		// No server outside the chunk's set has room (with six chunkservers
		// and 4+2, every server holds a shard of every chunk). A bad shard on
		// a server that is still up is then rebuilt in place; otherwise the
		// job stays unassigned and the next GC round tries again.
		holder := f.servers[ch.Shards[j.Index].Server]
		if j.Bad && holder != nil && holder.State == ms.StateUp {
			j.Target, j.Handed = holder.ID, 0
		}
		return
	}
	j.Target, j.Handed = picked[0].ID, 0
}

// applyAbandonChunk frees an uncommitted chunk at its writer's word, as the
// lease would later. A committed chunk is data some file uses: refused.
func (f *FSM) applyAbandonChunk(a ms.ChunkArgs) error {
	const op = "abandonchunk"
	ch, ok := f.chunks[a.ID]
	if !ok {
		return nil // freed already: by an earlier try of this call, or the lease
	}
	if ch.Committed {
		return ms.Errf(op, syscall.EBUSY, "chunk %d is committed", a.ID)
	}
	f.freeChunk(ch)
	return nil
}

func (f *FSM) applyReportBadShard(c *command, a ms.BadShardArgs) error {
	const op = "reportbadshard"
	ch, ok := f.chunks[a.ID]
	if !ok {
		return ms.Errf(op, syscall.ENOENT, "chunk %d", a.ID)
	}
	if a.Index < 0 || a.Index >= len(ch.Shards) {
		return ms.Errf(op, syscall.EINVAL, "chunk %d has no shard %d", a.ID, a.Index)
	}
	k := repairKey{a.ID, a.Index}
	if j, ok := f.repairs[k]; ok {
		j.Bad = true
		return nil
	}
	j := &repairJob{Chunk: a.ID, Index: a.Index, Bad: true}
	f.repairs[k] = j
	f.assignRepair(j, rngFor(c))
	return nil
}

func (f *FSM) applyCompleteRepair(c *command, a ms.RepairDone) error {
	const op = "completerepair"
	ch, ok := f.chunks[a.Chunk]
	if !ok {
		// The chunk went away while it was rebuilt: the new copy is garbage.
		f.queueDelete(a.Server, ms.ShardName(a.Chunk, a.Index))
		return ms.Errf(op, syscall.ENOENT, "chunk %d", a.Chunk)
	}
	if a.Index < 0 || a.Index >= len(ch.Shards) {
		return ms.Errf(op, syscall.EINVAL, "chunk %d has no shard %d", a.Chunk, a.Index)
	}
	cs, ok := f.servers[a.Server]
	if !ok || cs.State == ms.StateRemoved {
		return ms.Errf(op, syscall.ENOENT, "chunkserver %s", a.Server)
	}
	if ch.Shards[a.Index].Server == a.Server {
		delete(f.repairs, repairKey{a.Chunk, a.Index}) // rebuilt in place
		ch.Shards[a.Index].Sum = a.Sum
		return nil
	}
	_, pending := f.repairs[repairKey{a.Chunk, a.Index}]
	holds := false
	for _, s := range ch.Shards {
		holds = holds || s.Server == a.Server
	}
	if !pending || holds {
		// A late or duplicate report: keeping it would put two shards of one
		// chunk on one server, so the rebuilt copy is dropped.
		f.queueDelete(a.Server, ms.ShardName(a.Chunk, a.Index))
		return ms.Errf(op, syscall.ESTALE, "no repair of chunk %d shard %d pending for %s", a.Chunk, a.Index, a.Server)
	}
	old := ch.Shards[a.Index].Server
	ch.Shards[a.Index] = ms.Shard{Index: a.Index, Server: a.Server, Addr: cs.Addr, Sum: a.Sum}
	delete(f.repairs, repairKey{a.Chunk, a.Index})
	name := ms.ShardName(a.Chunk, a.Index)
	f.unqueueDelete(a.Server, name)
	f.queueDelete(old, name)
	// Count the space now, as placement does, so the next rebalancing round
	// does not see the move undone; the next heartbeats report the truth.
	cs.Used += ch.ShardSize
	if o, ok := f.servers[old]; ok {
		o.Used = max(o.Used-ch.ShardSize, 0)
	}
	// Other repairs of this chunk aimed at the same server must go elsewhere
	// now that it holds a shard of the chunk.
	for i := range ch.Shards {
		if j, ok := f.repairs[repairKey{a.Chunk, i}]; ok && j.Target == a.Server {
			f.retarget(repairKey{a.Chunk, i}, j, rngFor(c))
		}
	}
	return nil
}

// applyGC drops uncommitted chunks whose lease ran out, hands stale repairs
// out again, assigns repairs that had no target and plans a round of
// rebalancing moves.
func (f *FSM) applyGC(c *command, a gcArgs) {
	for _, id := range slices.Sorted(maps.Keys(f.chunks)) {
		ch := f.chunks[id]
		if !ch.Committed && ch.Lease != 0 && ch.Lease < c.Time {
			f.freeChunk(ch)
		}
	}
	for _, j := range f.repairs {
		if j.Handed != 0 && c.Time-j.Handed > a.RepairTimeout {
			j.Handed = 0
		}
	}
	f.reconcileRepairs(rngFor(c))
	f.rebalance(rngFor(c))
}

// gcWork reports whether a GC command would change anything at time now.
func (f *FSM) gcWork(now, repairTimeout int64) bool {
	for _, ch := range f.chunks {
		if !ch.Committed && ch.Lease != 0 && ch.Lease < now {
			return true
		}
	}
	for _, j := range f.repairs {
		if j.Target == "" || j.Handed != 0 && now-j.Handed > repairTimeout {
			return true
		}
		if t, ok := f.servers[j.Target]; !ok || t.State != ms.StateUp {
			return true
		}
	}
	return f.rebalanceWork(uint64(now))
}

// livenessChanges lists the state changes missed heartbeats call for. Silence
// is counted from floor at the earliest (when the leader took over).
func (f *FSM) livenessChanges(now, suspectAfter, downAfter, floor int64) []ms.SetStateArgs {
	var out []ms.SetStateArgs
	for _, cs := range f.servers {
		since := now - max(cs.LastHeartbeat, floor)
		switch {
		case (cs.State == ms.StateUp || cs.State == ms.StateSuspect) && since > downAfter:
			out = append(out, ms.SetStateArgs{ID: cs.ID, State: ms.StateDown})
		case cs.State == ms.StateUp && since > suspectAfter:
			out = append(out, ms.SetStateArgs{ID: cs.ID, State: ms.StateSuspect})
		}
	}
	slices.SortFunc(out, func(a, b ms.SetStateArgs) int { return cmp.Compare(a.ID, b.ID) })
	return out
}

// health counts degraded and lost chunks for Status.
func (f *FSM) health() (degraded, lost uint64) {
	for id, ch := range f.chunks {
		if !ch.Committed {
			continue
		}
		healthy := 0
		for i, s := range ch.Shards {
			cs := f.servers[s.Server]
			if cs == nil || cs.State == ms.StateDown || cs.State == ms.StateRemoved {
				continue
			}
			if j, ok := f.repairs[repairKey{id, i}]; ok && j.Bad {
				continue
			}
			healthy++
		}
		need := ch.K
		if healthy < len(ch.Shards) {
			degraded++
		}
		if healthy < need {
			lost++
		}
	}
	return degraded, lost
}

// strayShards answers StrayShards: the names that are not shards the chunk
// map places on a.Server, nor the target of a repair (or move) bound for it.
// A name that is not a shard name at all is a stray too. Called with f.mu
// held for reading.
func (f *FSM) strayShards(a ms.StrayShardsArgs) []string {
	stray := []string{}
	for _, name := range a.Names {
		id, index, ok := parseShardName(name)
		if ok {
			if j, pending := f.repairs[repairKey{id, index}]; pending && j.Target == a.Server {
				continue
			}
			if ch, known := f.chunks[id]; known && index >= 0 && index < len(ch.Shards) && ch.Shards[index].Server == a.Server {
				continue
			}
		}
		stray = append(stray, name)
	}
	return stray
}
