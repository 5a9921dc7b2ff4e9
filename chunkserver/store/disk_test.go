package store_test

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/chunkserver/store/storetest"
)

func TestDiskConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, capacity int64) storetest.Harness {
		dir := t.TempDir()
		d := openDisk(t, dir, capacity)
		return storetest.Harness{
			Store:     d,
			Corrupt:   func(name string, off int64) error { return flipData(d.Path(name), off) },
			Leftovers: func() ([]string, error) { return tempFiles(dir) },
		}
	})
}

func openDisk(t *testing.T, dir string, capacity int64) *store.Disk {
	t.Helper()
	d, err := store.OpenDisk(dir, capacity)
	if err != nil {
		t.Fatalf("OpenDisk: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// flipData damages byte off of a shard's data in place, wherever its file
// format puts the data.
func flipData(path string, off int64) error {
	at, err := store.ShardDataOffset(path)
	if err != nil {
		return err
	}
	return flipByte(path, at+off)
}

// flipByte damages one byte of a file in place, as a failing disk would.
func flipByte(path string, off int64) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		return err
	}
	b[0] ^= 0xff
	_, err = f.WriteAt(b, off)
	return err
}

func tempFiles(dir string) ([]string, error) {
	var left []string
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if strings.Contains(e.Name(), ".tmp.") {
			left = append(left, path)
		}
		return nil
	})
	return left, err
}

func TestDiskNoSyncConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, capacity int64) storetest.Harness {
		dir := t.TempDir()
		d, err := store.OpenDisk(dir, capacity, store.WithoutSync())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return storetest.Harness{
			Store:     d,
			Corrupt:   func(name string, off int64) error { return flipData(d.Path(name), off) },
			Leftovers: func() ([]string, error) { return tempFiles(dir) },
		}
	})
}

func TestDiskGroupCommitConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, capacity int64) storetest.Harness {
		dir := t.TempDir()
		d, err := store.OpenDisk(dir, capacity, store.WithGroupCommit())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return storetest.Harness{
			Store:     d,
			Corrupt:   func(name string, off int64) error { return flipData(d.Path(name), off) },
			Leftovers: func() ([]string, error) { return tempFiles(dir) },
		}
	})
}

func TestDiskReopen(t *testing.T) {
	dir := t.TempDir()
	d := openDisk(t, dir, 0)
	data := bytes.Repeat([]byte("dockyard"), store.BlockSize/4)
	name := "00000000000000ff.4"
	if _, err := d.Put(name, data); err != nil {
		t.Fatal(err)
	}
	want, _ := d.Usage()
	d.Close()

	// A crash mid-Put leaves a temporary file; reopening removes it.
	stray := d.Path(name) + ".tmp.0123456789abcdef"
	if err := os.WriteFile(stray, []byte("half a shard"), 0o644); err != nil {
		t.Fatal(err)
	}
	d2 := openDisk(t, dir, 0)
	if _, err := os.Stat(stray); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("leftover temporary file survived OpenDisk: %v", err)
	}
	got, _ := d2.Usage()
	if got.Shards != want.Shards || got.Used != want.Used {
		t.Errorf("Usage after reopen = %+v, want %+v", got, want)
	}
	p := make([]byte, len(data))
	if _, err := d2.ReadAt(name, p, 0); err != nil || !bytes.Equal(p, data) {
		t.Fatalf("ReadAt after reopen: %v, equal %v", err, bytes.Equal(p, data))
	}
}

func TestDiskDamagedHeaderAndTrailer(t *testing.T) {
	dir := t.TempDir()
	d := openDisk(t, dir, 0)
	data := bytes.Repeat([]byte{7}, 3*store.BlockSize)
	hdr, trl, short := "0000000000000001.0", "0000000000000001.1", "0000000000000001.2"
	for _, n := range []string{hdr, trl, short} {
		if _, err := d.Put(n, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := flipByte(d.Path(hdr), 20); err != nil { // inside the data size field
		t.Fatal(err)
	}
	if err := flipByte(d.Path(trl), store.HeaderSize+int64(len(data))+9); err != nil { // second block's checksum
		t.Fatal(err)
	}
	if err := os.Truncate(d.Path(short), store.HeaderSize+int64(len(data))); err != nil { // trailer gone
		t.Fatal(err)
	}
	p := make([]byte, 10)
	if _, err := d.ReadAt(hdr, p, 0); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("ReadAt with a damaged header = %v, want ErrCorrupt", err)
	}
	if _, err := d.ReadAt(trl, p, store.BlockSize); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("ReadAt of a block whose stored checksum is damaged = %v, want ErrCorrupt", err)
	}
	if _, err := d.ReadAt(trl, p, 0); err != nil {
		t.Errorf("ReadAt of an intact block next to it: %v", err)
	}
	if _, err := d.ReadAt(short, p, 0); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("ReadAt of a truncated file = %v, want ErrCorrupt", err)
	}
	d.Close()

	// After a restart the damaged shards are still listed, and still refuse
	// to be read, so the scrubber reports them instead of losing track.
	d2 := openDisk(t, dir, 0)
	u, _ := d2.Usage()
	if u.Shards != 3 {
		t.Errorf("Usage.Shards after reopen = %d, want 3", u.Shards)
	}
	for _, n := range []string{hdr, short} {
		if _, err := d2.Stat(n); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("Stat(%s) after reopen = %v, want ErrCorrupt", n, err)
		}
		if _, err := d2.ReadAt(n, p, 0); !errors.Is(err, store.ErrCorrupt) {
			t.Errorf("ReadAt(%s) after reopen = %v, want ErrCorrupt", n, err)
		}
	}
}

// waitUntil polls cond until it holds or the deadline passes.
func waitUntil(t *testing.T, what string, within time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func openDiskWith(t *testing.T, dir string, opts ...store.DiskOption) *store.Disk {
	t.Helper()
	d, err := store.OpenDisk(dir, 0, opts...)
	if err != nil {
		t.Fatalf("OpenDisk: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func TestDiskSyncEmptiesUnsynced(t *testing.T) {
	d := openDiskWith(t, t.TempDir(), store.WithFlushInterval(-1))
	var synced atomic.Int32
	store.SetSyncFileHook(d, func(f *os.File) error { synced.Add(1); return f.Sync() })
	for i := range 5 {
		if _, err := d.PutBuffered(fmt.Sprintf("00000000000000aa.%d", i), bytes.Repeat([]byte{byte(i)}, 1000)); err != nil {
			t.Fatal(err)
		}
	}
	// A durable Put is never pending.
	if _, err := d.Put("00000000000000bb.0", []byte("durable")); err != nil {
		t.Fatal(err)
	}
	if n := d.Unsynced(); n != 5 {
		t.Fatalf("Unsynced after 5 buffered Puts = %d, want 5", n)
	}
	if err := d.Sync(); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	if n := d.Unsynced(); n != 0 {
		t.Errorf("Unsynced after Sync = %d, want 0", n)
	}
	if n := synced.Load(); n != 5 {
		t.Errorf("Sync made %d files durable, want the 5 buffered ones", n)
	}
	// Nothing buffered: no file is touched.
	if err := d.Sync(); err != nil || synced.Load() != 5 {
		t.Errorf("Sync with nothing buffered = %v after %d file syncs, want nil after 5", err, synced.Load())
	}
}

func TestDiskBackgroundFlush(t *testing.T) {
	const every = 50 * time.Millisecond
	d := openDiskWith(t, t.TempDir(), store.WithFlushInterval(every))
	for i := range 3 {
		if _, err := d.PutBuffered(fmt.Sprintf("00000000000000cc.%d", i), []byte("buffered")); err != nil {
			t.Fatal(err)
		}
	}
	// Within the interval plus a generous margin for a loaded machine.
	waitUntil(t, "background flush emptied the unsynced set", 20*every+5*time.Second, func() bool { return d.Unsynced() == 0 })
}

func TestDiskFlushErrorReachesSync(t *testing.T) {
	d := openDiskWith(t, t.TempDir(), store.WithFlushInterval(-1))
	var fail atomic.Bool
	fail.Store(true)
	store.SetSyncFileHook(d, func(f *os.File) error {
		if fail.Load() {
			return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: syscall.EIO}
		}
		return f.Sync()
	})
	name := "00000000000000dd.1"
	if _, err := d.PutBuffered(name, []byte("will fail to flush")); err != nil {
		t.Fatal(err)
	}
	err := d.Sync()
	if !errors.Is(err, syscall.EIO) || !strings.Contains(err.Error(), name) {
		t.Fatalf("Sync with a failing fdatasync = %v, want EIO naming %s", err, name)
	}
	// Not durable, so still pending; the next round tries again.
	if n := d.Unsynced(); n != 1 {
		t.Fatalf("Unsynced after a failed Sync = %d, want 1", n)
	}
	fail.Store(false)
	if err := d.Sync(); err != nil {
		t.Fatalf("Sync once the disk recovers: %v", err)
	}
	if n := d.Unsynced(); n != 0 {
		t.Errorf("Unsynced after a good Sync = %d, want 0", n)
	}
}

func TestDiskBackgroundFlushError(t *testing.T) {
	errs := make(chan error, 16)
	d := openDiskWith(t, t.TempDir(), store.WithFlushInterval(20*time.Millisecond),
		store.WithFlushErrorHandler(func(err error) {
			select {
			case errs <- err:
			default:
			}
		}))
	store.SetSyncFileHook(d, func(f *os.File) error {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: syscall.EIO}
	})
	if _, err := d.PutBuffered("00000000000000de.0", []byte("x")); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errs:
		if !errors.Is(err, syscall.EIO) {
			t.Errorf("background flush reported %v, want EIO", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a failing background flush was never reported")
	}
	store.SetSyncFileHook(d, func(f *os.File) error { return f.Sync() })
	waitUntil(t, "background flush recovered", 10*time.Second, func() bool { return d.Unsynced() == 0 })
}

func TestDiskCloseFlushes(t *testing.T) {
	dir := t.TempDir()
	d, err := store.OpenDisk(dir, 0, store.WithFlushInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	var synced atomic.Int32
	store.SetSyncFileHook(d, func(f *os.File) error { synced.Add(1); return f.Sync() })
	for i := range 3 {
		if _, err := d.PutBuffered(fmt.Sprintf("00000000000000ef.%d", i), []byte("flushed at close")); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if n := synced.Load(); n != 3 {
		t.Errorf("Close made %d buffered files durable, want 3", n)
	}
}

// TestDiskBufferedPowerLoss plays what a power cut does to buffered shards
// that no flush reached: the rename survived but the data did not, fully or
// in part. After the restart each such shard is indexed as corrupt (so the
// scrubber reports it and the metaserver rebuilds it), never as good.
func TestDiskBufferedPowerLoss(t *testing.T) {
	// A small shard is written as format version 1 (data right after the
	// header), a large one as version 2 (data one page in).
	for _, size := range []int{3 * store.BlockSize, 5 * store.BlockSize} {
		t.Run(fmt.Sprint(size), func(t *testing.T) { testDiskBufferedPowerLoss(t, size) })
	}
}

func testDiskBufferedPowerLoss(t *testing.T, size int) {
	dir := t.TempDir()
	d, err := store.OpenDisk(dir, 0, store.WithFlushInterval(-1))
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("lost in the page cache!!"), size/24)
	// at is where the data starts in p's file.
	at := func(p string) int64 {
		off, err := store.ShardDataOffset(p)
		if err != nil {
			t.Fatal(err)
		}
		return off
	}
	cuts := map[string]func(path string) error{
		"00000000000000f0.0": func(p string) error { return os.Truncate(p, 0) },
		"00000000000000f0.1": func(p string) error { return os.Truncate(p, at(p)) },
		"00000000000000f0.2": func(p string) error { return os.Truncate(p, at(p)+int64(len(data))/2) },
		"00000000000000f0.3": func(p string) error { return os.Truncate(p, at(p)+int64(len(data))) },
		// Size kept, data never written: the file reads back as zeros.
		"00000000000000f0.4": func(p string) error {
			return writeAt(p, make([]byte, len(data)), at(p))
		},
		// Nothing reached the disk but the size: even the header is zeros.
		"00000000000000f0.5": func(p string) error {
			fi, err := os.Stat(p)
			if err != nil {
				return err
			}
			return writeAt(p, make([]byte, fi.Size()), 0)
		},
	}
	for n := range cuts {
		if _, err := d.PutBuffered(n, data); err != nil {
			t.Fatal(err)
		}
	}
	good := "00000000000000f1.0"
	if _, err := d.PutBuffered(good, data); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	for n, cut := range cuts {
		if err := cut(d.Path(n)); err != nil {
			t.Fatal(err)
		}
	}
	d2 := openDisk(t, dir, 0)
	p := make([]byte, len(data))
	for n := range cuts {
		_, serr := d2.Stat(n)
		_, rerr := d2.ReadAt(n, p, 0)
		if !errors.Is(rerr, store.ErrCorrupt) {
			t.Errorf("%s: ReadAt after restart = %v, want ErrCorrupt", n, rerr)
		}
		if serr == nil && !errors.Is(rerr, store.ErrCorrupt) {
			t.Errorf("%s: indexed as good after losing its data", n)
		}
	}
	if _, err := d2.ReadAt(good, p, 0); err != nil || !bytes.Equal(p, data) {
		t.Errorf("the intact shard after restart: %v", err)
	}
	if u, _ := d2.Usage(); u.Shards != len(cuts)+1 {
		t.Errorf("Usage.Shards after restart = %d, want %d (damaged shards stay listed)", u.Shards, len(cuts)+1)
	}
}

func writeAt(path string, b []byte, off int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(b, off); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Stores read both file formats whichever one they write: a large shard
// written in the packed format (version 1, as every store wrote before the
// aligned one) reads back from a store that writes version 2, and the other
// way round, across a restart.
func TestDiskReadsBothFormats(t *testing.T) {
	data := bytes.Repeat([]byte("both formats"), 5*store.BlockSize/12)
	for _, tc := range []struct {
		name        string
		write, read []store.DiskOption
		wantOffset  int64
	}{
		{"packed then aligned", []store.DiskOption{store.WithPackedFormat()}, nil, store.HeaderSize},
		{"aligned then packed", nil, []store.DiskOption{store.WithPackedFormat()}, 4096},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			d, err := store.OpenDisk(dir, 0, tc.write...)
			if err != nil {
				t.Fatal(err)
			}
			const name = "00000000000000a0.0"
			sum, err := d.Put(name, data)
			if err != nil {
				t.Fatal(err)
			}
			if off, err := store.ShardDataOffset(d.Path(name)); err != nil || off != tc.wantOffset {
				t.Fatalf("data offset %d, %v; want %d", off, err, tc.wantOffset)
			}
			d.Close()
			d2, err := store.OpenDisk(dir, 0, tc.read...)
			if err != nil {
				t.Fatal(err)
			}
			defer d2.Close()
			info, err := d2.Stat(name)
			if err != nil || info.Sum != sum || info.Size != int64(len(data)) {
				t.Fatalf("Stat after reopen: %+v, %v; want size %d sum %x", info, err, len(data), sum)
			}
			p := make([]byte, 1000)
			if _, err := d2.ReadAt(name, p, 3*store.BlockSize+17); err != nil || !bytes.Equal(p, data[3*store.BlockSize+17:][:1000]) {
				t.Fatalf("ReadAt after reopen: %v, equal %v", err, bytes.Equal(p, data[3*store.BlockSize+17:][:1000]))
			}
			if err := flipData(d2.Path(name), 3*store.BlockSize+17); err != nil {
				t.Fatal(err)
			}
			if _, err := d2.ReadAt(name, p, 3*store.BlockSize); !errors.Is(err, store.ErrCorrupt) {
				t.Errorf("ReadAt of a damaged block = %v, want ErrCorrupt", err)
			}
		})
	}
}
