package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	ms "github.com/dockyard/dockyard/metaserver"
)

const gib = 1 << 30

func addServers(t *testing.T, c *ms.Client, n int, zones ...string) {
	t.Helper()
	for i := range n {
		hb := ms.Heartbeat{ID: ms.ServerID(fmt.Sprintf("cs%d", i)), Addr: fmt.Sprintf("127.0.0.1:%d", 9600+i), Capacity: 10 * gib}
		if len(zones) > 0 {
			hb.Labels = map[string]string{"zone": zones[i%len(zones)]}
		}
		if _, err := c.Heartbeat(context.Background(), hb); err != nil {
			t.Fatal(err)
		}
	}
}

func heartbeatAll(t *testing.T, c *ms.Client, ids ...int) map[int]ms.HeartbeatReply {
	t.Helper()
	out := map[int]ms.HeartbeatReply{}
	for _, i := range ids {
		r, err := c.Heartbeat(context.Background(), ms.Heartbeat{ID: ms.ServerID(fmt.Sprintf("cs%d", i)), Addr: fmt.Sprintf("127.0.0.1:%d", 9600+i), Capacity: 10 * gib})
		if err != nil {
			t.Fatal(err)
		}
		out[i] = r
	}
	return out
}

func distinctServers(ch ms.Chunk) bool {
	seen := map[ms.ServerID]bool{}
	for _, s := range ch.Shards {
		if seen[s.Server] {
			return false
		}
		seen[s.Server] = true
	}
	return true
}

func TestPlacement(t *testing.T) {
	ctx := context.Background()
	_, c, _ := newMem(t)
	_, err := c.AllocChunk(ctx, 4, 2, 1<<20, 4<<20, false)
	if !errors.Is(err, ms.ErrNoSpace) {
		t.Fatalf("alloc without servers: %v", err)
	}
	addServers(t, c, 9, "a", "b", "c")
	for range 50 {
		ch, err := c.AllocChunk(ctx, 4, 2, 1<<20, 4<<20, false)
		if err != nil {
			t.Fatal(err)
		}
		if len(ch.Shards) != 6 || !distinctServers(ch) || ch.Committed || ch.Lease == 0 {
			t.Fatalf("chunk %+v", ch)
		}
		// 6 shards over 3 zones: exactly 2 per zone.
		perZone := map[string]int{}
		for _, s := range ch.Shards {
			var i int
			fmt.Sscanf(string(s.Server), "cs%d", &i)
			perZone[[]string{"a", "b", "c"}[i%3]]++
		}
		for z, n := range perZone {
			if n != 2 {
				t.Fatalf("zone %s got %d shards of one chunk: %+v", z, n, ch.Shards)
			}
		}
	}
	// Replicated chunks need k=1.
	_, err = c.AllocChunk(ctx, 2, 1, 1<<20, 1<<20, true)
	wantErrno(t, "replicated k=2", err, syscall.EINVAL)
	rep, err := c.AllocChunk(ctx, 1, 2, 4096, 4096, true)
	if err != nil || len(rep.Shards) != 3 || !rep.Replicated {
		t.Fatalf("replicated: %+v %v", rep, err)
	}
	_, err = c.AllocChunk(ctx, 4, 2, 1<<20, 5<<20, false)
	wantErrno(t, "size over k*shard", err, syscall.EINVAL)
	// Servers that are not up are skipped; too few left is ErrNoSpace.
	for i := range 4 {
		if err := c.SetChunkserverState(ctx, ms.ServerID(fmt.Sprintf("cs%d", i)), ms.StateDraining); err != nil {
			t.Fatal(err)
		}
	}
	_, err = c.AllocChunk(ctx, 4, 2, 1<<20, 4<<20, false)
	if !errors.Is(err, ms.ErrNoSpace) || !strings.Contains(err.Error(), "5 eligible (0 full, 4 draining)") {
		t.Fatalf("alloc with 5 eligible servers: %v", err)
	}
	ch, err := c.AllocChunk(ctx, 4, 1, 1<<20, 4<<20, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range ch.Shards {
		if s.Server < "cs4" {
			t.Fatalf("placed on draining server %s", s.Server)
		}
	}
}

func TestPlacementWeightedByFreeSpace(t *testing.T) {
	ctx := context.Background()
	_, c, _ := newMem(t)
	// Two nearly full servers and two empty ones; one shard per chunk.
	for i, used := range []int64{0, 0, 9 * gib, 9 * gib} {
		_, err := c.Heartbeat(ctx, ms.Heartbeat{ID: ms.ServerID(fmt.Sprintf("cs%d", i)), Addr: "127.0.0.1:1", Capacity: 10 * gib, Used: used})
		if err != nil {
			t.Fatal(err)
		}
	}
	counts := map[ms.ServerID]int{}
	for range 400 {
		ch, err := c.AllocChunk(ctx, 1, 0, 1024, 1024, false)
		if err != nil {
			t.Fatal(err)
		}
		counts[ch.Shards[0].Server]++
	}
	empty, full := counts["cs0"]+counts["cs1"], counts["cs2"]+counts["cs3"]
	if empty < 5*full || full == 0 {
		t.Fatalf("free-space weighting: empty servers got %d, full ones %d", empty, full)
	}
}

func TestExtentsRefcountsAndDeletes(t *testing.T) {
	ctx := context.Background()
	_, c, clk := newMem(t)
	addServers(t, c, 6)
	f := mustCreate(t, c, ms.RootIno, "f", syscall.S_IFREG|0o644)
	c1, _ := c.AllocChunk(ctx, 4, 2, 1024, 4096, false)
	c2, _ := c.AllocChunk(ctx, 4, 2, 1024, 4096, false)
	sums := map[ms.ChunkID][]uint64{c1.ID: {1, 2, 3, 4, 5, 6}}
	clk.advance(time.Second)
	a, err := c.CommitExtents(ctx, f.Ino, []ms.Extent{{Off: 0, Len: 4096, Chunk: c1.ID}}, sums, 4096)
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != 4096 || a.Gen != 1 || a.Mtime != clk.t.UnixNano() {
		t.Fatalf("after commit: %+v", a)
	}
	got, _ := c.GetChunk(ctx, c1.ID)
	if !got.Committed || got.Refs != 1 || got.Lease != 0 || got.Shards[5].Sum != 6 {
		t.Fatalf("chunk after commit: %+v", got)
	}
	_, err = c.CommitExtents(ctx, f.Ino, nil, map[ms.ChunkID][]uint64{c1.ID: {1}}, 0)
	wantErrno(t, "wrong number of sums", err, syscall.EINVAL)
	_, err = c.CommitExtents(ctx, f.Ino, []ms.Extent{{Off: 0, Len: 5000, Chunk: c2.ID}}, nil, 5000)
	wantErrno(t, "extent past chunk", err, syscall.EINVAL)

	// Overwrite the middle: c1 splits in two (2 refs), c2 takes one.
	a, err = c.CommitExtents(ctx, f.Ino, []ms.Extent{{Off: 1000, Len: 1000, Chunk: c2.ID, ChunkOff: 0}}, nil, 2000)
	if err != nil {
		t.Fatal(err)
	}
	if a.Size != 4096 || a.Gen != 2 {
		t.Fatalf("size must not shrink on commit: %+v", a)
	}
	in, _ := c.GetInode(ctx, f.Ino)
	want := []ms.Extent{
		{Off: 0, Len: 1000, Chunk: c1.ID},
		{Off: 1000, Len: 1000, Chunk: c2.ID},
		{Off: 2000, Len: 2096, Chunk: c1.ID, ChunkOff: 2000},
	}
	if !slices.Equal(in.Extents, want) {
		t.Fatalf("extents = %+v\nwant %+v", in.Extents, want)
	}
	if ch, _ := c.GetChunk(ctx, c1.ID); ch.Refs != 2 {
		t.Fatalf("c1 refs = %d, want 2", ch.Refs)
	}
	// Truncate to 1500: the tail piece of c1 goes, c2 is cut.
	sz := uint64(1500)
	a, err = c.SetAttr(ctx, f.Ino, ms.SetAttrIn{Size: &sz})
	if err != nil || a.Size != 1500 || a.Gen != 3 {
		t.Fatalf("truncate: %+v %v", a, err)
	}
	in, _ = c.GetInode(ctx, f.Ino)
	want = []ms.Extent{{Off: 0, Len: 1000, Chunk: c1.ID}, {Off: 1000, Len: 500, Chunk: c2.ID}}
	if !slices.Equal(in.Extents, want) {
		t.Fatalf("extents after truncate = %+v", in.Extents)
	}
	if ch, _ := c.GetChunk(ctx, c1.ID); ch.Refs != 1 {
		t.Fatalf("c1 refs after truncate = %d", ch.Refs)
	}
	// Unlink: both chunks lose their last reference, deletes go to every
	// server holding a shard.
	if err := c.Unlink(ctx, ms.RootIno, "f"); err != nil {
		t.Fatal(err)
	}
	for _, id := range []ms.ChunkID{c1.ID, c2.ID} {
		if _, err := c.GetChunk(ctx, id); !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("chunk %d survived its last reference: %v", id, err)
		}
	}
	replies := heartbeatAll(t, c, 0, 1, 2, 3, 4, 5)
	var names []string
	for _, r := range replies {
		names = append(names, r.Deletes...)
	}
	slices.Sort(names)
	var wantNames []string
	for _, ch := range []ms.Chunk{c1, c2} {
		for i := range 6 {
			wantNames = append(wantNames, ms.ShardName(ch.ID, i))
		}
	}
	slices.Sort(wantNames)
	if !slices.Equal(names, wantNames) {
		t.Fatalf("deletes handed out = %v\nwant %v", names, wantNames)
	}
	// Handed out once.
	for _, r := range heartbeatAll(t, c, 0, 1, 2, 3, 4, 5) {
		if len(r.Deletes) != 0 {
			t.Fatalf("deletes handed out twice: %v", r.Deletes)
		}
	}
}

func TestUncommittedChunkLeaseExpires(t *testing.T) {
	ctx := context.Background()
	m, c, clk := newMem(t)
	addServers(t, c, 3)
	ch, err := c.AllocChunk(ctx, 1, 2, 1024, 1024, true)
	if err != nil {
		t.Fatal(err)
	}
	m.Tick(Config{})
	if _, err := c.GetChunk(ctx, ch.ID); err != nil {
		t.Fatalf("chunk collected before its lease: %v", err)
	}
	clk.advance(m.ChunkLease + time.Second)
	heartbeatAll(t, c, 0, 1, 2) // keep the servers up across the jump
	m.Tick(Config{})
	if _, err := c.GetChunk(ctx, ch.ID); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("expired uncommitted chunk kept: %v", err)
	}
	n := 0
	for _, r := range heartbeatAll(t, c, 0, 1, 2) {
		n += len(r.Deletes)
	}
	if n != 3 {
		t.Fatalf("%d deletes for an expired 3-copy chunk", n)
	}
}

// TestAbandonChunk: a writer gives back a chunk it could not store; the
// metaserver forgets it at once and its servers are told to delete its
// shards. A committed chunk is refused, a forgotten one is no error.
func TestAbandonChunk(t *testing.T) {
	ctx := context.Background()
	_, c, _ := newMem(t)
	addServers(t, c, 6)
	ch, err := c.AllocChunk(ctx, 4, 2, 1024, 4096, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AbandonChunk(ctx, ch.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetChunk(ctx, ch.ID); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("abandoned chunk still known: %v", err)
	}
	deletes := map[string]int{}
	for _, r := range heartbeatAll(t, c, 0, 1, 2, 3, 4, 5) {
		for _, name := range r.Deletes {
			deletes[name]++
		}
	}
	for _, s := range ch.Shards {
		if deletes[ms.ShardName(ch.ID, s.Index)] != 1 {
			t.Errorf("shard %d: %d deletes queued, want 1 (%v)", s.Index, deletes[ms.ShardName(ch.ID, s.Index)], deletes)
		}
	}
	if st, _ := c.Status(ctx); st.Degraded != 0 || st.Lost != 0 {
		t.Errorf("status after abandoning: %+v", st)
	}
	if err := c.AbandonChunk(ctx, ch.ID); err != nil {
		t.Errorf("abandoning twice: %v", err)
	}

	c2, committed := committedChunk(t)
	wantErrno(t, "committed chunk", c2.AbandonChunk(ctx, committed.ID), syscall.EBUSY)
	if _, err := c2.GetChunk(ctx, committed.ID); err != nil {
		t.Fatalf("committed chunk lost to an abandon: %v", err)
	}
}

func TestLivenessRepairAndDrain(t *testing.T) {
	ctx := context.Background()
	m, c, clk := newMem(t)
	addServers(t, c, 8)
	f := mustCreate(t, c, ms.RootIno, "f", syscall.S_IFREG|0o644)
	var chunks []ms.Chunk
	for range 10 {
		ch, err := c.AllocChunk(ctx, 4, 2, 1024, 4096, false)
		if err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, ch)
	}
	var exts []ms.Extent
	for i, ch := range chunks {
		exts = append(exts, ms.Extent{Off: uint64(i) * 4096, Len: 4096, Chunk: ch.ID})
	}
	if _, err := c.CommitExtents(ctx, f.Ino, exts, nil, 40960); err != nil {
		t.Fatal(err)
	}
	cfg := Config{SuspectAfter: 3 * time.Second, DownAfter: 30 * time.Second}
	alive := []int{0, 1, 2, 3, 4, 5, 6} // cs7 stops heartbeating
	stateOf := func(id string) string {
		css, _ := c.Chunkservers(ctx)
		for _, cs := range css {
			if string(cs.ID) == id {
				return cs.State
			}
		}
		return ""
	}
	clk.advance(4 * time.Second)
	heartbeatAll(t, c, alive...)
	m.Tick(cfg)
	if s := stateOf("cs7"); s != ms.StateSuspect {
		t.Fatalf("cs7 after 4s silence: %s", s)
	}
	// Suspect servers get no new shards.
	small := mustCreate(t, c, ms.RootIno, "small", syscall.S_IFREG|0o644)
	for i := range 20 {
		ch, _ := c.AllocChunk(ctx, 1, 0, 1, 1, false)
		if ch.Shards[0].Server == "cs7" {
			t.Fatal("placed a shard on a suspect server")
		}
		if _, err := c.CommitExtents(ctx, small.Ino, []ms.Extent{{Off: uint64(i), Len: 1, Chunk: ch.ID}}, nil, uint64(i+1)); err != nil {
			t.Fatal(err)
		}
	}
	clk.advance(30 * time.Second)
	heartbeatAll(t, c, alive...)
	m.Tick(cfg)
	if s := stateOf("cs7"); s != ms.StateDown {
		t.Fatalf("cs7 after 34s silence: %s", s)
	}
	st, _ := c.Status(ctx)
	onDown := 0
	for _, ch := range chunks {
		for _, s := range ch.Shards {
			if s.Server == "cs7" {
				onDown++
			}
		}
	}
	if onDown == 0 {
		t.Fatal("test setup: no shard on cs7")
	}
	if st.RepairsQueued != uint64(onDown) || st.Degraded != uint64(onDown) || st.Lost != 0 {
		t.Fatalf("status: %+v, %d shards on the down server", st, onDown)
	}
	// Repairs are handed out once, and again only after the repair timeout.
	countTasks := func() int {
		n := 0
		for _, r := range heartbeatAll(t, c, alive...) {
			n += len(r.Repairs)
		}
		return n
	}
	if n := countTasks(); n != onDown {
		t.Fatalf("%d repairs handed out, %d shards lost", n, onDown)
	}
	if n := countTasks(); n != 0 {
		t.Fatalf("%d repairs handed out twice before the timeout", n)
	}
	clk.advance(defaultRepairTimeout + time.Second)
	heartbeatAll(t, c, alive...)
	m.Tick(Config{SuspectAfter: time.Hour, DownAfter: 2 * time.Hour, RepairTimeout: defaultRepairTimeout})
	// Every repair goes to an up server not already holding the chunk.
	done := 0
	for id, r := range heartbeatAll(t, c, alive...) {
		for _, task := range r.Repairs {
			self := ms.ServerID(fmt.Sprintf("cs%d", id))
			for _, s := range task.Chunk.Shards {
				if s.Server == self {
					t.Fatalf("repair of chunk %d given to %s, which holds shard %d", task.Chunk.ID, self, s.Index)
				}
			}
			if task.Chunk.Shards[task.Index].Server != "cs7" {
				t.Fatalf("repair of a healthy shard: %+v", task)
			}
			if err := c.CompleteRepair(ctx, ms.RepairDone{Chunk: task.Chunk.ID, Index: task.Index, Server: self, Sum: 99}); err != nil {
				t.Fatal(err)
			}
			// Reporting it again is harmless; a late report from another
			// server is refused (it would put two shards on one server).
			if err := c.CompleteRepair(ctx, ms.RepairDone{Chunk: task.Chunk.ID, Index: task.Index, Server: self, Sum: 99}); err != nil {
				t.Fatalf("repeated completion: %v", err)
			}
			other := task.Chunk.Shards[(task.Index+1)%len(task.Chunk.Shards)].Server
			err := c.CompleteRepair(ctx, ms.RepairDone{Chunk: task.Chunk.ID, Index: task.Index, Server: other, Sum: 99})
			wantErrno(t, "stale repair", err, syscall.ESTALE)
			done++
		}
	}
	if done != onDown {
		t.Fatalf("%d repairs completed, %d needed", done, onDown)
	}
	st, _ = c.Status(ctx)
	if st.RepairsQueued != 0 || st.Degraded != 0 {
		t.Fatalf("status after repairs: %+v", st)
	}
	for _, ch := range chunks {
		got, _ := c.GetChunk(ctx, ch.ID)
		if !distinctServers(got) {
			t.Fatalf("two shards on one server after repair: %+v", got.Shards)
		}
	}
	// cs7 holds nothing any more: it can be removed.
	if err := c.SetChunkserverState(ctx, "cs7", ms.StateRemoved); err != nil {
		t.Fatal(err)
	}

	// Drain cs0: its shards move, then removal succeeds.
	wantErrno(t, "remove busy server", c.SetChunkserverState(ctx, "cs0", ms.StateRemoved), syscall.EBUSY)
	if err := c.SetChunkserverState(ctx, "cs0", ms.StateDraining); err != nil {
		t.Fatal(err)
	}
	drainedDeletes := 0
	for round := 0; round < 5; round++ {
		for id, r := range heartbeatAll(t, c, 0, 1, 2, 3, 4, 5, 6) {
			if id == 0 {
				drainedDeletes += len(r.Deletes)
			}
			for _, task := range r.Repairs {
				self := ms.ServerID(fmt.Sprintf("cs%d", id))
				if err := c.CompleteRepair(ctx, ms.RepairDone{Chunk: task.Chunk.ID, Index: task.Index, Server: self}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	css, _ := c.Chunkservers(ctx)
	for _, cs := range css {
		if cs.ID == "cs0" && cs.Shards != 0 {
			t.Fatalf("drained server still holds %d shards", cs.Shards)
		}
	}
	// The drained server is told to delete the moved shards.
	if drainedDeletes == 0 {
		t.Fatal("no deletes for the drained server")
	}
	if err := c.SetChunkserverState(ctx, "cs0", ms.StateRemoved); err != nil {
		t.Fatal(err)
	}
	_, err := c.Heartbeat(ctx, ms.Heartbeat{ID: "cs0", Addr: "127.0.0.1:9600"})
	wantErrno(t, "heartbeat of removed server", err, syscall.EPERM)
}

// committedChunk runs a metaserver with seven chunkservers and one file
// holding one committed 4+2 chunk.
func committedChunk(t *testing.T) (*ms.Client, ms.Chunk) {
	t.Helper()
	_, c, _ := newMem(t)
	addServers(t, c, 7)
	f := mustCreate(t, c, ms.RootIno, "f", syscall.S_IFREG|0o644)
	ch, _ := c.AllocChunk(context.Background(), 4, 2, 1024, 4096, false)
	if _, err := c.CommitExtents(context.Background(), f.Ino, []ms.Extent{{Len: 4096, Chunk: ch.ID}}, nil, 4096); err != nil {
		t.Fatal(err)
	}
	return c, ch
}

func TestReportBadShard(t *testing.T) {
	ctx := context.Background()
	c, ch := committedChunk(t)
	wantErrno(t, "bad index", c.ReportBadShard(ctx, ch.ID, 9, "x"), syscall.EINVAL)
	wantErrno(t, "bad chunk", c.ReportBadShard(ctx, 999, 0, "x"), syscall.ENOENT)
	if err := c.ReportBadShard(ctx, ch.ID, 3, "checksum mismatch"); err != nil {
		t.Fatal(err)
	}
	st, _ := c.Status(ctx)
	if st.RepairsQueued != 1 || st.Degraded != 1 {
		t.Fatalf("status: %+v", st)
	}
	var task *ms.RepairTask
	var target ms.ServerID
	for id, r := range heartbeatAll(t, c, 0, 1, 2, 3, 4, 5, 6) {
		for i := range r.Repairs {
			task, target = &r.Repairs[i], ms.ServerID(fmt.Sprintf("cs%d", id))
		}
	}
	if task == nil || task.Index != 3 {
		t.Fatalf("repair task = %+v", task)
	}
	old := ch.Shards[3].Server
	if err := c.CompleteRepair(ctx, ms.RepairDone{Chunk: ch.ID, Index: 3, Server: target, Sum: 7}); err != nil {
		t.Fatal(err)
	}
	got, _ := c.GetChunk(ctx, ch.ID)
	if got.Shards[3].Server != target || got.Shards[3].Sum != 7 {
		t.Fatalf("shard 3 after repair: %+v", got.Shards[3])
	}
	var oldID int
	fmt.Sscanf(string(old), "cs%d", &oldID)
	if r := heartbeatAll(t, c, oldID)[oldID]; !slices.Contains(r.Deletes, ms.ShardName(ch.ID, 3)) {
		t.Fatalf("old holder not told to delete the bad shard: %v", r.Deletes)
	}
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }
func (s *memSink) Close() error  { return nil }

func snapshotBytes(t *testing.T, f *FSM) []byte {
	t.Helper()
	s, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink memSink
	if err := s.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	return sink.Bytes()
}

func TestSnapshotRoundTripAndDeterminism(t *testing.T) {
	ctx := context.Background()
	build := func() *Memory {
		m := NewMemory()
		clk := &fakeClock{t: time.Unix(1_700_000_000, 0)}
		m.Now = clk.now
		c := m.API()
		// Request ids must match across the two builds.
		exec := func(op, id string, args any) {
			b, _ := json.Marshal(args)
			if _, err := m.Exec(ctx, op, id, b); err != nil {
				t.Fatalf("%s: %v", op, err)
			}
		}
		for i := range 6 {
			exec(ms.OpHeartbeat, fmt.Sprintf("hb%d", i), ms.Heartbeat{ID: ms.ServerID(fmt.Sprintf("cs%d", i)), Addr: "a", Capacity: gib, Labels: map[string]string{"zone": "z"}})
		}
		exec(ms.OpCreate, "c1", ms.CreateIn{Parent: 1, Name: "d", Mode: syscall.S_IFDIR | 0o755})
		exec(ms.OpCreate, "c2", ms.CreateIn{Parent: 2, Name: "f", Mode: syscall.S_IFREG | 0o644, Xattrs: map[string][]byte{"user.k": []byte("v")}})
		exec(ms.OpKVTxn, "k1", ms.KVTxnArgs{Ops: []ms.KVOp{{Bucket: "b", Key: "k", Value: []byte("v")}}})
		_ = c
		return m
	}
	m1, m2 := build(), build()
	// Placement uses the command's seed: give both the same allocation.
	for _, m := range []*Memory{m1, m2} {
		m.fsm.apply(&command{Type: ms.OpAllocChunk, ReqID: "a1", Time: 5, Seed: 42, Lease: 10, Payload: []byte(`{"k":4,"m":2,"shardSize":10,"size":40}`)}, 0)
	}
	b1, b2 := snapshotBytes(t, m1.fsm), snapshotBytes(t, m2.fsm)
	if !bytes.Equal(b1, b2) {
		t.Fatal("two replicas fed the same commands produced different snapshots")
	}
	restored := NewFSM()
	if err := restored.Restore(io.NopCloser(bytes.NewReader(b1))); err != nil {
		t.Fatal(err)
	}
	if b3 := snapshotBytes(t, restored); !bytes.Equal(b1, b3) {
		t.Fatal("restore then snapshot differs from the original snapshot")
	}
	rc := NewMemory()
	rc.fsm = restored
	c := rc.API()
	a, err := c.ResolvePath(ctx, "/d/f")
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := c.GetXattr(ctx, a.Ino, "user.k"); string(v) != "v" {
		t.Fatalf("xattr after restore = %q", v)
	}
	if v, ok, _ := c.KVGet(ctx, "b", "k"); !ok || string(v) != "v" {
		t.Fatalf("kv after restore = %q %v", v, ok)
	}
	// The dedup table survives too: replaying c2 returns the old answer.
	r, err := rc.Exec(ctx, ms.OpCreate, "c2", []byte(`{"parent":2,"name":"f","mode":33188,"exclusive":true}`))
	if err != nil || !bytes.Contains(r, []byte(fmt.Sprintf(`"ino":%d`, a.Ino))) {
		t.Fatalf("replayed create after restore: %s %v", r, err)
	}
	// New inodes continue the counter.
	g := mustCreate(t, c, ms.RootIno, "g", syscall.S_IFREG)
	if g.Ino != a.Ino+1 {
		t.Fatalf("ino counter after restore: %d, want %d", g.Ino, a.Ino+1)
	}
}

// TestRepairTargetsNeverDoubleUpAServer: two shards of one chunk go bad while
// a single server outside the chunk could take them. Both jobs aim at it;
// once the first completes there, the second must not be handed to it, or
// one server would end up holding two shards of the chunk.
func TestRepairTargetsNeverDoubleUpAServer(t *testing.T) {
	ctx := context.Background()
	_, c, _ := newMem(t)
	addServers(t, c, 7)
	f := mustCreate(t, c, ms.RootIno, "f", syscall.S_IFREG|0o644)
	ch, err := c.AllocChunk(ctx, 4, 2, 1024, 4096, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.CommitExtents(ctx, f.Ino, []ms.Extent{{Len: 4096, Chunk: ch.ID}}, nil, 4096); err != nil {
		t.Fatal(err)
	}
	spare := ""
	for i := range 7 {
		id := fmt.Sprintf("cs%d", i)
		if !slices.ContainsFunc(ch.Shards, func(s ms.Shard) bool { return string(s.Server) == id }) {
			spare = id
		}
	}
	for _, idx := range []int{0, 1} {
		if err := c.ReportBadShard(ctx, ch.ID, idx, "checksum mismatch"); err != nil {
			t.Fatal(err)
		}
	}
	var spareID int
	fmt.Sscanf(spare, "cs%d", &spareID)
	tasks := heartbeatAll(t, c, spareID)[spareID].Repairs
	if len(tasks) == 0 {
		t.Fatalf("the spare %s got no repair", spare)
	}
	first := tasks[0]
	if err := c.CompleteRepair(ctx, ms.RepairDone{Chunk: ch.ID, Index: first.Index, Server: ms.ServerID(spare), Sum: 1}); err != nil {
		t.Fatal(err)
	}
	// The other bad shard must be handed out again at once, to a server
	// other than the spare (now holding a shard of the chunk), rather than
	// wait for the spare's doomed attempt to time out.
	other := 1 - first.Index
	handed := false
	for id, r := range heartbeatAll(t, c, 0, 1, 2, 3, 4, 5, 6) {
		for _, task := range r.Repairs {
			if task.Index == other {
				handed = true
				if id == spareID {
					t.Fatalf("shard %d handed to the spare, which already holds shard %d", other, first.Index)
				}
			}
		}
	}
	if !handed {
		t.Fatalf("shard %d was not handed out again after shard %d completed on the spare", other, first.Index)
	}
	for id, r := range heartbeatAll(t, c, 0, 1, 2, 3, 4, 5, 6) {
		for _, task := range r.Repairs {
			holder := ms.ServerID(fmt.Sprintf("cs%d", id))
			got, _ := c.GetChunk(ctx, task.Chunk.ID)
			for i, s := range got.Shards {
				if s.Server == holder && i != task.Index {
					t.Fatalf("%s was handed shard %d of chunk %d while holding shard %d", holder, task.Index, task.Chunk.ID, i)
				}
			}
		}
	}
	got, _ := c.GetChunk(ctx, ch.ID)
	if !distinctServers(got) {
		t.Fatalf("two shards on one server: %+v", got.Shards)
	}
}

func TestCommandCodecRoundTrip(t *testing.T) {
	in := command{Type: ms.OpAllocChunk, ReqID: "abc-1", Time: -5, Seed: 1 << 63, Lease: 99, Payload: []byte(`{"k":1}`)}
	var out command
	if err := decodeCommand(encodeCommand(&in), &out); err != nil {
		t.Fatal(err)
	}
	if out.Type != in.Type || out.ReqID != in.ReqID || out.Time != in.Time || out.Seed != in.Seed ||
		out.Lease != in.Lease || string(out.Payload) != string(in.Payload) {
		t.Fatalf("round trip: %+v", out)
	}
	enc := encodeCommand(&in)
	for _, bad := range [][]byte{nil, {9}, enc[:3], enc[:len(enc)-len(in.Payload)-1]} {
		if err := decodeCommand(bad, &out); err == nil {
			t.Fatalf("decoded a damaged entry %v", bad)
		}
	}
}

func TestLivenessCountsSilenceFromTheFloor(t *testing.T) {
	f := NewFSM()
	f.servers["a"] = &ms.ChunkserverInfo{ID: "a", State: ms.StateUp, LastHeartbeat: 0}
	sec := int64(time.Second)
	// Silent for 100 s, but the leader took over 2 s ago: nothing yet.
	if ch := f.livenessChanges(100*sec, 3*sec, 30*sec, 98*sec); len(ch) != 0 {
		t.Fatalf("changes right after a takeover: %+v", ch)
	}
	if ch := f.livenessChanges(102*sec, 3*sec, 30*sec, 98*sec); len(ch) != 1 || ch[0].State != ms.StateSuspect {
		t.Fatalf("changes 4 s after the takeover: %+v", ch)
	}
	if ch := f.livenessChanges(129*sec, 3*sec, 30*sec, 98*sec); len(ch) != 1 || ch[0].State != ms.StateDown {
		t.Fatalf("changes 31 s after the takeover: %+v", ch)
	}
}

func TestStrayShards(t *testing.T) {
	ctx := context.Background()
	c, ch := committedChunk(t)
	holder := ch.Shards[2].Server
	held := ms.ShardName(ch.ID, 2)
	other := ms.ShardName(ch.ID, 3) // placed on another server
	names := []string{held, other, ms.ShardName(999, 0), ms.ShardName(ch.ID, 9), "not-a-shard", "000000000000000x.1", ms.ShardName(ch.ID, 2) + "0"}
	stray, err := c.StrayShards(ctx, holder, names)
	if err != nil {
		t.Fatal(err)
	}
	if want := names[1:]; !slices.Equal(stray, want) {
		t.Errorf("strays of %s = %v, want %v", holder, stray, want)
	}
	// A shard being rebuilt on a server is not a stray there, before and
	// after the repair completes.
	if err := c.ReportBadShard(ctx, ch.ID, 3, "checksum mismatch"); err != nil {
		t.Fatal(err)
	}
	var target ms.ServerID
	for id, r := range heartbeatAll(t, c, 0, 1, 2, 3, 4, 5, 6) {
		if len(r.Repairs) > 0 {
			target = ms.ServerID(fmt.Sprintf("cs%d", id))
		}
	}
	if target == "" {
		t.Fatal("no repair handed out")
	}
	for _, when := range []string{"during", "after"} {
		if stray, err := c.StrayShards(ctx, target, []string{other}); err != nil || len(stray) != 0 {
			t.Errorf("%s the repair: the rebuilt copy on %s is a stray (%v, %v)", when, target, stray, err)
		}
		if when == "during" {
			if err := c.CompleteRepair(ctx, ms.RepairDone{Chunk: ch.ID, Index: 3, Server: target, Sum: 7}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if stray, _ := c.StrayShards(ctx, ch.Shards[3].Server, []string{other}); len(stray) != 1 {
		t.Errorf("the replaced copy on %s is not a stray: %v", ch.Shards[3].Server, stray)
	}
}
