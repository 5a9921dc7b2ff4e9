package local_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/local"
)

// unsynced counts the buffered shards not yet durable on c's chunkservers.
func unsynced(t *testing.T, c *local.Cluster) int {
	t.Helper()
	n := 0
	for i := range c.ChunkserverCount() {
		d, ok := c.Chunkserver(i).Store().(*store.Disk)
		if !ok {
			t.Fatalf("chunkserver %d has no disk store", i)
		}
		n += d.Unsynced()
	}
	return n
}

// TestFlushInterval: the cluster's chunkservers take their background flush
// interval from the config. With it off, shards written buffered stay
// unsynced until a Sync; with a short one they become durable on their own.
func TestFlushInterval(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := bytes.Repeat([]byte("dockyard"), 1<<20) // two chunks

	off := startCluster(t, local.Config{FlushInterval: -1})
	f, err := off.FS.CreateFile(ctx, "/f", 0o644, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if unsynced(t, off) == 0 {
		t.Fatal("no buffered shards after a write with the background flush off")
	}
	if err := f.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if n := unsynced(t, off); n != 0 {
		t.Fatalf("%d shards unsynced after File.Sync", n)
	}
	f.Close()

	short := startCluster(t, local.Config{FlushInterval: 50 * time.Millisecond})
	if _, err := short.FS.WriteFile(ctx, "/f", bytes.NewReader(data), 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for unsynced(t, short) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d shards still unsynced 10 s after the write, with a 50 ms flush interval", unsynced(t, short))
		}
		time.Sleep(20 * time.Millisecond)
	}
}
