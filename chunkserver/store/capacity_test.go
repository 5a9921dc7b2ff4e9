package store

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"
)

// Within a statfs answer's lifetime the store's own writes move bytes from
// free to used, so the capacity it reports (used + free) stays put while
// Used grows by each shard file: the write path does not ask the file system
// on every Put, and nothing it does makes the cached answer wrong.
func TestDiskCapacityAcrossPuts(t *testing.T) {
	d, err := OpenDisk(t.TempDir(), 0, WithoutSync())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	// However slow the machine, the statfs answer outlives the test.
	d.freeMu.Lock()
	d.freeTTL = time.Hour
	d.freeMu.Unlock()
	before, err := d.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.Put(capName(0), bytes.Repeat([]byte{7}, 1<<20)); err != nil {
		t.Fatal(err)
	}
	after, err := d.Usage()
	if err != nil {
		t.Fatal(err)
	}
	if want := (shardHeader{size: 1 << 20, off: alignedDataOffset}).fileSize(); after.Used-before.Used != want || after.Shards != before.Shards+1 {
		t.Errorf("Usage after a 1 MiB Put: used %d -> %d, shards %d -> %d; want +%d bytes, +1 shard",
			before.Used, after.Used, before.Shards, after.Shards, want)
	}
	if after.Capacity != before.Capacity {
		t.Errorf("capacity moved from %d to %d across one Put of our own", before.Capacity, after.Capacity)
	}
	if err := d.Delete(capName(0)); err != nil {
		t.Fatal(err)
	}
	if u, err := d.Usage(); err != nil || u.Capacity != before.Capacity || u.Used != before.Used {
		t.Errorf("Usage after the Delete = %+v, %v; want capacity %d, used %d", u, err, before.Capacity, before.Used)
	}
}

// A configured limit still refuses a Put that would pass it, and room a
// Delete frees is usable at once.
func TestDiskLimitWithCachedFreeSpace(t *testing.T) {
	d, err := OpenDisk(t.TempDir(), 3<<20, WithoutSync())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	data := bytes.Repeat([]byte{9}, 1<<20)
	for i := range 2 {
		if _, err := d.Put(capName(i), data); err != nil {
			t.Fatalf("Put %d within the limit: %v", i, err)
		}
	}
	if _, err := d.Put(capName(2), data); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("third 1 MiB Put into a 3 MiB store = %v, want ErrNoSpace", err)
	}
	if err := d.Delete(capName(0)); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Put(capName(2), data); err != nil {
		t.Fatalf("Put after a Delete freed room: %v", err)
	}
}

func capName(i int) string { return fmt.Sprintf("%016x.0", i+1) }
