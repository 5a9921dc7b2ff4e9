package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/reedsolomon"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/metaserver"
)

// stripe is one erasure-coded chunk spread over running chunkservers, laid out
// the way the fs client writes it: data zero-padded to K*ShardSize, split
// contiguously, parity from reedsolomon.
type stripe struct {
	chunk  metaserver.Chunk
	shards [][]byte
	stores []*store.Memory
}

func writeStripe(t *testing.T, id metaserver.ChunkID, k, m int, size int, servers []*server.Server, stores []*store.Memory) stripe {
	t.Helper()
	enc, err := reedsolomon.New(k, m)
	if err != nil {
		t.Fatal(err)
	}
	shardSize := (size + k - 1) / k
	padded := make([]byte, k*shardSize)
	copy(padded, randBytes(uint64(id), size))
	shards := make([][]byte, k+m)
	for i := range k {
		shards[i] = padded[i*shardSize : (i+1)*shardSize]
	}
	for i := k; i < k+m; i++ {
		shards[i] = make([]byte, shardSize)
	}
	if err := enc.Encode(shards); err != nil {
		t.Fatal(err)
	}
	c := metaserver.Chunk{ID: id, K: k, M: m, Size: int64(size), ShardSize: int64(shardSize), Committed: true}
	client := chunkserver.NewClient(nil)
	for i, sh := range shards {
		sum, err := client.Put(context.Background(), servers[i].Addr(), metaserver.ShardName(id, i), sh)
		if err != nil {
			t.Fatal(err)
		}
		c.Shards = append(c.Shards, metaserver.Shard{Index: i, Server: servers[i].ID(), Addr: servers[i].Addr(), Sum: sum})
	}
	return stripe{chunk: c, shards: shards, stores: stores[:k+m]}
}

// cluster starts n chunkservers over memory stores, all reporting to meta.
func cluster(t *testing.T, n int, meta *fakeMeta) ([]*server.Server, []*store.Memory) {
	var servers []*server.Server
	var stores []*store.Memory
	for i := range n {
		s, m := memServer(t, fmt.Sprintf("cs-%d", i), meta)
		servers = append(servers, s)
		stores = append(stores, m)
	}
	return servers, stores
}

func readLocal(t *testing.T, m *store.Memory, name string) []byte {
	t.Helper()
	info, err := m.Stat(name)
	if err != nil {
		t.Fatalf("Stat(%s): %v", name, err)
	}
	p := make([]byte, info.Size)
	if _, err := m.ReadAt(name, p, 0); err != nil {
		t.Fatalf("ReadAt(%s): %v", name, err)
	}
	return p
}

// TestRepair4x2 rebuilds each lost shard of a 4+2 stripe, data and parity, on
// a seventh server, with one of the surviving sources corrupt as well.
func TestRepair4x2(t *testing.T) {
	meta := &fakeMeta{}
	servers, stores := cluster(t, 7, nil)
	spare := startServer(t, server.Config{Store: stores[6], ID: "cs-spare", Cluster: meta, Chunks: meta})
	for _, lost := range []int{0, 2, 4, 5} {
		t.Run(fmt.Sprint("shard", lost), func(t *testing.T) {
			st := writeStripe(t, metaserver.ChunkID(100+lost), 4, 2, 4<<20-12345, servers, stores)
			name := metaserver.ShardName(st.chunk.ID, lost)
			if err := st.stores[lost].Delete(name); err != nil {
				t.Fatal(err)
			}
			// A second source is silently corrupt: its checksum catches it
			// and the repair uses the remaining four.
			bad := (lost + 1) % 6
			if err := st.stores[bad].FlipByte(metaserver.ShardName(st.chunk.ID, bad), 1000); err != nil {
				t.Fatal(err)
			}
			sum, err := spare.Repair(context.Background(), metaserver.RepairTask{Chunk: st.chunk, Index: lost})
			if err != nil {
				t.Fatalf("Repair: %v", err)
			}
			if got := readLocal(t, stores[6], name); !bytes.Equal(got, st.shards[lost]) {
				t.Errorf("rebuilt shard %d differs from the original", lost)
			}
			if sum != chunkserver.Sum(st.shards[lost]) {
				t.Errorf("Repair sum %016x, want %016x", sum, chunkserver.Sum(st.shards[lost]))
			}
			_, repaired, _ := meta.snapshot()
			want := metaserver.RepairDone{Chunk: st.chunk.ID, Index: lost, Server: "cs-spare", Sum: sum}
			if !slices.Contains(repaired, want) {
				t.Errorf("CompleteRepair calls %+v lack %+v", repaired, want)
			}
		})
	}
}

func TestRepairWithoutRecordedSums(t *testing.T) {
	meta := &fakeMeta{}
	servers, stores := cluster(t, 7, nil)
	spare := startServer(t, server.Config{Store: stores[6], ID: "cs-spare", Cluster: meta})
	st := writeStripe(t, 7, 4, 2, 1<<20, servers, stores)
	for i := range st.chunk.Shards {
		st.chunk.Shards[i].Sum = 0
	}
	if _, err := spare.Repair(context.Background(), metaserver.RepairTask{Chunk: st.chunk, Index: 3}); err != nil {
		t.Fatalf("Repair: %v", err)
	}
	if got := readLocal(t, stores[6], metaserver.ShardName(7, 3)); !bytes.Equal(got, st.shards[3]) {
		t.Error("rebuilt shard differs from the original")
	}
	// A source that lies (bad bytes under a valid block checksum, as a buggy
	// writer would leave) is caught by the stripe check.
	lie := slices.Clone(st.shards[1])
	lie[10] ^= 1
	if _, err := stores[1].Put(metaserver.ShardName(7, 1), lie); err != nil {
		t.Fatal(err)
	}
	_, err := spare.Repair(context.Background(), metaserver.RepairTask{Chunk: st.chunk, Index: 3})
	if !errors.Is(err, server.ErrRebuiltMismatch) {
		t.Errorf("Repair from inconsistent shards = %v, want ErrRebuiltMismatch", err)
	}
}

func TestRepairTooFewShards(t *testing.T) {
	meta := &fakeMeta{}
	servers, stores := cluster(t, 7, nil)
	spare := startServer(t, server.Config{Store: stores[6], ID: "cs-spare", Cluster: meta})
	st := writeStripe(t, 9, 4, 2, 100000, servers, stores)
	for _, i := range []int{0, 3, 5} {
		if err := st.stores[i].Delete(metaserver.ShardName(9, i)); err != nil {
			t.Fatal(err)
		}
	}
	_, err := spare.Repair(context.Background(), metaserver.RepairTask{Chunk: st.chunk, Index: 0})
	if !errors.Is(err, server.ErrTooFewShards) || !errors.Is(err, chunkserver.ErrNotFound) {
		t.Errorf("Repair with 3 of 6 shards = %v, want ErrTooFewShards naming the missing shards", err)
	}
	if _, err := stores[6].Stat(metaserver.ShardName(9, 0)); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("failed repair stored something: %v", err)
	}
	_, repaired, _ := meta.snapshot()
	if len(repaired) != 0 {
		t.Errorf("failed repair reported completion: %+v", repaired)
	}
}

func TestRepairRejectsBadTasks(t *testing.T) {
	meta := &fakeMeta{}
	s, _ := memServer(t, "cs-x", meta)
	good := metaserver.Chunk{ID: 1, K: 4, M: 2, ShardSize: 1 << 20}
	for _, task := range []metaserver.RepairTask{
		{Chunk: good, Index: 6},
		{Chunk: good, Index: -1},
		{Chunk: metaserver.Chunk{ID: 1, K: 0, M: 2, ShardSize: 1}, Index: 0},
		{Chunk: metaserver.Chunk{ID: 1, K: 4, M: 2, ShardSize: 1 << 40}, Index: 0},
		{Chunk: metaserver.Chunk{ID: 1, K: 2, M: 1, ShardSize: 1, Replicated: true}, Index: 0},
		// Rebuilding shard 1 here would put two shards of the chunk on one server.
		{Chunk: metaserver.Chunk{ID: 1, K: 1, M: 1, ShardSize: 1, Shards: []metaserver.Shard{{Index: 0, Server: "cs-x"}}}, Index: 1},
	} {
		if _, err := s.Repair(context.Background(), task); !errors.Is(err, server.ErrBadTask) {
			t.Errorf("Repair(%+v) = %v, want ErrBadTask", task, err)
		}
	}
}

func TestRepairReplicated(t *testing.T) {
	meta := &fakeMeta{}
	servers, stores := cluster(t, 4, nil)
	spare := startServer(t, server.Config{Store: stores[3], ID: "cs-spare", Cluster: meta})
	data := randBytes(11, 5000)
	c := metaserver.Chunk{ID: 11, K: 1, M: 2, Size: 5000, ShardSize: 5000, Replicated: true}
	client := chunkserver.NewClient(nil)
	for i := range 3 {
		sum, err := client.Put(context.Background(), servers[i].Addr(), metaserver.ShardName(11, i), data)
		if err != nil {
			t.Fatal(err)
		}
		c.Shards = append(c.Shards, metaserver.Shard{Index: i, Server: servers[i].ID(), Addr: servers[i].Addr(), Sum: sum})
	}
	// Replica 1 is lost, replica 0 is corrupt: the copy comes from replica 2.
	if err := stores[1].Delete(metaserver.ShardName(11, 1)); err != nil {
		t.Fatal(err)
	}
	if err := stores[0].FlipByte(metaserver.ShardName(11, 0), 4999); err != nil {
		t.Fatal(err)
	}
	if _, err := spare.Repair(context.Background(), metaserver.RepairTask{Chunk: c, Index: 1}); err != nil {
		t.Fatalf("Repair: %v", err)
	}
	if got := readLocal(t, stores[3], metaserver.ShardName(11, 1)); !bytes.Equal(got, data) {
		t.Error("copied replica differs")
	}
}

// TestHeartbeatLoop checks what the server reports and that it carries out
// the deletes and repairs handed back.
func TestHeartbeatLoop(t *testing.T) {
	meta := &fakeMeta{}
	servers, stores := cluster(t, 6, nil)
	st := writeStripe(t, 21, 4, 2, 1<<20, servers, stores)

	d, err := store.OpenDisk(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	s := startServer(t, server.Config{
		Store: d, ID: "cs-hb", Cluster: meta, Chunks: meta,
		Labels: map[string]string{"zone": "a"}, HeartbeatInterval: 10 * time.Millisecond,
	})
	garbage := "00000000000000aa.0"
	if _, err := d.Put(garbage, []byte("orphan")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a heartbeat counting the shard", func() bool {
		hbs, _, _ := meta.snapshot()
		return len(hbs) > 0 && hbs[len(hbs)-1].Shards == 1
	})
	hbs, _, _ := meta.snapshot()
	hb := hbs[len(hbs)-1]
	if hb.ID != "cs-hb" || hb.Addr != s.Addr() || hb.Labels["zone"] != "a" || hb.Used <= 0 || hb.Capacity < hb.Used {
		t.Errorf("heartbeat = %+v", hb)
	}

	meta.queue(metaserver.HeartbeatReply{
		Deletes: []string{garbage, "00000000000000ab.0"}, // the second is already gone
		Repairs: []metaserver.RepairTask{{Chunk: st.chunk, Index: 4}},
	})
	waitFor(t, "the repair to complete", func() bool {
		_, repaired, _ := meta.snapshot()
		return len(repaired) == 1
	})
	_, repaired, _ := meta.snapshot()
	if r := repaired[0]; r.Chunk != 21 || r.Index != 4 || r.Server != "cs-hb" || r.Sum != chunkserver.Sum(st.shards[4]) {
		t.Errorf("CompleteRepair(%+v)", r)
	}
	if _, err := d.Stat(garbage); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("shard the metaserver deleted still there: %v", err)
	}
	waitFor(t, "a heartbeat counting only the rebuilt shard", func() bool {
		hbs, _, _ := meta.snapshot()
		return hbs[len(hbs)-1].Shards == 1 && hbs[len(hbs)-1].Used > 1<<18
	})
}

func TestScrubReportsCorruptShard(t *testing.T) {
	meta := &fakeMeta{}
	d, err := store.OpenDisk(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	for i := range 5 {
		if _, err := d.Put(metaserver.ShardName(metaserver.ChunkID(0x500+i), i), randBytes(uint64(i), 300<<10)); err != nil {
			t.Fatal(err)
		}
	}
	bad := metaserver.ShardName(0x503, 3)
	flipOnDisk(t, d.Path(bad), 200<<10)

	s := startServer(t, server.Config{
		Store: d, ID: "cs-scrub", Chunks: meta,
		ScrubRate: 1 << 30, ScrubPause: 10 * time.Millisecond,
	})
	waitFor(t, "the scrubber to report the corrupt shard", func() bool {
		_, _, reports := meta.snapshot()
		return len(reports) > 0
	})
	_, _, reports := meta.snapshot()
	for _, r := range reports {
		if r != bad {
			t.Errorf("scrub reported %s, only %s is corrupt", r, bad)
		}
	}
	// The pass goes on past the bad shard and is counted in the metrics.
	waitFor(t, "a complete scrub pass in /metrics", func() bool {
		resp, err := http.Get("http://" + s.Addr() + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		// (The progress ratio is 1 only between passes, 10ms here: too
		// short a window to poll for.)
		return !strings.Contains(string(body), "dockyard_chunkserver_scrub_passes_total 0\n") &&
			!strings.Contains(string(body), "dockyard_chunkserver_corrupt_total 0\n")
	})
}

// flakyMeta fails the first heartbeats, as a metaserver without a leader does.
type flakyMeta struct {
	fakeMeta
	failures atomic.Int32
}

func (f *flakyMeta) Heartbeat(ctx context.Context, hb metaserver.Heartbeat) (metaserver.HeartbeatReply, error) {
	if f.failures.Add(-1) >= 0 {
		return metaserver.HeartbeatReply{}, &metaserver.ErrNotLeader{}
	}
	return f.fakeMeta.Heartbeat(ctx, hb)
}

func TestHeartbeatRetriesAfterFailures(t *testing.T) {
	meta := &flakyMeta{}
	meta.failures.Store(3)
	s := startServer(t, server.Config{
		Store: store.NewMemory(0), ID: "cs-flaky", Cluster: meta, HeartbeatInterval: 10 * time.Millisecond,
	})
	waitFor(t, "a heartbeat to get through", func() bool {
		hbs, _, _ := meta.snapshot()
		return len(hbs) > 0
	})
	resp, err := http.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "dockyard_chunkserver_heartbeat_errors_total 3\n") {
		t.Errorf("heartbeat failures not counted:\n%s", body)
	}
}

// TestRestartKeepsShards stops a disk-backed server and starts another on the
// same directory: same ID, same shards, readable over HTTP.
func TestRestartKeepsShards(t *testing.T) {
	dir := t.TempDir()
	c := chunkserver.NewClient(nil)
	ctx := context.Background()
	s1, err := server.New(server.Config{DataDir: dir, ScrubRate: -1, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s1.Start(ctx); err != nil {
		t.Fatal(err)
	}
	data := randBytes(3, 700<<10)
	if _, err := c.Put(ctx, s1.Addr(), "00000000000000c1.2", data); err != nil {
		t.Fatal(err)
	}
	id := s1.ID()
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := startServer(t, server.Config{DataDir: dir})
	if s2.ID() != id {
		t.Errorf("ID changed across restart: %s -> %s", id, s2.ID())
	}
	p := make([]byte, len(data))
	if _, err := c.ReadAt(ctx, s2.Addr(), "00000000000000c1.2", p, 0); err != nil || !bytes.Equal(p, data) {
		t.Errorf("shard after restart: %v (equal %v)", err, bytes.Equal(p, data))
	}
}

// TestStrayShardsNeedTwoPasses: a shard the metaserver places nowhere here is
// deleted only when two passes in a row report it, and only it.
func TestStrayShardsNeedTwoPasses(t *testing.T) {
	meta := &fakeMeta{
		strays:       map[string]bool{"00000000000000b0.1": true},
		strayCalls:   make(chan []string),
		strayRelease: make(chan struct{}),
	}
	s := startServer(t, server.Config{Store: store.NewMemory(0), ID: "cs-strays", Cluster: meta, Chunks: meta,
		StrayInterval: 10 * time.Millisecond})
	c := chunkserver.NewClient(nil)
	for _, name := range []string{"00000000000000a0.0", "00000000000000b0.1"} {
		if _, err := c.Put(context.Background(), s.Addr(), name, []byte(name)); err != nil {
			t.Fatal(err)
		}
	}
	exists := func(name string) bool {
		_, err := c.Stat(context.Background(), s.Addr(), name)
		return err == nil
	}
	pass := func() []string {
		t.Helper()
		select {
		case names := <-meta.strayCalls:
			return names
		case <-time.After(10 * time.Second):
			t.Fatal("no stray pass")
			return nil
		}
	}
	if names := pass(); len(names) != 2 {
		t.Fatalf("the pass asked about %v, want both shards", names)
	}
	meta.strayRelease <- struct{}{}
	pass() // the first pass is done once the second asks
	if !exists("00000000000000b0.1") {
		t.Fatal("a shard reported stray once was deleted")
	}
	// A pass the metaserver cannot answer deletes nothing.
	meta.mu.Lock()
	meta.strayErr = errors.New("metaserver unreachable")
	meta.mu.Unlock()
	meta.strayRelease <- struct{}{}
	pass()
	if !exists("00000000000000b0.1") {
		t.Fatal("a failed pass deleted a shard")
	}
	meta.mu.Lock()
	meta.strayErr = nil
	meta.mu.Unlock()
	meta.strayRelease <- struct{}{}
	pass()
	if exists("00000000000000b0.1") {
		t.Error("a shard reported stray twice in a row is still there")
	}
	if !exists("00000000000000a0.0") {
		t.Error("a shard never reported stray was deleted")
	}
	if got := metricValue(t, s, "dockyard_chunkserver_stray_deletes_total"); got != "1" {
		t.Errorf("stray deletes counted %s, want 1", got)
	}
	meta.strayRelease <- struct{}{}
}
