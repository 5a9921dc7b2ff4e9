package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"syscall"
	"testing"
	"time"

	ms "github.com/dockyard/dockyard/metaserver"
)

// simServer is a chunkserver reduced to what the metaserver sees of it: the
// shard names it stores, reported as Used in its heartbeats.
type simServer struct {
	id       ms.ServerID
	addr     string
	zone     string
	capacity int64
	shards   map[string]int64 // name -> size
}

func (s *simServer) used() int64 {
	var n int64
	for _, sz := range s.shards {
		n += sz
	}
	return n
}

// simCluster drives an in-memory metaserver with simulated chunkservers that
// store what they are placed, delete what they are told and complete every
// repair task at once.
type simCluster struct {
	t       *testing.T
	m       *Memory
	c       *ms.Client
	clk     *fakeClock
	servers map[ms.ServerID]*simServer
	order   []ms.ServerID
	handed  map[ms.ServerID]int // repair tasks received in the last round
}

func newSim(t *testing.T) *simCluster {
	m, c, clk := newMem(t)
	return &simCluster{t: t, m: m, c: c, clk: clk, servers: map[ms.ServerID]*simServer{}}
}

func (sc *simCluster) add(zone string, capacity int64) *simServer {
	sc.t.Helper()
	n := len(sc.order)
	s := &simServer{id: ms.ServerID(fmt.Sprintf("cs%d", n)), addr: fmt.Sprintf("127.0.0.1:%d", 9600+n), zone: zone,
		capacity: capacity, shards: map[string]int64{}}
	sc.servers[s.id] = s
	sc.order = append(sc.order, s.id)
	sc.heartbeat(s.id)
	return s
}

// heartbeat sends one heartbeat of id and acts on the reply like a
// chunkserver: deletes first, then the repairs, each completed at once.
func (sc *simCluster) heartbeat(id ms.ServerID) ms.HeartbeatReply {
	sc.t.Helper()
	ctx := context.Background()
	s := sc.servers[id]
	r, err := sc.c.Heartbeat(ctx, ms.Heartbeat{ID: s.id, Addr: s.addr, Labels: map[string]string{"zone": s.zone},
		Capacity: s.capacity, Used: s.used(), Shards: len(s.shards)})
	if err != nil {
		sc.t.Fatal(err)
	}
	for _, name := range r.Deletes {
		delete(s.shards, name)
	}
	for _, task := range r.Repairs {
		sc.handed[id]++
		for i, sh := range task.Chunk.Shards {
			if sh.Server == id && i != task.Index {
				sc.t.Fatalf("task for chunk %d shard %d handed to %s, which holds shard %d", task.Chunk.ID, task.Index, id, i)
			}
		}
		name := ms.ShardName(task.Chunk.ID, task.Index)
		s.shards[name] = task.Chunk.ShardSize
		if err := sc.c.CompleteRepair(ctx, ms.RepairDone{Chunk: task.Chunk.ID, Index: task.Index, Server: id}); err != nil {
			sc.t.Fatalf("completing %s on %s: %v", name, id, err)
		}
	}
	return r
}

// round is one maintenance round: every live server heartbeats, then the
// leader's periodic commands run.
func (sc *simCluster) round(cfg Config, down ...ms.ServerID) {
	sc.t.Helper()
	sc.clk.advance(time.Second)
	sc.handed = map[ms.ServerID]int{}
	for _, id := range sc.order {
		if !slices.Contains(down, id) {
			sc.heartbeat(id)
		}
	}
	sc.m.Tick(cfg)
}

// settle runs rounds until no job is queued, then one more so the last
// deletes reach their servers; it fails after bound rounds.
func (sc *simCluster) settle(cfg Config, bound int) {
	sc.t.Helper()
	for range bound {
		sc.round(cfg)
		st, err := sc.c.Status(context.Background())
		if err != nil {
			sc.t.Fatal(err)
		}
		if st.RepairsQueued == 0 && st.MovesQueued == 0 {
			sc.round(cfg)
			return
		}
	}
	sc.t.Fatalf("jobs still queued after %d rounds", bound)
}

// store allocates and commits n chunks of 4+2 shards of size shard into
// one file, and puts the shards on the simulated servers.
func (sc *simCluster) store(n int, shard int64) []ms.ChunkID {
	sc.t.Helper()
	ctx := context.Background()
	f := mustCreate(sc.t, sc.c, ms.RootIno, fmt.Sprintf("f%d", sc.clk.now().UnixNano()), syscall.S_IFREG|0o644)
	var exts []ms.Extent
	var ids []ms.ChunkID
	for i := range n {
		ch, err := sc.c.AllocChunk(ctx, 4, 2, shard, 4*shard, false)
		if err != nil {
			sc.t.Fatal(err)
		}
		for _, s := range ch.Shards {
			sc.servers[s.Server].shards[ms.ShardName(ch.ID, s.Index)] = shard
		}
		exts = append(exts, ms.Extent{Off: uint64(i) * uint64(4*shard), Len: uint64(4 * shard), Chunk: ch.ID})
		ids = append(ids, ch.ID)
	}
	if _, err := sc.c.CommitExtents(ctx, f.Ino, exts, nil, uint64(n)*uint64(4*shard)); err != nil {
		sc.t.Fatal(err)
	}
	return ids
}

// check verifies the invariants of every chunk: distinct servers, at least
// minZones zones, and (when settled) that the simulated servers store
// exactly the shards the chunk table points at.
func (sc *simCluster) check(ids []ms.ChunkID, minZones int, settled bool) {
	sc.t.Helper()
	ctx := context.Background()
	located := map[ms.ServerID]map[string]bool{}
	for _, id := range ids {
		ch, err := sc.c.GetChunk(ctx, id)
		if err != nil {
			sc.t.Fatal(err)
		}
		if !distinctServers(ch) {
			sc.t.Fatalf("two shards of chunk %d on one server: %+v", id, ch.Shards)
		}
		zones := map[string]bool{}
		for _, s := range ch.Shards {
			zones[sc.servers[s.Server].zone] = true
			name := ms.ShardName(id, s.Index)
			if located[s.Server] == nil {
				located[s.Server] = map[string]bool{}
			}
			located[s.Server][name] = true
			if _, ok := sc.servers[s.Server].shards[name]; !ok {
				sc.t.Fatalf("chunk table puts %s on %s, which does not store it", name, s.Server)
			}
		}
		if len(zones) < minZones {
			sc.t.Fatalf("chunk %d spans %d zones, want at least %d: %+v", id, len(zones), minZones, ch.Shards)
		}
	}
	if !settled {
		return
	}
	for id, s := range sc.servers {
		for name := range s.shards {
			if !located[id][name] {
				sc.t.Fatalf("%s still stores %s, which the chunk table places elsewhere", id, name)
			}
		}
	}
}

// utilisation returns each server's stored bytes over capacity, and the mean.
func (sc *simCluster) utilisation() (map[ms.ServerID]float64, float64) {
	out := map[ms.ServerID]float64{}
	var used, capacity int64
	for id, s := range sc.servers {
		out[id] = float64(s.used()) / float64(s.capacity)
		used += s.used()
		capacity += s.capacity
	}
	return out, float64(used) / float64(capacity)
}

func balanced(util map[ms.ServerID]float64, mean float64) bool {
	for _, u := range util {
		if u > mean+rebalanceThreshold || u < mean-rebalanceThreshold {
			return false
		}
	}
	return true
}

func TestRebalanceOntoAddedServers(t *testing.T) {
	const shard = 1 << 20
	sc := newSim(t)
	cfg := Config{SuspectAfter: time.Hour, DownAfter: 2 * time.Hour}
	for i := range 6 {
		sc.add([]string{"a", "b", "c"}[i%3], 80*shard)
	}
	ids := sc.store(60, shard) // 60 shards on each server: 75% full
	ctx := context.Background()
	sc.round(cfg)
	if st, _ := sc.c.Status(ctx); st.MovesQueued != 0 {
		t.Fatalf("%d moves queued on a balanced cluster", st.MovesQueued)
	}
	sc.check(ids, 3, true)

	added := map[ms.ServerID]bool{}
	for i := range 3 {
		added[sc.add([]string{"a", "b", "c"}[i], 80*shard).id] = true
	}
	const bound = 30
	sawMoves := false
	rounds := 0
	for ; rounds < bound; rounds++ {
		sc.round(cfg)
		for id, n := range sc.handed {
			if !added[id] {
				t.Fatalf("round %d: %d moves handed to %s, one of the full servers", rounds, n, id)
			}
			if n > maxMovesPerServer {
				t.Fatalf("round %d: %d moves handed to %s at once, limit %d", rounds, n, id, maxMovesPerServer)
			}
		}
		sc.check(ids, 3, false)
		st, err := sc.c.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.MovesQueued > maxMovesPerRound || st.RepairsQueued != 0 || st.Degraded != 0 {
			t.Fatalf("round %d: status %+v", rounds, st)
		}
		sawMoves = sawMoves || st.MovesQueued > 0
		if util, mean := sc.utilisation(); balanced(util, mean) && st.MovesQueued == 0 {
			break
		}
	}
	if !sawMoves {
		t.Fatal("Status never showed a queued move")
	}
	if rounds == bound {
		util, mean := sc.utilisation()
		t.Fatalf("not balanced after %d rounds: mean %.2f, %v", bound, mean, util)
	}
	t.Logf("balanced after %d rounds", rounds+1)
	// One more round delivers the last deletes; then the servers store
	// exactly what the table says, and nothing moves any more.
	sc.round(cfg)
	sc.check(ids, 3, true)
	for range 3 {
		sc.round(cfg)
		if len(sc.handed) != 0 {
			t.Fatalf("moves after convergence: %v", sc.handed)
		}
	}
	for id := range added {
		if u, _ := sc.utilisation(); u[id] == 0 {
			t.Fatalf("added server %s got nothing", id)
		}
	}
}

func TestRebalanceKeepsZones(t *testing.T) {
	// Three full servers, one per zone, each holding one copy of every
	// replicated chunk; a new empty server in zone b. Moving a copy from
	// zone a or c onto it would leave the chunk in two zones, so only the
	// old zone-b server may give it shards.
	const shard = 1 << 20
	sc := newSim(t)
	cfg := Config{SuspectAfter: time.Hour, DownAfter: 2 * time.Hour}
	for _, z := range []string{"a", "b", "c"} {
		sc.add(z, 40*shard)
	}
	ctx := context.Background()
	f := mustCreate(t, sc.c, ms.RootIno, "r", syscall.S_IFREG|0o644)
	var ids []ms.ChunkID
	for i := range 30 {
		ch, err := sc.c.AllocChunk(ctx, 1, 2, shard, shard, true)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range ch.Shards {
			sc.servers[s.Server].shards[ms.ShardName(ch.ID, s.Index)] = shard
		}
		if _, err := sc.c.CommitExtents(ctx, f.Ino, []ms.Extent{{Off: uint64(i) * shard, Len: shard, Chunk: ch.ID}}, nil, uint64(i+1)*shard); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, ch.ID)
	}
	nb := sc.add("b", 40*shard)
	for range 5 {
		sc.round(cfg)
		sc.check(ids, 3, false)
	}
	sc.settle(cfg, 20)
	sc.check(ids, 3, true)
	if len(nb.shards) == 0 {
		t.Fatal("the new zone-b server got nothing")
	}
	for _, id := range []ms.ServerID{"cs0", "cs2"} {
		if n := len(sc.servers[id].shards); n != 30 {
			t.Fatalf("%s (zone %s) holds %d shards, want all 30 kept", id, sc.servers[id].zone, n)
		}
	}
	// The zone-b pair shares its zone's copies, each about half.
	if n := len(sc.servers["cs1"].shards) + len(nb.shards); n != 30 {
		t.Fatalf("zone b holds %d copies, want 30", n)
	}
}

func TestMoveDroppedWhenTargetGoesAway(t *testing.T) {
	const shard = 1 << 20
	sc := newSim(t)
	cfg := Config{SuspectAfter: 3 * time.Second, DownAfter: time.Hour}
	for i := range 6 {
		sc.add([]string{"a", "b", "c"}[i%3], 80*shard)
	}
	ids := sc.store(60, shard)
	target := sc.add("a", 80*shard)
	sc.m.Tick(cfg)
	ctx := context.Background()
	st, _ := sc.c.Status(ctx)
	if st.MovesQueued == 0 {
		t.Fatal("no moves planned toward the empty server")
	}
	var planned repairKey
	for k, j := range sc.m.fsm.repairs {
		if j.Target != target.id {
			t.Fatalf("move of %v aimed at %s, not the empty server", k, j.Target)
		}
		planned = k
	}
	// The target falls silent before taking its moves: once suspect, its
	// moves are dropped rather than sent to a random server.
	sc.clk.advance(5 * time.Second)
	for _, id := range sc.order[:6] {
		sc.heartbeat(id)
	}
	sc.m.Tick(cfg)
	st, _ = sc.c.Status(ctx)
	if st.MovesQueued != 0 || st.RepairsQueued != 0 {
		t.Fatalf("after the target went silent: %+v", st)
	}
	// A late completion of a dropped move is refused and its copy deleted.
	name := ms.ShardName(planned.Chunk, planned.Index)
	err := sc.c.CompleteRepair(ctx, ms.RepairDone{Chunk: planned.Chunk, Index: planned.Index, Server: target.id})
	if !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("late completion of a dropped move: %v", err)
	}
	r := sc.heartbeat(target.id)
	if !slices.Contains(r.Deletes, name) {
		t.Fatalf("deletes for the late copy: %v", r.Deletes)
	}
	sc.check(ids, 3, false)
}

func TestDownServerRejoins(t *testing.T) {
	// down -> repairs assigned -> some complete -> the server heartbeats
	// again: one location per shard, its moved copies deleted, its other
	// copies kept and their rebuilds cancelled.
	const shard = 1 << 20
	ctx := context.Background()
	sc := newSim(t)
	cfg := Config{SuspectAfter: 3 * time.Second, DownAfter: 30 * time.Second}
	// Room for far more than the cluster stores, so no server is out of
	// balance and every job below is a repair.
	for i := range 9 {
		sc.add([]string{"a", "b", "c"}[i%3], 1000*shard)
	}
	ids := sc.store(30, shard)
	const gone = ms.ServerID("cs4")
	var onGone []string
	for name := range sc.servers[gone].shards {
		onGone = append(onGone, name)
	}
	slices.Sort(onGone)
	if len(onGone) < 4 {
		t.Fatalf("test setup: only %d shards on %s", len(onGone), gone)
	}
	var alive []ms.ServerID
	for _, id := range sc.order {
		if id != gone {
			alive = append(alive, id)
		}
	}
	sc.clk.advance(31 * time.Second)
	for _, id := range alive {
		sc.heartbeat(id)
	}
	sc.m.Tick(cfg)
	st, _ := sc.c.Status(ctx)
	if st.RepairsQueued != uint64(len(onGone)) || st.MovesQueued != 0 {
		t.Fatalf("after %s went down with %d shards: %+v", gone, len(onGone), st)
	}
	// The targets take their tasks; half of them finish.
	type task struct {
		target ms.ServerID
		t      ms.RepairTask
	}
	var tasks []task
	for _, id := range alive {
		s := sc.servers[id]
		r, err := sc.c.Heartbeat(ctx, ms.Heartbeat{ID: id, Addr: s.addr, Labels: map[string]string{"zone": s.zone},
			Capacity: s.capacity, Used: s.used()})
		if err != nil {
			t.Fatal(err)
		}
		for _, rt := range r.Repairs {
			tasks = append(tasks, task{id, rt})
		}
	}
	if len(tasks) != len(onGone) {
		t.Fatalf("%d tasks handed out for %d lost shards", len(tasks), len(onGone))
	}
	slices.SortFunc(tasks, func(a, b task) int { return int(a.t.Chunk.ID) - int(b.t.Chunk.ID) })
	done, pending := tasks[:len(tasks)/2], tasks[len(tasks)/2:]
	moved := map[string]bool{}
	for _, tk := range done {
		name := ms.ShardName(tk.t.Chunk.ID, tk.t.Index)
		sc.servers[tk.target].shards[name] = shard
		if err := sc.c.CompleteRepair(ctx, ms.RepairDone{Chunk: tk.t.Chunk.ID, Index: tk.t.Index, Server: tk.target}); err != nil {
			t.Fatal(err)
		}
		moved[name] = true
	}
	// The server comes back with every copy it had.
	r := sc.heartbeat(gone)
	if got := slices.Sorted(slices.Values(r.Deletes)); len(got) != len(done) {
		t.Fatalf("returning server told to delete %v, want the %d moved shards", got, len(done))
	}
	for _, name := range r.Deletes {
		if !moved[name] {
			t.Fatalf("returning server told to delete %s, whose rebuild never finished", name)
		}
	}
	st, _ = sc.c.Status(ctx)
	if st.RepairsQueued != 0 || st.MovesQueued != 0 || st.Degraded != 0 {
		t.Fatalf("after the server came back: %+v", st)
	}
	for _, id := range ids {
		ch, _ := sc.c.GetChunk(ctx, id)
		for _, s := range ch.Shards {
			name := ms.ShardName(id, s.Index)
			if slices.Contains(onGone, name) && s.Server != gone && !moved[name] {
				t.Fatalf("%s left %s without a finished rebuild: now on %s", name, gone, s.Server)
			}
			if moved[name] && s.Server == gone {
				t.Fatalf("%s points at the stale copy on %s", name, gone)
			}
		}
	}
	// A pending rebuild finishing late is refused and its copy deleted.
	tk := pending[0]
	err := sc.c.CompleteRepair(ctx, ms.RepairDone{Chunk: tk.t.Chunk.ID, Index: tk.t.Index, Server: tk.target})
	if !errors.Is(err, syscall.ESTALE) {
		t.Fatalf("late completion of a cancelled rebuild: %v", err)
	}
	sc.servers[tk.target].shards[ms.ShardName(tk.t.Chunk.ID, tk.t.Index)] = shard
	sc.settle(Config{SuspectAfter: time.Hour, DownAfter: 2 * time.Hour}, 5)
	sc.check(ids, 3, true)
}

func TestDeleteNotHandedWhileShardRebuildsThere(t *testing.T) {
	// A server with a pending delete of a shard name that a job now
	// rebuilds onto it: the delete waits, and the completion cancels it.
	f := NewFSM()
	f.servers["s1"] = &ms.ChunkserverInfo{ID: "s1", Addr: "a", State: ms.StateUp, Capacity: 1 << 30}
	f.servers["s2"] = &ms.ChunkserverInfo{ID: "s2", Addr: "b", State: ms.StateDown, Capacity: 1 << 30}
	f.chunks[1] = &ms.Chunk{ID: 1, K: 1, M: 0, Size: 1, ShardSize: 1, Committed: true, Refs: 1,
		Shards: []ms.Shard{{Index: 0, Server: "s2", Addr: "b"}}}
	name := ms.ShardName(1, 0)
	f.deletes["s1"] = []string{name, "other"}
	f.repairs[repairKey{1, 0}] = &repairJob{Chunk: 1, Index: 0, Target: "s1"}
	r, err := f.applyHeartbeat(&command{Time: 1}, ms.Heartbeat{ID: "s1", Addr: "a", Capacity: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(r.Deletes, []string{"other"}) || len(r.Repairs) != 1 {
		t.Fatalf("reply %+v", r)
	}
	if err := f.applyCompleteRepair(&command{Time: 2}, ms.RepairDone{Chunk: 1, Index: 0, Server: "s1"}); err != nil {
		t.Fatal(err)
	}
	if len(f.deletes["s1"]) != 0 || !slices.Equal(f.deletes["s2"], []string{name}) {
		t.Fatalf("deletes %v", f.deletes)
	}
}

func TestParseShardName(t *testing.T) {
	id, i, ok := parseShardName(ms.ShardName(0xabc, 5))
	if !ok || id != 0xabc || i != 5 {
		t.Fatalf("parsed %d %d %v", id, i, ok)
	}
	for _, bad := range []string{"", "xyz.1", "00ab", "00ab.x"} {
		if _, _, ok := parseShardName(bad); ok {
			t.Fatalf("parsed %q", bad)
		}
	}
}

func TestRebalancePlanIsDeterministic(t *testing.T) {
	// Two replicas fed the same commands, seeds included, plan the same
	// moves although their maps iterate in different orders.
	const shard = 1 << 20
	build := func() *FSM {
		f := NewFSM()
		seq := uint64(0)
		exec := func(op string, seed uint64, args any) []byte {
			seq++
			b, _ := json.Marshal(args)
			r := f.apply(&command{Type: op, Time: int64(seq), Seed: seed, Lease: 1 << 62, Payload: b}, seq)
			if r.Err != nil {
				t.Fatalf("%s: %v", op, r.Err.Err())
			}
			return r.Value
		}
		hb := func(i int, used int64) {
			exec(ms.OpHeartbeat, 0, ms.Heartbeat{ID: ms.ServerID(fmt.Sprintf("cs%d", i)), Addr: fmt.Sprintf("127.0.0.1:%d", 9600+i),
				Labels: map[string]string{"zone": []string{"a", "b", "c"}[i%3]}, Capacity: 40 * shard, Used: used})
		}
		for i := range 6 {
			hb(i, 0)
		}
		var ino struct{ Ino ms.Ino }
		if err := json.Unmarshal(exec(ms.OpCreate, 0, ms.CreateIn{Parent: ms.RootIno, Name: "f", Mode: syscall.S_IFREG | 0o644}), &ino); err != nil {
			t.Fatal(err)
		}
		var exts []ms.Extent
		for i := range 30 {
			var ch ms.Chunk
			if err := json.Unmarshal(exec(ms.OpAllocChunk, uint64(i), ms.AllocChunkArgs{K: 4, M: 2, ShardSize: shard, Size: 4 * shard}), &ch); err != nil {
				t.Fatal(err)
			}
			exts = append(exts, ms.Extent{Off: uint64(i) * 4 * shard, Len: 4 * shard, Chunk: ch.ID})
		}
		exec(ms.OpCommitExtents, 0, ms.CommitExtentsArgs{Ino: ino.Ino, Extents: exts, NewSize: 120 * shard})
		for i := range 6 {
			hb(i, 30*shard)
		}
		for i := 6; i < 9; i++ {
			hb(i, 0)
		}
		exec(cmdGC, 7, gcArgs{RepairTimeout: int64(time.Minute)})
		return f
	}
	f1, f2 := build(), build()
	if _, moves := f1.jobCounts(); moves == 0 {
		t.Fatal("no moves planned toward three empty servers")
	}
	if !bytes.Equal(snapshotBytes(t, f1), snapshotBytes(t, f2)) {
		t.Fatal("two replicas planned different moves")
	}
}

func TestGCWorkSeesImbalance(t *testing.T) {
	// The leader proposes a GC round only when gcWork says so: it must see
	// an added empty server, and stay quiet on a balanced cluster.
	const shard = 1 << 20
	sc := newSim(t)
	cfg := Config{SuspectAfter: time.Hour, DownAfter: 2 * time.Hour}
	for i := range 6 {
		sc.add([]string{"a", "b", "c"}[i%3], 80*shard)
	}
	sc.store(60, shard)
	sc.round(cfg)
	now := sc.clk.now().UnixNano()
	f := sc.m.fsm
	if f.gcWork(now, int64(time.Minute)) {
		t.Fatal("gcWork on a balanced cluster")
	}
	// A draining server, however empty, is no target.
	drained := sc.add("a", 80*shard)
	if err := sc.c.SetChunkserverState(context.Background(), drained.id, ms.StateDraining); err != nil {
		t.Fatal(err)
	}
	if f.gcWork(now, int64(time.Minute)) {
		t.Fatal("gcWork plans moves onto a draining server")
	}
	sc.add("b", 80*shard)
	if !f.gcWork(now, int64(time.Minute)) {
		t.Fatal("gcWork misses an empty server")
	}
	sc.m.Tick(cfg)
	for k, j := range f.repairs {
		if j.Target == drained.id {
			t.Fatalf("move of %v aimed at the draining server", k)
		}
	}
}
