package store_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/chunkserver/store/storetest"
)

func TestDiskConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, capacity int64) storetest.Harness {
		dir := t.TempDir()
		d := openDisk(t, dir, capacity)
		return storetest.Harness{
			Store:     d,
			Corrupt:   func(name string, off int64) error { return flipByte(d.Path(name), store.HeaderSize+off) },
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
			Corrupt:   func(name string, off int64) error { return flipByte(d.Path(name), store.HeaderSize+off) },
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
			Corrupt:   func(name string, off int64) error { return flipByte(d.Path(name), store.HeaderSize+off) },
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
