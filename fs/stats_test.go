package fs

import (
	"bytes"
	"context"
	"testing"
)

// readWhole reads p in one ReadAt through a fresh handle of c, so every
// block of the file is looked up in the cache exactly once.
func readWhole(t *testing.T, c *Client, p string, n int) []byte {
	t.Helper()
	f, err := c.OpenPath(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	if got, err := f.ReadAt(buf, 0); got != n {
		t.Fatalf("read %s: %d bytes, %v", p, got, err)
	}
	return buf
}

// TestStatsCountReads: a cold read misses every block and fetches the
// file's bytes from the chunkservers; the same read again hits every block
// and fetches nothing.
func TestStatsCountReads(t *testing.T) {
	cl := newCluster(t, 6)
	// Three full chunks of two blocks each and a small replicated one.
	size := 3*testChunk + 999
	want := writeRandom(t, cl.client(Options{ChunkSize: testChunk}), "/f", size)
	const blocks = 7
	c := cl.client(Options{ChunkSize: testChunk, ReadAhead: -1})
	if got := readWhole(t, c, "/f", size); !bytes.Equal(got, want) {
		t.Fatal("cold read differs")
	}
	st := c.Stats()
	if st.CacheHits != 0 || st.CacheMisses != blocks {
		t.Fatalf("cold read: %d hits, %d misses, want 0 and %d", st.CacheHits, st.CacheMisses, blocks)
	}
	if st.ShardBytes < uint64(size) || st.LocalShardBytes != 0 {
		t.Fatalf("cold read: %d bytes from chunkservers (%d local), want at least %d, none local", st.ShardBytes, st.LocalShardBytes, size)
	}
	if st.CacheBytes != int64(size) {
		t.Fatalf("cache holds %d bytes, want the file's %d", st.CacheBytes, size)
	}
	if st.DegradedReads != 0 || st.ShardErrors != 0 || st.ReadErrors != 0 {
		t.Fatalf("cold read on a healthy cluster: %+v", st)
	}

	if got := readWhole(t, c, "/f", size); !bytes.Equal(got, want) {
		t.Fatal("warm read differs")
	}
	warm := c.Stats()
	if warm.CacheHits != blocks || warm.CacheMisses != blocks || warm.ShardBytes != st.ShardBytes {
		t.Fatalf("warm read: %d hits, %d misses, %d shard bytes; want %d, %d, %d",
			warm.CacheHits, warm.CacheMisses, warm.ShardBytes, blocks, blocks, st.ShardBytes)
	}
}

// TestStatsDegradedAndFailedReads: clients sharing Counters count into
// them together; a read around a dead shard counts as degraded, and one
// with too few shards left as a read error.
func TestStatsDegradedAndFailedReads(t *testing.T) {
	cl := newCluster(t, 6)
	opt := Options{ChunkSize: testChunk}
	want := writeRandom(t, cl.client(opt), "/f", testChunk)
	ch := cl.chunkAt(t, "/f", 0)
	shared := new(Counters)
	opt.Counters, opt.ReadAhead = shared, -1

	// Shard 0 holds the chunk's first bytes: a read needs it or a rebuild.
	for _, s := range ch.Shards {
		if s.Index == 0 {
			cl.server(s.Addr).setDown(true)
		}
	}
	if got := readWhole(t, cl.client(opt), "/f", testChunk); !bytes.Equal(got, want) {
		t.Fatal("degraded read differs")
	}
	st := shared.Stats()
	if st.DegradedReads != 1 || st.ShardErrors == 0 || st.ReadErrors != 0 {
		t.Fatalf("one shard down: %+v, want one degraded read, shard errors, no read error", st)
	}

	for _, s := range ch.Shards[:3] {
		cl.server(s.Addr).kill()
	}
	f, err := cl.client(opt).OpenPath(context.Background(), "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.ReadAt(make([]byte, testChunk), 0); err == nil {
		t.Fatal("read with three of six shards gone succeeded")
	}
	if got := shared.Stats(); got.ReadErrors != 1 || got.CacheMisses != 4 {
		t.Fatalf("after a failed read by a second client: %+v, want 1 read error and both clients' 4 misses", got)
	}
}
