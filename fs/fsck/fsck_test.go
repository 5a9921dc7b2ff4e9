package fsck_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/dockyard/dockyard/fs/fsck"
	"github.com/dockyard/dockyard/local"
	"github.com/dockyard/dockyard/metaserver"
)

func startCluster(t *testing.T, n int) *local.Cluster {
	t.Helper()
	c, err := local.Start(local.Config{Dir: t.TempDir(), Chunkservers: n, HeartbeatInterval: 100 * time.Millisecond, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func writeFile(t *testing.T, c *local.Cluster, path string, size int) {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(uint64(size), 1))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if _, err := c.FS.WriteFile(context.Background(), path, bytes.NewReader(data), 0o644); err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
}

func TestFsckFindsAndRepairsAMissingShard(t *testing.T) {
	// Seven chunkservers: the lost shard is rebuilt on the one that holds
	// no shard of the chunk.
	testFsckRepair(t, startCluster(t, 7))
}

func TestFsckRepairsInPlaceWhenEveryServerHoldsAShard(t *testing.T) {
	// Six chunkservers and 4+2, as `dockyard serve` runs: the only place
	// for the rebuilt shard is the server that lost it.
	testFsckRepair(t, startCluster(t, 6))
}

func testFsckRepair(t *testing.T, c *local.Cluster) {
	ctx := context.Background()
	if _, err := c.FS.MkdirAll(ctx, "/data/sub", 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, c, "/data/big", 9<<20+123)  // three erasure-coded chunks
	writeFile(t, c, "/data/sub/small", 1000) // one replicated chunk
	writeFile(t, c, "/empty", 0)

	r, err := fsck.Check(ctx, c.Meta, c.Shards, fsck.Options{Deep: true})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Clean() || r.Files != 3 || r.Dirs != 3 || r.Chunks != 4 || r.Healthy != 4 {
		t.Fatalf("healthy cluster: %+v", r)
	}

	// Lose one shard of the big file's first chunk.
	in, err := c.Meta.GetInode(ctx, mustResolve(t, c, "/data/big"))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := c.Meta.GetChunk(ctx, in.Extents[0].Chunk)
	if err != nil {
		t.Fatal(err)
	}
	victim := ch.Shards[1]
	if err := c.Shards.Delete(ctx, victim.Addr, metaserver.ShardName(ch.ID, victim.Index)); err != nil {
		t.Fatal(err)
	}

	r, err = fsck.Check(ctx, c.Meta, c.Shards, fsck.Options{Fix: true})
	if err != nil {
		t.Fatal(err)
	}
	if r.Clean() || r.Degraded != 1 || r.Lost != 0 || len(r.Problems) != 1 || r.Reported != 1 {
		t.Fatalf("after losing a shard: %+v", r)
	}
	p := r.Problems[0]
	if p.Chunk != ch.ID || p.Index != victim.Index || p.Reason != "missing" || len(p.Paths) != 1 || p.Paths[0] != "/data/big" {
		t.Fatalf("problem = %+v", p)
	}

	// The report makes the metaserver schedule a rebuild; a later check is clean.
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err = fsck.Check(ctx, c.Meta, c.Shards, fsck.Options{Deep: true})
		if err != nil {
			t.Fatal(err)
		}
		if r.Clean() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("shard not repaired within 20s: %+v", r)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestFsckReportsLostChunks(t *testing.T) {
	c := startCluster(t, 6)
	ctx := context.Background()
	writeFile(t, c, "/f", 5<<20)
	in, err := c.Meta.GetInode(ctx, mustResolve(t, c, "/f"))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := c.Meta.GetChunk(ctx, in.Extents[0].Chunk)
	if err != nil {
		t.Fatal(err)
	}
	// Three of six shards gone: fewer than k=4 remain.
	for _, s := range ch.Shards[:3] {
		if err := c.Shards.Delete(ctx, s.Addr, metaserver.ShardName(ch.ID, s.Index)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := fsck.Check(ctx, c.Meta, c.Shards, fsck.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Lost != 1 || r.Clean() || len(r.Problems) != 3 {
		t.Fatalf("report = %+v", r)
	}
	for _, p := range r.Problems {
		if !strings.Contains(p.Reason, "missing") {
			t.Fatalf("problem = %+v", p)
		}
	}
}

func mustResolve(t *testing.T, c *local.Cluster, path string) metaserver.Ino {
	t.Helper()
	a, err := c.Meta.ResolvePath(context.Background(), path)
	if err != nil {
		t.Fatalf("resolving %s: %v", path, err)
	}
	return a.Ino
}

// quietLogger keeps the chunkservers' routine logs out of test output.
func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
