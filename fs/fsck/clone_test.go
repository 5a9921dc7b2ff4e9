package fsck_test

import (
	"context"
	"slices"
	"testing"

	"github.com/dockyard/dockyard/fs/fsck"
	"github.com/dockyard/dockyard/metaserver"
)

// TestFsckCountsSharedChunksOnce: a clone shares its source's chunks, so
// fsck checks each chunk once and names both trees' files in a problem.
func TestFsckCountsSharedChunksOnce(t *testing.T) {
	c := startCluster(t, 6)
	ctx := context.Background()
	if _, err := c.FS.MkdirAll(ctx, "/data", 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, c, "/data/big", 9<<20+123) // three chunks
	writeFile(t, c, "/data/small", 1000)    // one
	if _, err := c.FS.Clone(ctx, "/data", "/copy"); err != nil {
		t.Fatal(err)
	}
	r, err := fsck.Check(ctx, c.Meta, c.Shards, fsck.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Clean() || r.Files != 4 || r.Dirs != 3 || r.Chunks != 4 || r.Healthy != 4 {
		t.Fatalf("after a clone: %+v", r)
	}
	in, err := c.Meta.GetInode(ctx, mustResolve(t, c, "/copy/big"))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := c.Meta.GetChunk(ctx, in.Extents[0].Chunk)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Refs != 2 {
		t.Fatalf("a chunk of the clone has %d refs, want 2", ch.Refs)
	}
	victim := ch.Shards[0]
	if err := c.Shards.Delete(ctx, victim.Addr, metaserver.ShardName(ch.ID, victim.Index)); err != nil {
		t.Fatal(err)
	}
	r, err = fsck.Check(ctx, c.Meta, c.Shards, fsck.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Degraded != 1 || len(r.Problems) != 1 {
		t.Fatalf("after losing a shared shard: %+v", r)
	}
	if p := r.Problems[0].Paths; !slices.Contains(p, "/data/big") || !slices.Contains(p, "/copy/big") {
		t.Fatalf("problem names %v, want both copies of big", p)
	}
}
