package fuse

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/dockyard/dockyard/metaserver"
)

func newTestFileCache(t *testing.T, budget int64) *fileCache {
	t.Helper()
	c, err := newFileCache(t.TempDir(), budget, 1, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.close() })
	return c
}

// fillAll feeds data to c as READ replies of piece bytes, in the order of
// the offsets given (pieces are data[off:off+piece]), and waits for the
// copy's writer to be done with them.
func fillAll(c *fileCache, ino metaserver.Ino, gen uint64, data []byte, piece int, offs ...int) {
	var wg sync.WaitGroup
	for _, off := range offs {
		end := min(off+piece, len(data))
		// Two buffers per reply, as lent cache blocks come.
		mid := off + (end-off)/2
		wg.Add(1)
		if !c.fill(ino, gen, int64(len(data)), int64(off), [][]byte{data[off:mid], data[mid:end]}, end-off, wg.Done) {
			wg.Done()
		}
	}
	wg.Wait()
}

// fillOne is fillAll for one reply of bytes at off in a file of size.
func fillOne(c *fileCache, ino metaserver.Ino, size, off int64, b []byte) {
	var wg sync.WaitGroup
	wg.Add(1)
	if !c.fill(ino, 1, size, off, [][]byte{b}, len(b), wg.Done) {
		wg.Done()
	}
	wg.Wait()
}

func readPinned(t *testing.T, c *fileCache, ino metaserver.Ino, gen uint64) ([]byte, *fileCopy) {
	t.Helper()
	cp, f := c.pin(ino, gen)
	if cp == nil {
		return nil, nil
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b, cp
}

func TestFileCopyRanges(t *testing.T) {
	cp := &fileCopy{size: 100 << 20}
	for _, s := range []span{{10, 20}, {30, 40}, {0, 5}, {5, 10}, {20, 30}, {50, 60}} {
		cp.add(s.lo, s.hi)
	}
	if want := []span{{0, 40}, {50, 60}}; !slices.Equal(cp.filled, want) {
		t.Fatalf("filled %v, want %v", cp.filled, want)
	}
	if !cp.covered(0, 40) || cp.covered(35, 55) || !cp.covered(52, 58) {
		t.Fatal("covered answers wrong")
	}
	cp.add(39, 51)
	if want := []span{{0, 60}}; !slices.Equal(cp.filled, want) {
		t.Fatalf("filled %v, want %v", cp.filled, want)
	}
	if err := cp.admit(60+copyWindow, 61+copyWindow); err != nil {
		t.Fatalf("a read just inside the window: %v", err)
	}
	if err := cp.admit(61+copyWindow, 62+copyWindow); err == nil {
		t.Fatal("a read past the window was admitted")
	}
	if err := cp.admit(cp.size-1, cp.size+1); err == nil {
		t.Fatal("a read past the end was admitted")
	}
}

// TestFileCacheCompletesOutOfOrder: replies that arrive out of order within
// the window complete the copy, and a pinned copy reads back as the file.
func TestFileCacheCompletesOutOfOrder(t *testing.T) {
	c := newTestFileCache(t, 1<<30)
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096*3+7)
	const piece = 16 << 10
	fillAll(c, 7, 1, data, piece, piece, 0, 3*piece, 2*piece)
	if got, _ := readPinned(t, c, 7, 1); got != nil {
		t.Fatal("pinned an incomplete copy")
	}
	var offs []int
	for off := 4 * piece; off < len(data); off += piece {
		offs = append(offs, off)
	}
	fillAll(c, 7, 1, data, piece, offs...)
	got, cp := readPinned(t, c, 7, 1)
	if cp == nil || !bytes.Equal(got, data) {
		t.Fatalf("copy complete %v, equal %v", cp != nil, bytes.Equal(got, data))
	}
	c.unpin(cp)
	if _, done := c.stats(); done != 1 {
		t.Fatalf("%d copies completed", done)
	}
}

// TestFileCacheDropsCopies: a copy of another generation, one whose
// writes fail and one of a file opened for writing are given up, and their
// files removed.
func TestFileCacheDropsCopies(t *testing.T) {
	c := newTestFileCache(t, 1<<30)
	data := bytes.Repeat([]byte{1, 2, 3}, 100<<10)
	fillAll(c, 1, 1, data, len(data), 0)
	if got, cp := readPinned(t, c, 1, 1); cp == nil || !bytes.Equal(got, data) {
		t.Fatal("no complete copy")
	} else {
		c.unpin(cp)
	}
	path := c.copies[1].path
	if got, _ := readPinned(t, c, 1, 2); got != nil {
		t.Fatal("a copy of generation 1 served generation 2")
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("the stale copy's file is still there: %v", err)
	}

	// A write that fails.
	fillAll(c, 2, 1, data, 1<<10, 0)
	cp := c.copies[2]
	ro, err := os.Open(cp.path)
	if err != nil {
		t.Fatal(err)
	}
	cp.f.Close()
	cp.f = ro
	fillAll(c, 2, 1, data, len(data), 1<<10)
	if c.copies[2] != nil || !cp.dropped {
		t.Fatal("a copy whose write failed was kept")
	}

	// A writer opens: the copy goes, and none starts while it is open.
	fillAll(c, 3, 1, data, 1<<10, 0)
	c.addWriter(3)
	fillAll(c, 3, 1, data, len(data), 0)
	if c.copies[3] != nil {
		t.Fatal("a copy was kept or made while the file is open for writing")
	}
	c.removeWriter(3)
	fillAll(c, 3, 1, data, len(data), 0)
	if got, cp := readPinned(t, c, 3, 1); cp == nil || !bytes.Equal(got, data) {
		t.Fatal("no copy after the writer closed")
	} else {
		c.unpin(cp)
	}
	if used, _ := c.stats(); used != int64(len(data)) {
		t.Fatalf("%d bytes counted, want one copy's %d", used, len(data))
	}
}

// TestFileCacheBudget: a new copy evicts the least recently used one that
// no passthrough reader holds; when every copy is held, nothing is copied.
func TestFileCacheBudget(t *testing.T) {
	data := bytes.Repeat([]byte{9}, 1<<20)
	c := newTestFileCache(t, 2<<20)
	fillAll(c, 1, 1, data, len(data), 0)
	fillAll(c, 2, 1, data, len(data), 0)
	_, held := readPinned(t, c, 1, 1) // 1 is now the most recently used, and held
	fillAll(c, 3, 1, data, len(data), 0)
	if c.copies[2] != nil || c.copies[1] == nil || c.copies[3] == nil {
		t.Fatalf("after a third copy: copies of %v, want 1 (held) and 3", keys(c.copies))
	}
	_, held3 := readPinned(t, c, 3, 1)
	fillAll(c, 4, 1, data, len(data), 0)
	if c.copies[4] != nil {
		t.Fatal("a copy was made though every copy in the budget is held")
	}
	c.unpin(held)
	c.unpin(held3)
	if used, _ := c.stats(); used != 2<<20 {
		t.Fatalf("%d bytes counted, want 2 MiB", used)
	}
}

// TestFileCacheSweepsDeadMounts: copies left by a mount whose process is
// gone, or by an earlier cache of this process, are removed; the directory
// of another running mount is kept.
func TestFileCacheSweepsDeadMounts(t *testing.T) {
	dir := t.TempDir()
	dead := filepath.Join(dir, "files", "999999999")
	live := filepath.Join(dir, "files", "1")
	own := filepath.Join(dir, "files", strconv.Itoa(os.Getpid()))
	for _, d := range []string{dead, live, own} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "5-1"), []byte("old"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	c, err := newFileCache(dir, 1<<20, 1, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(dead); !os.IsNotExist(err) {
		t.Fatalf("a dead mount's copies are still there: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Fatalf("a running process's directory was removed: %v", err)
	}
	if _, err := os.Stat(filepath.Join(own, "5-1")); !os.IsNotExist(err) {
		t.Fatalf("a copy of an earlier session survived: %v", err)
	}
	if err := c.close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "files", strconv.Itoa(os.Getpid()))); !os.IsNotExist(err) {
		t.Fatalf("the cache's own directory outlived close: %v", err)
	}
}

func keys(m map[metaserver.Ino]*fileCopy) []metaserver.Ino {
	var ks []metaserver.Ino
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// TestFileCacheGivenUpRestartsAtZero: once a reader's jump made us give a
// copy up, random reads near the start do not begin another one each; a
// new pass from offset 0 does.
func TestFileCacheGivenUpRestartsAtZero(t *testing.T) {
	c := newTestFileCache(t, 1<<40)
	const size = 2 * copyWindow
	piece := make([]byte, 4096)
	fillOne(c, 1, size, 8192, piece)
	if c.copies[1] == nil {
		t.Fatal("a read near the start began no copy")
	}
	fillOne(c, 1, size, size-4096, piece)
	if c.copies[1] != nil {
		t.Fatal("a jump past the window kept the copy")
	}
	fillOne(c, 1, size, 8192, piece)
	if c.copies[1] != nil {
		t.Fatal("a random read near the start began another copy")
	}
	fillOne(c, 1, size, 0, piece)
	if c.copies[1] == nil {
		t.Fatal("a read at offset 0 began no copy")
	}
}
