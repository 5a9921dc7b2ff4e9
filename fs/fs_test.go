package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/metaserver"
)

const testChunk = 256 << 10

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := 0; j < 8; j++ {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := n - n%8; i < n; i++ {
		b[i] = byte(r.Uint32())
	}
	return b
}

// readAll reads a file through a fresh client (empty cache) and a fresh
// handle, in uneven pieces.
func readAll(t *testing.T, c *Client, p string) []byte {
	t.Helper()
	f, err := c.OpenPath(context.Background(), p)
	if err != nil {
		t.Fatalf("open %s: %v", p, err)
	}
	defer f.Close()
	var out []byte
	buf := make([]byte, 100_003)
	for off := int64(0); ; {
		n, err := f.ReadAt(buf, off)
		out = append(out, buf[:n]...)
		off += int64(n)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("read %s at %d: %v", p, off, err)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	geoms := []struct{ k, m int }{{4, 2}, {2, 1}, {6, 3}}
	for _, g := range geoms {
		for _, replicateBelow := range []int64{DefaultReplicateBelow, 1} {
			t.Run(fmt.Sprintf("%d+%d/replicateBelow=%d", g.k, g.m, replicateBelow), func(t *testing.T) {
				cl := newCluster(t, g.k+g.m+1)
				opt := Options{ChunkSize: testChunk, K: g.k, M: g.m, ReplicateBelow: replicateBelow}
				c := cl.client(opt)
				shard := int(shardSizeFor(testChunk, g.k))
				sizes := []int{0, 1, shard - 1, shard, testChunk - 1, testChunk, testChunk + 1, 5*testChunk + 12345}
				ctx := context.Background()
				for i, size := range sizes {
					want := randBytes(uint64(i+1), size)
					p := fmt.Sprintf("/f%d", i)
					a, err := c.WriteFile(ctx, p, bytes.NewReader(want), 0o644)
					if err != nil {
						t.Fatalf("write %d bytes: %v", size, err)
					}
					if a.Size != uint64(size) {
						t.Fatalf("size %d: attr says %d", size, a.Size)
					}
					if got := readAll(t, cl.client(opt), p); !bytes.Equal(got, want) {
						t.Fatalf("size %d: read back %d bytes, differ at %d", size, len(got), firstDiff(got, want))
					}
					st, err := c.Stat(ctx, p)
					if err != nil || st.Size != uint64(size) {
						t.Fatalf("stat size %d: %+v %v", size, st, err)
					}
				}
			})
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestChunkLayout pins the shard layout repair depends on: data is split
// contiguously into K shards, zero-padded, parity from reedsolomon.
func TestChunkLayout(t *testing.T) {
	cl := newCluster(t, 6)
	c := cl.client(Options{ChunkSize: testChunk, ReplicateBelow: 1})
	data := randBytes(7, 1000)
	if _, err := c.WriteFile(context.Background(), "/x", bytes.NewReader(data), 0o644); err != nil {
		t.Fatal(err)
	}
	ch := cl.meta.chunks[1]
	if ch.K != 4 || ch.M != 2 || ch.ShardSize != 250 || ch.Size != 1000 || !ch.Committed {
		t.Fatalf("chunk record %+v", ch)
	}
	for _, s := range ch.Shards {
		got := cl.server(s.Addr).shards[metaserver.ShardName(ch.ID, s.Index)]
		if s.Index < 4 && !bytes.Equal(got, data[s.Index*250:(s.Index+1)*250]) {
			t.Fatalf("data shard %d is not the contiguous slice", s.Index)
		}
		if s.Sum != chunkserver.Sum(got) {
			t.Fatalf("shard %d: recorded sum %x, stored %x", s.Index, s.Sum, chunkserver.Sum(got))
		}
	}
}

func writeRandom(t *testing.T, c *Client, p string, size int) []byte {
	t.Helper()
	want := randBytes(uint64(size), size)
	if _, err := c.WriteFile(context.Background(), p, bytes.NewReader(want), 0o644); err != nil {
		t.Fatalf("write %s: %v", p, err)
	}
	return want
}

// TestKillAnyTwo: with 7 chunkservers, every pair of them down at once still
// reads back every byte, erasure-coded and replicated alike.
func TestKillAnyTwo(t *testing.T) {
	opt := Options{ChunkSize: testChunk}
	cl := newCluster(t, 7)
	want := writeRandom(t, cl.client(opt), "/f", 7*testChunk+999)
	small := writeRandom(t, cl.client(opt), "/small", 1000) // replicated M+1 times
	for i := 0; i < 7; i++ {
		for j := i + 1; j < 7; j++ {
			cl.servers[i].setDown(true)
			cl.servers[j].setDown(true)
			if got := readAll(t, cl.client(opt), "/f"); !bytes.Equal(got, want) {
				t.Fatalf("servers %d and %d down: read back differs at %d", i, j, firstDiff(got, want))
			}
			if got := readAll(t, cl.client(opt), "/small"); !bytes.Equal(got, small) {
				t.Fatalf("servers %d and %d down: replicated file differs", i, j)
			}
			cl.servers[i].setDown(false)
			cl.servers[j].setDown(false)
		}
	}
}

func TestKillThreeFailsCleanly(t *testing.T) {
	opt := Options{ChunkSize: testChunk}
	cl := newCluster(t, 7)
	writeRandom(t, cl.client(opt), "/f", 3*testChunk)
	ch := cl.chunkAt(t, "/f", 0)
	for _, s := range ch.Shards[:3] {
		cl.server(s.Addr).kill()
	}
	f, err := cl.client(opt).OpenPath(context.Background(), "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, testChunk)
	_, err = f.ReadAt(buf, 0)
	var ce *ChunkError
	if !errors.Is(err, ErrUnreadable) || !errors.As(err, &ce) {
		t.Fatalf("read with 3 of 6 shards gone: %v, want ErrUnreadable", err)
	}
	if ce.Chunk != ch.ID || ce.Readable >= ce.Need || ce.Need != 4 {
		t.Fatalf("chunk error %+v", ce)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("chunk %d: only %d of 4 shards readable", ch.ID, ce.Readable)) {
		t.Fatalf("error text %q", err)
	}
}

func TestCorruptShardIsRebuiltAndReported(t *testing.T) {
	opt := Options{ChunkSize: testChunk}
	cl := newCluster(t, 6)
	want := writeRandom(t, cl.client(opt), "/f", 2*testChunk)
	ch := cl.chunkAt(t, "/f", 0)
	s := ch.Shards[1]
	name := metaserver.ShardName(ch.ID, s.Index)
	cl.server(s.Addr).flip(name, 100)
	if got := readAll(t, cl.client(opt), "/f"); !bytes.Equal(got, want) {
		t.Fatalf("read back differs at %d", firstDiff(got, want))
	}
	waitFor(t, "bad shard report", func() bool {
		for _, r := range cl.meta.badReports() {
			if r == name+" corrupt" {
				return true
			}
		}
		return false
	})
	// A small read inside the damaged shard takes the same path.
	f, _ := cl.client(opt).OpenPath(context.Background(), "/f")
	defer f.Close()
	buf := make([]byte, 10)
	off := int64(ch.ShardSize + 95)
	if _, err := f.ReadAt(buf, off); err != nil || !bytes.Equal(buf, want[off:off+10]) {
		t.Fatalf("small read in corrupt shard: %v", err)
	}
}

func TestMissingShardReported(t *testing.T) {
	opt := Options{ChunkSize: testChunk}
	cl := newCluster(t, 6)
	want := writeRandom(t, cl.client(opt), "/f", testChunk)
	ch := cl.meta.chunks[1]
	s := ch.Shards[0]
	name := metaserver.ShardName(ch.ID, 0)
	srv := cl.server(s.Addr)
	srv.mu.Lock()
	delete(srv.shards, name)
	srv.mu.Unlock()
	if got := readAll(t, cl.client(opt), "/f"); !bytes.Equal(got, want) {
		t.Fatal("read back differs")
	}
	waitFor(t, "missing shard report", func() bool {
		r := cl.meta.badReports()
		return len(r) > 0 && r[0] == name+" missing"
	})
}

func TestSlowShardIsHedged(t *testing.T) {
	opt := Options{ChunkSize: testChunk, HedgeAfter: 50 * time.Millisecond}
	cl := newCluster(t, 6)
	want := writeRandom(t, cl.client(opt), "/f", testChunk)
	ch := cl.meta.chunks[1]
	cl.server(ch.Shards[2].Addr).setDelay(20 * time.Second)
	start := time.Now()
	got := readAll(t, cl.client(opt), "/f")
	if !bytes.Equal(got, want) {
		t.Fatal("read back differs")
	}
	// The slow server would take 20 s; the hedge answers long before.
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("hedged read took %v", d)
	}
}

func TestOverwriteAndHoles(t *testing.T) {
	ctx := context.Background()
	opt := Options{ChunkSize: testChunk}
	cl := newCluster(t, 6)
	c := cl.client(opt)
	f, err := c.CreateFile(ctx, "/f", 0o644, true)
	if err != nil {
		t.Fatal(err)
	}
	model := make([]byte, 0)
	write := func(off int, data []byte) {
		t.Helper()
		if _, err := f.WriteAt(data, int64(off)); err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
		if off+len(data) > len(model) {
			model = append(model, make([]byte, off+len(data)-len(model))...)
		}
		copy(model[off:], data)
	}
	check := func(what string, r io.ReaderAt) {
		t.Helper()
		got := make([]byte, len(model)+10)
		n, err := r.ReadAt(got, 0)
		if err != io.EOF || n != len(model) || !bytes.Equal(got[:n], model) {
			t.Fatalf("%s: n=%d err=%v, want %d bytes; differ at %d", what, n, err, len(model), firstDiff(got[:n], model))
		}
	}
	write(0, randBytes(1, 3*testChunk))         // three whole chunks
	write(5*testChunk+7, randBytes(2, 1000))    // past a hole
	write(testChunk/2, randBytes(3, testChunk)) // straddles chunks 0 and 1, unflushed
	write(100, randBytes(4, 10))                // small overwrite in a dirty chunk
	write(testChunk/2-50, randBytes(5, 10))     // a second span: the flush fills the gap
	check("before flush", f)
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	check("after flush", f)
	write(2*testChunk+5, randBytes(6, 20)) // overwrite of committed data
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g, err := cl.client(opt).OpenPath(ctx, "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	check("reopened", g)
	if a := g.Attr(); a.Size != uint64(len(model)) {
		t.Fatalf("size %d, want %d", a.Size, len(model))
	}
	// A hole reads as zeros.
	hole := make([]byte, 100)
	if _, err := g.ReadAt(hole, 4*testChunk); err != nil || !bytes.Equal(hole, make([]byte, 100)) {
		t.Fatalf("hole: %v %v", err, hole[:8])
	}
}

func TestTruncate(t *testing.T) {
	ctx := context.Background()
	opt := Options{ChunkSize: testChunk}
	cl := newCluster(t, 6)
	c := cl.client(opt)
	want := writeRandom(t, c, "/f", 2*testChunk+100)
	f, err := c.OpenPath(ctx, "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("dirty"), 10); err != nil {
		t.Fatal(err)
	}
	copy(want[10:], "dirty")
	if err := f.Truncate(ctx, testChunk+5); err != nil {
		t.Fatal(err)
	}
	want = want[:testChunk+5]
	if a := f.Attr(); a.Size != testChunk+5 {
		t.Fatalf("size after truncate %d", a.Size)
	}
	// Extending again must read zeros where the old bytes were.
	if err := f.Truncate(ctx, 2*testChunk); err != nil {
		t.Fatal(err)
	}
	want = append(want, make([]byte, testChunk-5)...)
	if got := readAll(t, cl.client(opt), "/f"); !bytes.Equal(got, want) {
		t.Fatalf("after truncate: %d bytes, differ at %d", len(got), firstDiff(got, want))
	}
	if err := f.Truncate(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, cl.client(opt), "/f"); len(got) != 0 {
		t.Fatalf("truncated to 0 but read %d bytes", len(got))
	}
}

// TestDiskFull: one chunkserver fills up before the metaserver hears of it
// (its next heartbeat). A write either lands elsewhere or fails with
// ErrNoSpace, and committed data stays readable; once the metaserver knows,
// placement avoids the server and writes succeed.
func TestDiskFull(t *testing.T) {
	opt := Options{ChunkSize: testChunk, RetryBackoff: time.Millisecond}
	cl := newCluster(t, 7)
	c := cl.client(opt)
	before := writeRandom(t, c, "/before", 3*testChunk)
	full := cl.servers[3]
	full.setFull(true)
	held := len(full.names())

	checkAvoided := func(p string) {
		t.Helper()
		in, _ := cl.meta.GetInode(context.Background(), mustStat(t, c, p).Ino)
		for _, e := range in.Extents {
			for _, s := range cl.meta.chunks[e.Chunk].Shards {
				if s.Addr == full.addr() {
					t.Fatalf("%s: chunk %d committed with a shard on the full server", p, e.Chunk)
				}
			}
		}
	}
	want := randBytes(3, 6*testChunk+3)
	if _, err := c.WriteFile(context.Background(), "/unaware", bytes.NewReader(want), 0o644); err == nil {
		checkAvoided("/unaware")
		if got := readAll(t, cl.client(opt), "/unaware"); !bytes.Equal(got, want) {
			t.Fatal("data written around a full server differs")
		}
	} else if !errors.Is(err, chunkserver.ErrNoSpace) {
		t.Fatalf("write while a server is full: %v, want success or ErrNoSpace", err)
	}
	if n := len(full.names()); n != held {
		t.Fatalf("full server holds %d shards, had %d", n, held)
	}

	cl.meta.setDown(full.addr()) // what the heartbeat reporting used >= capacity leads to
	after := writeRandom(t, c, "/after", 6*testChunk+3)
	checkAvoided("/after")
	if got := readAll(t, cl.client(opt), "/after"); !bytes.Equal(got, after) {
		t.Fatal("data written after the metaserver learned of the full disk differs")
	}
	if got := readAll(t, cl.client(opt), "/before"); !bytes.Equal(got, before) {
		t.Fatal("committed data lost")
	}
}

func TestAllFullFailsClearly(t *testing.T) {
	opt := Options{ChunkSize: testChunk, WriteAttempts: 3, RetryBackoff: time.Millisecond}
	cl := newCluster(t, 6)
	c := cl.client(opt)
	before := writeRandom(t, c, "/before", testChunk+1)
	stored := 0
	for _, s := range cl.servers {
		stored += len(s.names())
	}
	for _, s := range cl.servers {
		s.setFull(true)
	}
	_, err := c.WriteFile(context.Background(), "/after", bytes.NewReader(randBytes(1, 2*testChunk)), 0o644)
	if !errors.Is(err, chunkserver.ErrNoSpace) {
		t.Fatalf("write with every disk full: %v, want ErrNoSpace", err)
	}
	if !strings.Contains(err.Error(), "3 placements failed") {
		t.Fatalf("error does not say how often it tried: %v", err)
	}
	if got := readAll(t, cl.client(opt), "/before"); !bytes.Equal(got, before) {
		t.Fatal("committed data lost")
	}
	// No shard of the failed write is left behind.
	waitFor(t, "abandoned shards removed", func() bool {
		n := 0
		for _, s := range cl.servers {
			n += len(s.names())
		}
		return n == stored
	})
}

func TestFallbackToCopiesWhenTooFewServers(t *testing.T) {
	opt := Options{ChunkSize: testChunk}
	cl := newCluster(t, 6)
	cl.meta.setDown(cl.servers[0].addr())
	cl.servers[0].kill()
	c := cl.client(opt)
	want := writeRandom(t, c, "/f", testChunk)
	ch := cl.meta.chunks[1]
	if !ch.Replicated || len(ch.Shards) != 3 {
		t.Fatalf("with 5 of 6 servers up, chunk %+v should be 3 copies", ch)
	}
	cl.server(ch.Shards[0].Addr).kill()
	cl.server(ch.Shards[1].Addr).kill()
	if got := readAll(t, cl.client(opt), "/f"); !bytes.Equal(got, want) {
		t.Fatal("replicated fallback lost data with 2 servers down")
	}
}

func mustStat(t *testing.T, c *Client, p string) metaserver.Attr {
	t.Helper()
	a, err := c.Stat(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestCacheAndReadAhead(t *testing.T) {
	opt := Options{ChunkSize: testChunk, CacheBytes: 2 * testChunk, ReadAhead: testChunk}
	cl := newCluster(t, 6)
	want := writeRandom(t, cl.client(opt), "/f", 8*testChunk)
	c := cl.client(opt)
	f, err := c.OpenPath(context.Background(), "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	if _, err := f.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, want[:len(buf)]) {
		t.Fatal(err)
	}
	// A sequential read prefetches the window behind it: the next chunk.
	second := cl.meta.inodes[f.Ino()].Extents[1]
	if second.Off != testChunk {
		t.Fatalf("extents %v", cl.meta.inodes[f.Ino()].Extents)
	}
	waitFor(t, "read-ahead to fill the cache", func() bool {
		c.cache.mu.Lock()
		defer c.cache.mu.Unlock()
		_, ok := c.cache.items[blockKey{second.Chunk, 0}]
		return ok
	})
	for off := int64(len(buf)); off < int64(len(want)); off += int64(len(buf)) {
		if _, err := f.ReadAt(buf, off); err != nil || !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
			t.Fatalf("at %d: %v", off, err)
		}
	}
	if used, _ := c.cache.stats(); used > 2*testChunk {
		t.Fatalf("cache holds %d bytes, bound %d", used, 2*testChunk)
	}
	// Cached blocks are served without asking the chunkservers.
	gets := func() int {
		n := 0
		for _, s := range cl.servers {
			s.mu.Lock()
			n += s.gets
			s.mu.Unlock()
		}
		return n
	}
	g0 := gets()
	last := int64(len(want)) - int64(len(buf))
	if _, err := f.ReadAt(buf, last); err != nil || !bytes.Equal(buf, want[last:]) {
		t.Fatal(err)
	}
	if g := gets(); g != g0 {
		t.Fatalf("cached read made %d shard requests", g-g0)
	}
}

// TestCloseToOpen: a second client that opens after the writer closed sees
// the new bytes, although it cached the old ones.
func TestCloseToOpen(t *testing.T) {
	ctx := context.Background()
	opt := Options{ChunkSize: testChunk}
	cl := newCluster(t, 6)
	a, b := cl.client(opt), cl.client(opt)
	writeRandom(t, a, "/f", testChunk)
	old := readAll(t, b, "/f")
	f, err := a.OpenPath(ctx, "/f")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("new bytes"), 1000); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	copy(old[1000:], "new bytes")
	if got := readAll(t, b, "/f"); !bytes.Equal(got, old) {
		t.Fatal("second client read stale bytes after reopen")
	}
}

func TestConcurrentReadersAndWriter(t *testing.T) {
	ctx := context.Background()
	opt := Options{ChunkSize: testChunk, MaxUploads: 2}
	cl := newCluster(t, 6)
	c := cl.client(opt)
	f, err := c.CreateFile(ctx, "/f", 0o644, true)
	if err != nil {
		t.Fatal(err)
	}
	want := randBytes(9, 6*testChunk)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for off := 0; off < len(want); off += 50_000 {
			if _, err := f.WriteAt(want[off:min(off+50_000, len(want))], int64(off)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	// Readers race the writer: whatever they get must be a prefix-consistent
	// mix of zeros (not yet written) and the right bytes, never other bytes.
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 70_000)
			for i := 0; i < 30; i++ {
				off := int64((i * 123_457) % len(want))
				n, _ := f.ReadAt(buf, off)
				for j := 0; j < n; j++ {
					if buf[j] != 0 && buf[j] != want[off+int64(j)] {
						t.Errorf("read at %d: byte %d is %d, want 0 or %d", off, j, buf[j], want[off+int64(j)])
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, cl.client(opt), "/f"); !bytes.Equal(got, want) {
		t.Fatal("final content differs")
	}
}

func TestPathHelpers(t *testing.T) {
	ctx := context.Background()
	cl := newCluster(t, 6)
	c := cl.client(Options{ChunkSize: testChunk})
	if _, err := c.MkdirAll(ctx, "/a/b/c", 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MkdirAll(ctx, "/a/b/c", 0o755); err != nil {
		t.Fatalf("MkdirAll of an existing tree: %v", err)
	}
	if _, err := c.WriteFile(ctx, "/a/b/c/f", strings.NewReader("hello"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MkdirAll(ctx, "/a/b/c/f/g", 0o755); !errors.Is(err, syscall.ENOTDIR) {
		t.Fatalf("MkdirAll through a file: %v", err)
	}
	if _, err := c.CreateFile(ctx, "/a/b/c/f", 0o600, true); !errors.Is(err, syscall.EEXIST) {
		t.Fatalf("exclusive create of an existing file: %v", err)
	}
	if _, err := c.CreateFile(ctx, "/nope/f", 0o600, false); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("create without parent: %v", err)
	}
	// Non-exclusive create truncates, like os.Create.
	if _, err := c.WriteFile(ctx, "/a/b/c/f", strings.NewReader("hi"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, c, "/a/b/c/f"); string(got) != "hi" {
		t.Fatalf("rewritten file reads %q", got)
	}
	if err := c.Rename(ctx, "/a/b/c/f", "/a/g"); err != nil {
		t.Fatal(err)
	}
	ents, err := c.ReadDir(ctx, "/a")
	if err != nil || len(ents) != 2 || ents[0].Name != "b" || ents[1].Name != "g" {
		t.Fatalf("readdir /a: %+v %v", ents, err)
	}
	if err := c.Remove(ctx, "/a/b"); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("remove non-empty dir: %v", err)
	}
	for _, p := range []string{"/a/g", "/a/b/c", "/a/b", "/a"} {
		if err := c.Remove(ctx, p); err != nil {
			t.Fatalf("remove %s: %v", p, err)
		}
	}
	if _, err := c.Stat(ctx, "/a"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("stat removed dir: %v", err)
	}
	if err := c.Remove(ctx, "/"); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("remove /: %v", err)
	}
	if _, err := c.OpenPath(ctx, "/"); !errors.Is(err, syscall.EISDIR) {
		t.Fatalf("open /: %v", err)
	}
}

type memLayer struct{ data []byte }

func (l memLayer) OpenLayerFile(_ context.Context, ino metaserver.Inode) (io.ReaderAt, error) {
	return bytes.NewReader(l.data[ino.Layer.Offset : ino.Layer.Offset+ino.Size]), nil
}

func TestLayerBackedFile(t *testing.T) {
	ctx := context.Background()
	cl := newCluster(t, 6)
	blob := []byte("....layer-bytes-here....")
	cl.meta.inodes[50] = &metaserver.Inode{
		Attr:  metaserver.Attr{Ino: 50, Mode: syscall.S_IFREG | 0o644, Size: 11},
		Layer: &metaserver.LayerRef{Blob: 49, Offset: 4},
	}
	c := New(cl.meta, chunkserver.NewClient(nil), Options{LayerOpener: memLayer{blob}, Logger: discardLogger()})
	f, err := c.Open(ctx, 50)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 20)
	n, err := f.ReadAt(buf, 0)
	if err != io.EOF || string(buf[:n]) != "layer-bytes" {
		t.Fatalf("layer read %q %v", buf[:n], err)
	}
	if _, err := f.WriteAt([]byte("x"), 0); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("write to layer file: %v", err)
	}
	noOpener := cl.client(Options{})
	g, err := noOpener.Open(ctx, 50)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.ReadAt(buf, 0); !errors.Is(err, syscall.EIO) {
		t.Fatalf("layer read without opener: %v", err)
	}
}

func TestSpliceExtent(t *testing.T) {
	e := func(off, n uint64, ch metaserver.ChunkID, coff uint64) metaserver.Extent {
		return metaserver.Extent{Off: off, Len: n, Chunk: ch, ChunkOff: coff}
	}
	got := spliceExtent([]metaserver.Extent{e(0, 100, 1, 0), e(100, 100, 2, 0), e(300, 10, 3, 0)}, e(50, 100, 9, 0))
	want := []metaserver.Extent{e(0, 50, 1, 0), e(50, 100, 9, 0), e(150, 50, 2, 50), e(300, 10, 3, 0)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("splice:\n got %v\nwant %v", got, want)
	}
	got = spliceExtent([]metaserver.Extent{e(0, 100, 1, 0)}, e(20, 10, 9, 5))
	want = []metaserver.Extent{e(0, 20, 1, 0), e(20, 10, 9, 5), e(30, 70, 1, 30)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("splice inside:\n got %v\nwant %v", got, want)
	}
	got = spliceExtent([]metaserver.Extent{e(10, 10, 1, 0)}, e(200, 10, 9, 0))
	if len(got) != 2 || got[1].Chunk != 9 {
		t.Fatalf("append: %v", got)
	}
}

func TestAddSpan(t *testing.T) {
	var s []span
	for _, r := range [][2]int64{{10, 20}, {30, 40}, {20, 25}, {0, 5}, {24, 31}} {
		s = addSpan(s, r[0], r[1])
	}
	if fmt.Sprint(s) != "[{0 5} {10 40}]" {
		t.Fatalf("spans %v", s)
	}
}

// TestUnflushedChunksCommitBeforeTheirLease: a file written and left open
// commits its uploaded chunks by itself, so the metaserver's lease on
// uncommitted chunks never collects data a writer still holds open.
func TestUnflushedChunksCommitBeforeTheirLease(t *testing.T) {
	ctx := context.Background()
	cl := newCluster(t, 6)
	c := cl.client(Options{ChunkSize: testChunk, CommitAfter: 50 * time.Millisecond})
	f, err := c.CreateFile(ctx, "/f", 0o644, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want := randBytes(3, 2*testChunk)
	if _, err := f.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the background commit", func() bool {
		in, err := cl.meta.GetInode(ctx, f.Ino())
		return err == nil && in.Size == uint64(len(want)) && len(in.Extents) == 2
	})
	if got := readAll(t, cl.client(Options{ChunkSize: testChunk}), "/f"); !bytes.Equal(got, want) {
		t.Fatal("committed bytes differ")
	}
}

// TestWriteSurvivesAFreshlyDeadServer: a chunkserver dies and the metaserver
// still places shards on it (it has not missed enough heartbeats yet); the
// client retries on new placements until one avoids it.
func TestWriteSurvivesAFreshlyDeadServer(t *testing.T) {
	opt := Options{ChunkSize: testChunk, RetryBackoff: 5 * time.Millisecond}
	cl := newCluster(t, 7)
	dead := cl.servers[4]
	dead.kill()
	// The metaserver notices once it has handed out a few more placements,
	// standing in for the missed heartbeats.
	noticed := make(chan struct{})
	go func() {
		defer close(noticed)
		waitFor(t, "placements after the death", func() bool {
			cl.meta.mu.Lock()
			defer cl.meta.mu.Unlock()
			return cl.meta.allocs >= 12
		})
		cl.meta.setDown(dead.addr())
	}()
	want := writeRandom(t, cl.client(opt), "/f", 4*testChunk+10)
	<-noticed
	if got := readAll(t, cl.client(opt), "/f"); !bytes.Equal(got, want) {
		t.Fatal("read back differs")
	}
	cl.meta.mu.Lock()
	defer cl.meta.mu.Unlock()
	if cl.meta.allocs <= 5 {
		t.Fatalf("%d allocations for 5 chunks: the dead server was never hit", cl.meta.allocs)
	}
	// Every failed placement was given back; only the file's chunks remain.
	if len(cl.meta.abandoned) != cl.meta.allocs-5 || len(cl.meta.chunks) != 5 {
		t.Fatalf("%d allocations, %d abandoned, %d chunks left in the map; want every allocation but the 5 used abandoned",
			cl.meta.allocs, len(cl.meta.abandoned), len(cl.meta.chunks))
	}
}

// TestSlowShardWithNoSpare: two shards are gone and a third is slow, so the
// hedge has nothing to rebuild from but the slow shard itself; the read
// waits for it rather than failing.
func TestSlowShardWithNoSpare(t *testing.T) {
	opt := Options{ChunkSize: testChunk, HedgeAfter: 20 * time.Millisecond}
	cl := newCluster(t, 6)
	want := writeRandom(t, cl.client(opt), "/f", testChunk)
	ch := cl.chunkAt(t, "/f", 0)
	byIdx := map[int]*fakeShards{}
	for _, s := range ch.Shards {
		byIdx[s.Index] = cl.server(s.Addr)
	}
	byIdx[0].setDown(true)
	byIdx[5].setDown(true)
	byIdx[1].setDelay(300 * time.Millisecond)
	if got := readAll(t, cl.client(opt), "/f"); !bytes.Equal(got, want) {
		t.Fatal("read back differs")
	}
}

// TestDownServerIsPassedOver: once a chunkserver fails to answer, the client
// stops asking it for a while — reads go straight to other shards — and
// writes move to placements without it.
func TestDownServerIsPassedOver(t *testing.T) {
	// One upload at a time, so a chunk's placements are consecutive
	// rotations of the fake metaserver, one in seven of which avoids any
	// given server.
	opt := Options{ChunkSize: testChunk, RetryBackoff: time.Millisecond, MaxUploads: 1}
	cl := newCluster(t, 7)
	c := cl.client(opt)
	want := writeRandom(t, c, "/f", 2*testChunk)
	ch := cl.chunkAt(t, "/f", 0)
	down := cl.server(ch.Shards[0].Addr)
	down.setDown(true)
	hits := func() int { down.mu.Lock(); defer down.mu.Unlock(); return down.hits }
	if got := readAll(t, c, "/f"); !bytes.Equal(got, want) {
		t.Fatal("read back differs")
	}
	after := hits()
	if after == 0 {
		t.Fatal("the down server was never asked")
	}
	// The block cache would hide the shard requests: read through a
	// client sharing the health record but not the cache.
	c.cache = nil
	if got := readAll(t, c, "/f"); !bytes.Equal(got, want) {
		t.Fatal("second read differs")
	}
	writeRandom(t, c, "/g", 3*testChunk)
	if n := hits(); n != after {
		t.Fatalf("the down server got %d more requests", n-after)
	}
}

// TestHungServerDoesNotStallWrites: a chunkserver that accepts a shard but
// never answers costs a write about HedgeAfter, not the whole IOTimeout: the
// placement is abandoned for one without it.
func TestHungServerDoesNotStallWrites(t *testing.T) {
	opt := Options{ChunkSize: testChunk, HedgeAfter: 50 * time.Millisecond, RetryBackoff: time.Millisecond, MaxUploads: 1}
	cl := newCluster(t, 7)
	hung := cl.servers[2]
	hung.mu.Lock()
	hung.putDelay = time.Minute
	hung.mu.Unlock()
	start := time.Now()
	want := writeRandom(t, cl.client(opt), "/f", 2*testChunk)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("write took %v with a hung server", d)
	}
	if got := readAll(t, cl.client(opt), "/f"); !bytes.Equal(got, want) {
		t.Fatal("read back differs")
	}
	for _, off := range []uint64{0, testChunk} {
		for _, s := range cl.chunkAt(t, "/f", off).Shards {
			if s.Addr == hung.addr() {
				t.Fatalf("chunk at %d committed with a shard on the hung server", off)
			}
		}
	}
}

// TestWriteFromIntoDirtyChunk: streaming into a chunk that already holds
// unflushed writes keeps both.
func TestWriteFromIntoDirtyChunk(t *testing.T) {
	ctx := context.Background()
	opt := Options{ChunkSize: testChunk}
	cl := newCluster(t, 6)
	c := cl.client(opt)
	f, err := c.CreateFile(ctx, "/f", 0o644, true)
	if err != nil {
		t.Fatal(err)
	}
	head := randBytes(1, 1000)
	if _, err := f.WriteAt(head, 0); err != nil {
		t.Fatal(err)
	}
	body := randBytes(2, 2*testChunk+3)
	if n, err := f.writeFrom(ctx, bytes.NewReader(body), 1000); err != nil || n != int64(len(body)) {
		t.Fatalf("writeFrom: %d %v", n, err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, cl.client(opt), "/f"); !bytes.Equal(got, append(head, body...)) {
		t.Fatal("content differs")
	}
}

// TestDiskCache: with a cache directory, a block evicted from memory is read
// back from local disk instead of the chunkservers; a damaged cache file is
// a miss, never wrong bytes; the directory stays within its bound.
func TestDiskCache(t *testing.T) {
	dir := t.TempDir()
	opt := Options{ChunkSize: testChunk, CacheBytes: blockSize, ReadAhead: -1, CacheDir: dir, DiskCacheBytes: 3 * testChunk}
	cl := newCluster(t, 6)
	want := writeRandom(t, cl.client(Options{ChunkSize: testChunk}), "/f", 2*testChunk)
	c := cl.client(opt)
	gets := func() int {
		n := 0
		for _, s := range cl.servers {
			s.mu.Lock()
			n += s.gets
			s.mu.Unlock()
		}
		return n
	}
	if got := readAll(t, c, "/f"); !bytes.Equal(got, want) {
		t.Fatal("first read differs")
	}
	g0 := gets()
	if got := readAll(t, c, "/f"); !bytes.Equal(got, want) {
		t.Fatal("read from the disk cache differs")
	}
	if g := gets(); g != g0 {
		t.Fatalf("second read made %d shard requests; the disk cache should serve it", g-g0)
	}
	// Damage every cached block: reads go back to the shards, still right.
	files, _ := filepath.Glob(filepath.Join(dir, "blocks", "*"))
	if len(files) == 0 {
		t.Fatal("nothing cached on disk")
	}
	for _, p := range files {
		b, _ := os.ReadFile(p)
		b[len(b)-1] ^= 1
		os.WriteFile(p, b, 0o600)
	}
	if got := readAll(t, c, "/f"); !bytes.Equal(got, want) {
		t.Fatal("read with a damaged disk cache differs")
	}
	if gets() == g0 {
		t.Fatal("damaged cache files were served")
	}
	// Bound: a larger file leaves at most DiskCacheBytes on disk.
	writeRandom(t, cl.client(Options{ChunkSize: testChunk}), "/big", 6*testChunk)
	readAll(t, c, "/big")
	var total int64
	files, _ = filepath.Glob(filepath.Join(dir, "blocks", "*"))
	for _, p := range files {
		if st, err := os.Stat(p); err == nil {
			total += st.Size()
		}
	}
	if total > 3*testChunk {
		t.Fatalf("disk cache holds %d bytes, bound %d", total, 3*testChunk)
	}
}

// TestNoReportForAMovedShard: a reader that located a chunk before one of its
// shards moved (rebalancing, repair) finds the old copy gone. That is not
// damage: reporting it would mark the healthy copy at its new place bad.
func TestNoReportForAMovedShard(t *testing.T) {
	cl := newCluster(t, 7)
	c := cl.client(Options{ChunkSize: testChunk})
	writeRandom(t, c, "/f", testChunk)
	a, err := c.Stat(context.Background(), "/f")
	if err != nil {
		t.Fatal(err)
	}
	in, err := cl.meta.GetInode(context.Background(), a.Ino)
	if err != nil {
		t.Fatal(err)
	}
	stale, err := cl.meta.GetChunk(context.Background(), in.Extents[0].Chunk)
	if err != nil {
		t.Fatal(err)
	}
	// Move shard 0 in the metaserver's view to a server holding none.
	cl.meta.mu.Lock()
	cur := cl.meta.chunks[stale.ID]
	held := map[metaserver.ServerID]bool{}
	for _, s := range cur.Shards {
		held[s.Server] = true
	}
	for _, addr := range cl.meta.servers {
		if !held[metaserver.ServerID(addr)] {
			cur.Shards[0].Server, cur.Shards[0].Addr = metaserver.ServerID(addr), addr
			break
		}
	}
	cl.meta.mu.Unlock()

	c.noteShardError(&stale, 0, chunkserver.ErrNotFound) // stale location: no report
	c.noteShardError(&stale, 1, chunkserver.ErrNotFound) // shard 1 did not move: reported
	want := metaserver.ShardName(stale.ID, 1) + " missing"
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Contains(cl.meta.badReports(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("the unmoved shard was never reported: %v", cl.meta.badReports())
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // both reports were sent at once; give the other as long again
	if r := cl.meta.badReports(); slices.Contains(r, metaserver.ShardName(stale.ID, 0)+" missing") {
		t.Fatalf("a shard that moved was reported bad at its new place: %v", r)
	}
}
