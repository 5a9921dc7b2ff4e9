package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	csserver "github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/metaserver"
	msserver "github.com/dockyard/dockyard/metaserver/server"
)

// These tests run the data path against the real pieces: an in-process
// metaserver (the FSM without Raft) and real chunkservers with disk stores,
// heartbeating and repairing.

// recordingMeta forwards to the real metaserver and records bad-shard
// reports, so a test can see the client made them.
type recordingMeta struct {
	*metaserver.Client
	reports chan string
}

func (r *recordingMeta) ReportBadShard(ctx context.Context, id metaserver.ChunkID, index int, reason string) error {
	select {
	case r.reports <- fmt.Sprintf("%s %s", metaserver.ShardName(id, index), reason):
	default:
	}
	return r.Client.ReportBadShard(ctx, id, index, reason)
}

type realCluster struct {
	t       *testing.T
	hc      *http.Client
	meta    *recordingMeta
	servers []*csserver.Server
}

// newRealCluster starts n chunkservers on disk stores (capacity bytes each, 0
// for the disk's room), or on memory stores when capacity is negative.
func newRealCluster(t *testing.T, n int, capacity int64) *realCluster {
	t.Helper()
	return startChunkservers(t, &realCluster{t: t}, msserver.NewMemory().API(), n, capacity)
}

// newRaftCluster is newRealCluster with a single-node Raft metaserver
// reached over its HTTP API, as `dockyard serve` runs it: errors and
// retries cross the wire, and the leader's own loop hands out repairs.
func newRaftCluster(t *testing.T, n int, capacity int64) *realCluster {
	t.Helper()
	node, err := msserver.Start(msserver.Config{
		ID: "m1", DataDir: t.TempDir(), APIAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
		MaintainInterval: 50 * time.Millisecond, NoSync: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { node.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := node.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	api, err := metaserver.NewClient([]string{node.APIAddr()})
	if err != nil {
		t.Fatal(err)
	}
	return startChunkservers(t, &realCluster{t: t}, api, n, capacity)
}

func startChunkservers(t *testing.T, rc *realCluster, api *metaserver.Client, n int, capacity int64) *realCluster {
	t.Helper()
	rc.meta = &recordingMeta{Client: api, reports: make(chan string, 64)}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for i := range n {
		cfg := csserver.Config{
			Capacity:          capacity,
			Cluster:           api,
			Chunks:            api,
			HeartbeatInterval: 50 * time.Millisecond,
			ScrubRate:         -1,
			Logger:            discardLogger(),
		}
		if capacity < 0 {
			cfg.Store, cfg.ID, cfg.Capacity = store.NewMemory(0), metaserver.ServerID(fmt.Sprintf("mem%d", i)), 0
		} else {
			cfg.DataDir = t.TempDir()
		}
		s, err := csserver.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		rc.servers = append(rc.servers, s)
	}
	// One HTTP client for every fs client of the test, whose idle
	// connections are closed before the servers shut down: a server's
	// graceful shutdown waits seconds for connections that never sent a
	// request.
	rc.hc = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	t.Cleanup(rc.hc.CloseIdleConnections)
	waitFor(t, "chunkservers to register", func() bool {
		cs, err := api.Chunkservers(context.Background())
		up := 0
		for _, c := range cs {
			if c.State == metaserver.StateUp {
				up++
			}
		}
		return err == nil && up == n
	})
	return rc
}

func (rc *realCluster) client(opt Options) *Client {
	if opt.Logger == nil {
		opt.Logger = discardLogger()
	}
	return New(rc.meta, chunkserver.NewClient(rc.hc), opt)
}

// kill stops the chunkserver at addr. The test's idle connections go first:
// a graceful shutdown waits seconds for connections that never sent a
// request.
func (rc *realCluster) kill(addr string) {
	rc.hc.CloseIdleConnections()
	rc.server(addr).Close()
}

func (rc *realCluster) server(addr string) *csserver.Server {
	for _, s := range rc.servers {
		if s.Addr() == addr {
			return s
		}
	}
	rc.t.Fatalf("no chunkserver at %s", addr)
	return nil
}

func (rc *realCluster) chunksOf(p string) []metaserver.Chunk {
	rc.t.Helper()
	ctx := context.Background()
	a, err := rc.meta.ResolvePath(ctx, p)
	if err != nil {
		rc.t.Fatal(err)
	}
	in, err := rc.meta.GetInode(ctx, a.Ino)
	if err != nil {
		rc.t.Fatal(err)
	}
	var out []metaserver.Chunk
	for _, e := range in.Extents {
		ch, err := rc.meta.GetChunk(ctx, e.Chunk)
		if err != nil {
			rc.t.Fatal(err)
		}
		out = append(out, ch)
	}
	return out
}

func TestRealRoundTrip(t *testing.T) {
	for _, g := range []struct{ k, m int }{{4, 2}, {2, 1}, {6, 3}} {
		t.Run(fmt.Sprintf("%d+%d", g.k, g.m), func(t *testing.T) {
			// 4+2, the default, runs on disk stores; the others on memory.
			capacity := int64(-1)
			if g.k == 4 {
				capacity = 0
			}
			rc := newRealCluster(t, g.k+g.m+1, capacity)
			opt := Options{ChunkSize: testChunk, K: g.k, M: g.m}
			c := rc.client(opt)
			shard := int(shardSizeFor(testChunk, g.k))
			for i, size := range []int{0, 1, shard - 1, shard, testChunk - 1, testChunk, testChunk + 1, 3*testChunk + 4321} {
				want := randBytes(uint64(100+i), size)
				p := fmt.Sprintf("/f%d", i)
				if _, err := c.WriteFile(context.Background(), p, bytes.NewReader(want), 0o644); err != nil {
					t.Fatalf("write %d bytes: %v", size, err)
				}
				if got := readAll(t, rc.client(opt), p); !bytes.Equal(got, want) {
					t.Fatalf("size %d: read back differs at %d", size, firstDiff(got, want))
				}
			}
			for _, ch := range rc.chunksOf("/f7") {
				if !ch.Committed || ch.Refs != 1 {
					t.Fatalf("chunk %+v not committed with one ref", ch)
				}
			}
		})
	}
}

func TestRealKillTwoThenThree(t *testing.T) {
	opt := Options{ChunkSize: testChunk}
	rc := newRealCluster(t, 7, 0)
	want := randBytes(5, 5*testChunk+77)
	if _, err := rc.client(opt).WriteFile(context.Background(), "/f", bytes.NewReader(want), 0o644); err != nil {
		t.Fatal(err)
	}
	// Kill two servers that hold shards of the first chunk (the worst case
	// for it), then a third.
	first := rc.chunksOf("/f")[0]
	for _, s := range first.Shards[:2] {
		rc.kill(s.Addr)
	}
	if got := readAll(t, rc.client(opt), "/f"); !bytes.Equal(got, want) {
		t.Fatalf("2 of 7 down: read back differs at %d", firstDiff(got, want))
	}
	rc.kill(first.Shards[2].Addr)
	f, err := rc.client(opt).OpenPath(context.Background(), "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	_, err = f.ReadAt(make([]byte, 1000), 0)
	if !errors.Is(err, ErrUnreadable) {
		t.Fatalf("3 down: read gave %v, want ErrUnreadable", err)
	}
}

func TestRealCorruptShardOnDisk(t *testing.T) {
	opt := Options{ChunkSize: testChunk}
	rc := newRaftCluster(t, 7, 0)
	want := randBytes(6, 2*testChunk)
	if _, err := rc.client(opt).WriteFile(context.Background(), "/f", bytes.NewReader(want), 0o644); err != nil {
		t.Fatal(err)
	}
	ch := rc.chunksOf("/f")[0]
	bad := ch.Shards[1]
	name := metaserver.ShardName(ch.ID, bad.Index)
	disk, ok := rc.server(bad.Addr).Store().(*store.Disk)
	if !ok {
		t.Fatal("chunkserver does not use a disk store")
	}
	at, err := store.ShardDataOffset(disk.Path(name))
	if err != nil {
		t.Fatal(err)
	}
	file, err := os.OpenFile(disk.Path(name), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	file.ReadAt(b, at+1000)
	b[0] ^= 0x5a
	if _, err := file.WriteAt(b, at+1000); err != nil {
		t.Fatal(err)
	}
	file.Close()

	if got := readAll(t, rc.client(opt), "/f"); !bytes.Equal(got, want) {
		t.Fatalf("read back differs at %d", firstDiff(got, want))
	}
	select {
	case r := <-rc.meta.reports:
		if r != name+" corrupt" {
			t.Fatalf("reported %q, want %q", r, name+" corrupt")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("bad shard never reported")
	}
	// The metaserver hands the repair to a chunkserver; afterwards the shard
	// the chunk record points at is whole again.
	cc := chunkserver.NewClient(rc.hc)
	waitFor(t, "the corrupt shard to be repaired", func() bool {
		cur, err := rc.meta.GetChunk(context.Background(), ch.ID)
		if err != nil {
			return false
		}
		for _, s := range cur.Shards {
			if s.Index == bad.Index {
				buf := make([]byte, cur.ShardSize)
				_, err := cc.ReadAt(context.Background(), s.Addr, name, buf, 0)
				return err == nil && chunkserver.Sum(buf) == s.Sum
			}
		}
		return false
	})
}

func TestRealDiskFull(t *testing.T) {
	opt := Options{ChunkSize: testChunk, RetryBackoff: time.Millisecond}
	// Room for a few shards each: the cluster fills up during the test.
	rc := newRaftCluster(t, 7, 6*testChunk/4)
	c := rc.client(opt)
	before := randBytes(8, 2*testChunk)
	if _, err := c.WriteFile(context.Background(), "/before", bytes.NewReader(before), 0o644); err != nil {
		t.Fatal(err)
	}
	var lastErr error
	written := map[string][]byte{}
	for i := 0; i < 20 && lastErr == nil; i++ {
		p := fmt.Sprintf("/more%d", i)
		data := randBytes(uint64(20+i), testChunk)
		if _, lastErr = c.WriteFile(context.Background(), p, bytes.NewReader(data), 0o644); lastErr == nil {
			written[p] = data
		}
	}
	if lastErr == nil {
		t.Fatal("a nearly full cluster took every write")
	}
	if !errors.Is(lastErr, chunkserver.ErrNoSpace) && !errors.Is(lastErr, metaserver.ErrNoSpace) {
		t.Fatalf("write into a full cluster: %v, want a no-space error", lastErr)
	}
	if got := readAll(t, rc.client(opt), "/before"); !bytes.Equal(got, before) {
		t.Fatal("committed data lost")
	}
	for p, data := range written {
		if got := readAll(t, rc.client(opt), p); !bytes.Equal(got, data) {
			t.Fatalf("%s lost", p)
		}
	}
}

// TestRealFallbackToCopies: with fewer chunkservers than K+M the metaserver
// cannot place an erasure-coded chunk, and the client stores M+1 copies.
func TestRealFallbackToCopies(t *testing.T) {
	opt := Options{ChunkSize: testChunk}
	rc := newRaftCluster(t, 5, 0)
	want := randBytes(11, testChunk+5)
	if _, err := rc.client(opt).WriteFile(context.Background(), "/f", bytes.NewReader(want), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, ch := range rc.chunksOf("/f") {
		if !ch.Replicated || len(ch.Shards) != 3 {
			t.Fatalf("chunk %d: replicated=%v with %d shards, want 3 copies", ch.ID, ch.Replicated, len(ch.Shards))
		}
	}
	first := rc.chunksOf("/f")[0]
	rc.kill(first.Shards[0].Addr)
	rc.kill(first.Shards[2].Addr)
	if got := readAll(t, rc.client(opt), "/f"); !bytes.Equal(got, want) {
		t.Fatal("copies lost data with 2 servers down")
	}
}

// TestRealOverwriteAndTruncate checks the metaserver applies commits and
// truncation the way the client's own view of the file assumes.
func TestRealOverwriteAndTruncate(t *testing.T) {
	ctx := context.Background()
	opt := Options{ChunkSize: testChunk}
	rc := newRaftCluster(t, 6, -1)
	c := rc.client(opt)
	model := randBytes(12, 3*testChunk)
	if _, err := c.WriteFile(ctx, "/f", bytes.NewReader(model), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := c.OpenPath(ctx, "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patch := randBytes(13, testChunk)
	if _, err := f.WriteAt(patch, testChunk/2); err != nil {
		t.Fatal(err)
	}
	copy(model[testChunk/2:], patch)
	if _, err := f.WriteAt([]byte("tail"), 4*testChunk); err != nil { // leaves a hole
		t.Fatal(err)
	}
	model = append(model, make([]byte, testChunk)...)
	model = append(model, "tail"...)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, rc.client(opt), "/f"); !bytes.Equal(got, model) {
		t.Fatalf("after overwrite: differ at %d of %d", firstDiff(got, model), len(model))
	}
	// Cut inside the patch, then grow again: the cut-off bytes must not
	// come back.
	cut := uint64(testChunk + 1000)
	if err := f.Truncate(ctx, cut); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(ctx, 2*testChunk); err != nil {
		t.Fatal(err)
	}
	model = append(model[:cut], make([]byte, 2*testChunk-int(cut))...)
	if got := readAll(t, rc.client(opt), "/f"); !bytes.Equal(got, model) {
		t.Fatalf("after truncate: differ at %d of %d", firstDiff(got, model), len(model))
	}
	a, err := c.Stat(ctx, "/f")
	if err != nil || a.Size != 2*testChunk {
		t.Fatalf("stat after truncate: %+v %v", a, err)
	}
}

// TestRealWriteWhileAServerDies: with exactly K+M chunkservers, one dies.
// Writes keep going: placements on it fail fast, and once the metaserver has
// missed its heartbeats the chunks fall back to M+1 copies on the others.
func TestRealWriteWhileAServerDies(t *testing.T) {
	opt := Options{ChunkSize: testChunk}
	rc := newRaftCluster(t, 6, -1)
	c := rc.client(opt)
	before := randBytes(21, 2*testChunk)
	if _, err := c.WriteFile(context.Background(), "/before", bytes.NewReader(before), 0o644); err != nil {
		t.Fatal(err)
	}
	rc.kill(rc.servers[3].Addr())
	after := randBytes(22, 2*testChunk+7)
	if _, err := c.WriteFile(context.Background(), "/after", bytes.NewReader(after), 0o644); err != nil {
		t.Fatalf("write with one of six chunkservers dead: %v", err)
	}
	for _, ch := range rc.chunksOf("/after") {
		for _, s := range ch.Shards {
			if s.Addr == rc.servers[3].Addr() {
				t.Fatalf("chunk %d committed with a shard on the dead server", ch.ID)
			}
		}
	}
	for p, want := range map[string][]byte{"/before": before, "/after": after} {
		if got := readAll(t, rc.client(opt), p); !bytes.Equal(got, want) {
			t.Fatalf("%s differs", p)
		}
	}
}
