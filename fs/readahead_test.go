package fs

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// raState returns the stream of the file's latest read as it stands, with
// workers counting the prefetch workers of all its streams.
func raState(f *File) stream {
	f.mu.Lock()
	defer f.mu.Unlock()
	st := f.ra.streams[f.ra.last]
	st.workers = 0
	for _, s := range f.ra.streams {
		st.workers += s.workers
	}
	return st
}

// cached reports whether the block holding file offset off is in the cache.
func cached(t *testing.T, cl *cluster, c *Client, p string, off int64) bool {
	t.Helper()
	ch := cl.chunkAt(t, p, uint64(off))
	c.cache.mu.Lock()
	defer c.cache.mu.Unlock()
	_, ok := c.cache.items[blockKey{ch.ID, off % testChunk / blockSize}]
	return ok
}

// TestReadAheadWindowGrowsAndResets: a sequential stream starts with a
// window of one chunk that doubles as the stream goes on, up to ReadAhead,
// and the window is fetched ahead of the reader; a read far from the stream
// starts a new one with a window of one chunk again.
func TestReadAheadWindowGrowsAndResets(t *testing.T) {
	const ra = 8 * testChunk
	const size = 2*streamSlack + 16*testChunk
	opt := Options{ChunkSize: testChunk, CacheBytes: 64 << 20, ReadAhead: ra}
	cl, c, f, want := streamReader(t, opt, size)
	buf := make([]byte, testChunk/2)
	read := func(off int64) {
		t.Helper()
		if _, err := f.ReadAt(buf, off); err != nil || !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}

	var windows []int64
	off := int64(0)
	for ; off < 12*testChunk; off += int64(len(buf)) {
		read(off)
		windows = append(windows, raState(f).window)
	}
	if windows[0] != testChunk {
		t.Fatalf("first window %d, want one chunk (%d)", windows[0], testChunk)
	}
	for i := 1; i < len(windows); i++ {
		if windows[i] < windows[i-1] {
			t.Fatalf("window shrank during a sequential stream: %v", windows)
		}
	}
	if last := windows[len(windows)-1]; last != ra {
		t.Fatalf("window after %d sequential bytes is %d, want ReadAhead %d (windows %v)", off, last, ra, windows)
	}
	// The whole window ahead of the reader gets fetched.
	st := raState(f)
	end := st.target(size, testChunk)
	if end < off+ra {
		t.Fatalf("prefetch target %d, reader at %d, window %d", end, off, ra)
	}
	waitFor(t, "the window ahead of the reader to be cached", func() bool {
		return cached(t, cl, c, "/f", end-1)
	})

	// Far from the stream: a new one, whose window starts over.
	far := int64(size - 8*testChunk)
	read(far)
	if st := raState(f); st.start != far || st.reads != 1 || st.window != 0 {
		t.Fatalf("after a seek the stream is %+v, want a new one at %d with no window", st, far)
	}
	read(far + int64(len(buf)))
	if st := raState(f); st.window != testChunk {
		t.Fatalf("second read after the seek: window %d, want one chunk", st.window)
	}
	waitFor(t, "read-ahead workers to stop", func() bool { return raState(f).workers == 0 })
}

// TestRandomReadsDoNotReadAhead: small random reads never start read-ahead,
// even when they land near each other: each costs the one block it needs.
func TestRandomReadsDoNotReadAhead(t *testing.T) {
	const size = 4 << 20 // well inside streamSlack: every read is near the last
	opt := Options{ChunkSize: testChunk, CacheBytes: 64 << 20, ReadAhead: 8 * testChunk}
	_, c, f, want := streamReader(t, opt, size)
	r := rand.New(rand.NewPCG(3, 4))
	buf := make([]byte, 4<<10)
	const reads = 200
	for range reads {
		off := (1 + r.Int64N(size/int64(len(buf))-1)) * int64(len(buf)) // never offset 0
		if _, err := f.ReadAt(buf, off); err != nil || !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
			t.Fatalf("read at %d: %v", off, err)
		}
		if st := raState(f); st.workers != 0 || st.window != 0 {
			t.Fatalf("random reads started read-ahead: %+v", st)
		}
	}
	if _, blocks := c.cache.stats(); blocks > reads {
		t.Fatalf("%d random 4 KiB reads cached %d blocks: something read ahead", reads, blocks)
	}
	if c.cache.raPeak != 0 {
		t.Fatalf("read-ahead fetched %d bytes at once for random reads", c.cache.raPeak)
	}
}

// TestReadAheadMemoryBound: many sequential readers at once over a small
// cache keep the bytes being prefetched within half the cache and the cache
// within its size, and every reader still gets its file's bytes.
func TestReadAheadMemoryBound(t *testing.T) {
	const cache = 8 * testChunk
	opt := Options{ChunkSize: testChunk, CacheBytes: cache, ReadAhead: 16 * testChunk}
	cl := newCluster(t, 6)
	const files = 6
	wants := make([][]byte, files)
	for i := range files {
		wants[i] = writeRandom(t, cl.client(opt), "/f"+string(rune('a'+i)), 24*testChunk+i*1000)
	}
	// Slow servers keep many fetches in flight at once.
	for _, s := range cl.servers {
		s.setDelay(2 * time.Millisecond)
	}
	c := cl.client(opt)
	var wg sync.WaitGroup
	for i := range files {
		wg.Go(func() {
			f, err := c.OpenPath(context.Background(), "/f"+string(rune('a'+i)))
			if err != nil {
				t.Error(err)
				return
			}
			defer f.Close()
			var got []byte
			buf := make([]byte, 64<<10)
			for off := int64(0); ; {
				n, err := f.ReadAt(buf, off)
				got = append(got, buf[:n]...)
				off += int64(n)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
			if !bytes.Equal(got, wants[i]) {
				t.Errorf("file %d read back different bytes", i)
			}
		})
	}
	wg.Wait()
	c.cache.raMu.Lock()
	peak := c.cache.raPeak
	c.cache.raMu.Unlock()
	if peak == 0 || peak > cache/2 {
		t.Fatalf("read-ahead held up to %d bytes in flight, bound %d", peak, cache/2)
	}
	if used, _ := c.cache.stats(); used > cache {
		t.Fatalf("cache holds %d bytes, bound %d", used, cache)
	}
}

// TestReadDataLends: ReadData returns the file's bytes (holes as zeros,
// unflushed writes included) and, for committed bytes, lends them from the
// cache without copying; lent blocks stay intact until released, although
// other reads push them out of the cache meanwhile.
func TestReadDataLends(t *testing.T) {
	ctx := context.Background()
	opt := Options{ChunkSize: testChunk, CacheBytes: 4 * blockSize, ReadAhead: -1}
	cl := newCluster(t, 6)
	w := cl.client(opt)
	want := writeRandom(t, w, "/f", 3*testChunk)
	other := writeRandom(t, w, "/g", 8*testChunk)
	// A hole between two committed ranges.
	h, err := w.CreateFile(ctx, "/h", 0o644, true)
	if err != nil {
		t.Fatal(err)
	}
	hole := append(append(randBytes(7, 1000), make([]byte, 2*testChunk)...), randBytes(8, 1000)...)
	if _, err := h.WriteAt(hole[:1000], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := h.WriteAt(hole[len(hole)-1000:], int64(len(hole)-1000)); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	c := cl.client(opt)
	bytesOf := func(d Data) []byte {
		var b []byte
		for _, p := range d.Bufs {
			b = append(b, p...)
		}
		if len(b) != d.N {
			t.Fatalf("Data.N %d, pieces hold %d", d.N, len(b))
		}
		return b
	}
	f, err := c.OpenPath(ctx, "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, testChunk)
	off := int64(testChunk / 2) // straddles chunks 0 and 1
	d, err := f.ReadData(buf, off)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range d.Bufs {
		if &p[0] == &buf[0] {
			t.Fatal("committed bytes were copied into the caller's buffer, not lent")
		}
	}
	snapshot := bytesOf(d)
	if !bytes.Equal(snapshot, want[off:off+testChunk]) {
		t.Fatalf("lent bytes differ at %d", firstDiff(snapshot, want[off:off+testChunk]))
	}
	// Push every block out of the tiny cache and through the slab pools.
	if got := readAll(t, c, "/g"); !bytes.Equal(got, other) {
		t.Fatal("/g read back wrong")
	}
	if !bytes.Equal(bytesOf(d), snapshot) {
		t.Fatal("lent blocks were reused before Release")
	}
	d.Release()

	// Short read at the end of the file.
	d, err = f.ReadData(buf, int64(len(want))-100)
	if err != io.EOF || !bytes.Equal(bytesOf(d), want[len(want)-100:]) {
		t.Fatalf("read at the end: err %v, %d bytes", err, d.N)
	}
	d.Release()

	g, err := c.OpenPath(ctx, "/h")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	big := make([]byte, len(hole))
	d, err = g.ReadData(big, 0)
	if err != nil || !bytes.Equal(bytesOf(d), hole) {
		t.Fatalf("file with a hole: err %v, bytes differ at %d", err, firstDiff(bytesOf(d), hole))
	}
	d.Release()

	// Unflushed writes show through.
	if _, err := g.WriteAt([]byte("fresh"), 10); err != nil {
		t.Fatal(err)
	}
	d, err = g.ReadData(big, 0)
	if err != nil || !bytes.Equal(bytesOf(d)[10:15], []byte("fresh")) {
		t.Fatalf("unflushed write not seen: %v", err)
	}
	d.Release()
}

// TestReadDataKeptDropsBehind: a sequential stream read with ReadDataKept
// leaves in the cache only what was read ahead of it, where ReadData keeps
// every block; random reads keep theirs either way.
func TestReadDataKeptDropsBehind(t *testing.T) {
	const size = 32 * testChunk
	const ra = 4 * testChunk
	opt := Options{ChunkSize: testChunk, CacheBytes: 64 << 20, ReadAhead: ra}
	cl := newCluster(t, 6)
	want := writeRandom(t, cl.client(opt), "/f", size)
	stream := func(kept bool) int64 {
		t.Helper()
		c := cl.client(opt)
		f, err := c.OpenPath(context.Background(), "/f")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		// Whole blocks, as the kernel's 1 MiB requests are: only blocks
		// a read covers whole are dropped.
		buf := make([]byte, 2*blockSize)
		for off := int64(0); off < size; off += int64(len(buf)) {
			read := f.ReadData
			if kept {
				read = f.ReadDataKept
			}
			d, err := read(buf, off)
			if err != nil && err != io.EOF {
				t.Fatal(err)
			}
			var got []byte
			for _, b := range d.Bufs {
				got = append(got, b...)
			}
			d.Release()
			if !bytes.Equal(got, want[off:off+int64(len(buf))]) {
				t.Fatalf("kept=%v: read at %d differs", kept, off)
			}
		}
		waitFor(t, "read-ahead to finish", func() bool { return raState(f).workers == 0 })
		used, _ := c.cache.stats()
		return used
	}
	if used := stream(false); used != size {
		t.Fatalf("ReadData left %d bytes cached, want the whole file (%d)", used, size)
	}
	if used := stream(true); used > ra {
		t.Fatalf("ReadDataKept left %d bytes cached after a sequential read, want at most the window (%d)", used, ra)
	}

	// Random reads are not dropped: they are what the cache is for.
	c := cl.client(opt)
	f, err := c.OpenPath(context.Background(), "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4<<10)
	for _, off := range []int64{5 * testChunk, 20 * testChunk, 9 * testChunk, 27 * testChunk} {
		d, err := f.ReadDataKept(buf, off)
		if err != nil {
			t.Fatal(err)
		}
		d.Release()
	}
	if _, blocks := c.cache.stats(); blocks != 4 {
		t.Fatalf("four random reads left %d blocks cached, want 4", blocks)
	}
}

// TestBackwardStreamStopsReadingAhead: a file read backwards is dense, but
// read-ahead, which only looks forward, stops once the reader is a stream
// slack away from the front, before the window grows to ReadAhead: the
// window is then at most twice the slack (it grows in powers of two).
func TestBackwardStreamStopsReadingAhead(t *testing.T) {
	const ra = 4 * streamSlack
	const size = 8 * streamSlack
	opt := Options{ChunkSize: testChunk, CacheBytes: 256 << 20, ReadAhead: ra}
	_, c, f, want := streamReader(t, opt, size)
	buf := make([]byte, blockSize)
	// Start in the middle, so there is a whole window ahead to fetch.
	var reads int64
	for off := int64(size/2) - int64(len(buf)); off >= 0; off -= int64(len(buf)) {
		if _, err := f.ReadAt(buf, off); err != nil || !bytes.Equal(buf, want[off:off+int64(len(buf))]) {
			t.Fatalf("read at %d: %v", off, err)
		}
		reads++
	}
	waitFor(t, "read-ahead to finish", func() bool { return raState(f).workers == 0 })
	_, blocks := c.cache.stats()
	if ahead := int64(blocks) - reads; ahead*blockSize > 2*streamSlack+testChunk {
		t.Fatalf("reading backwards fetched %d bytes ahead of the stream; want at most twice the stream slack (%d)", ahead*blockSize, 2*streamSlack)
	}
}

// TestInterleavedStreams: two readers taking turns on one File (two
// processes reading one file through a mount share it) each keep their own
// stream, whose window grows as if it were alone.
func TestInterleavedStreams(t *testing.T) {
	const ra = 8 * testChunk
	const size = 4 * streamSlack
	opt := Options{ChunkSize: testChunk, CacheBytes: 256 << 20, ReadAhead: ra}
	cl, c, f, want := streamReader(t, opt, size)
	buf := make([]byte, blockSize)
	a, b := int64(0), int64(size/2)
	for range 48 {
		for _, off := range []*int64{&a, &b} {
			if _, err := f.ReadAt(buf, *off); err != nil || !bytes.Equal(buf, want[*off:*off+int64(len(buf))]) {
				t.Fatalf("read at %d: %v", *off, err)
			}
			*off += int64(len(buf))
			if st := raState(f); st.window != ra && st.seen > ra {
				t.Fatalf("stream at %d read %d bytes and has a window of %d, want %d: the other reader reset it", st.next, st.seen, st.window, ra)
			}
		}
	}
	for _, off := range []int64{a, b} {
		waitFor(t, "both streams' windows to be fetched", func() bool { return cached(t, cl, c, "/f", off+ra-1) })
	}
}

// TestHolesZeroedInDirtyBuffer: ReadAt no longer clears the whole buffer
// before filling it, so the holes, and only they, must be cleared: a buffer
// full of old bytes reads a sparse file exactly.
func TestHolesZeroedInDirtyBuffer(t *testing.T) {
	ctx := context.Background()
	opt := Options{ChunkSize: testChunk}
	cl := newCluster(t, 6)
	w := cl.client(opt)
	f, err := w.CreateFile(ctx, "/sparse", 0o644, true)
	if err != nil {
		t.Fatal(err)
	}
	size := 5*testChunk + 300
	want := make([]byte, size)
	for _, piece := range []struct{ off, n int }{{100, 1000}, {2*testChunk - 10, 50}, {4 * testChunk, testChunk}, {size - 300, 300}} {
		b := randBytes(uint64(piece.off), piece.n)
		copy(want[piece.off:], b)
		if _, err := f.WriteAt(b, int64(piece.off)); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	g, err := cl.client(opt).OpenPath(ctx, "/sparse")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	for _, off := range []int{0, 50, testChunk + 7, 3 * testChunk} {
		buf := bytes.Repeat([]byte{0xff}, size-off)
		if n, err := g.ReadAt(buf, int64(off)); err != nil || n != len(buf) || !bytes.Equal(buf, want[off:]) {
			t.Fatalf("read at %d: n=%d err=%v, differs at %d", off, n, err, firstDiff(buf, want[off:]))
		}
	}
}

// streamReader writes size random bytes to /f of a new six-server cluster
// through one client and opens the file with another (fresh caches, as a
// reader elsewhere), closing it when the test ends.
func streamReader(t *testing.T, opt Options, size int) (*cluster, *Client, *File, []byte) {
	t.Helper()
	cl := newCluster(t, 6)
	want := writeRandom(t, cl.client(opt), "/f", size)
	c := cl.client(opt)
	f, err := c.OpenPath(context.Background(), "/f")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return cl, c, f, want
}
