package fuse

import (
	"bytes"
	"context"
	"syscall"
	"testing"

	"github.com/dockyard/dockyard/metaserver"
	msserver "github.com/dockyard/dockyard/metaserver/server"
)

// TestInterruptedMetadataCallsFinish checks that a namespace call whose
// kernel request was interrupted (its context cancelled) still runs and
// reports what really happened, instead of EINTR for a change that was made.
func TestInterruptedMetadataCallsFinish(t *testing.T) {
	api := uninterrupted{msserver.NewMemory().API()}
	interrupted, cancel := context.WithCancel(context.Background())
	cancel()

	a, err := api.Create(interrupted, metaserver.CreateIn{Parent: metaserver.RootIno, Name: "f", Mode: syscall.S_IFREG | 0o644})
	if err != nil {
		t.Fatalf("create after an interrupt: %v", err)
	}
	if got, err := api.Lookup(interrupted, metaserver.RootIno, "f"); err != nil || got.Ino != a.Ino {
		t.Fatalf("lookup after an interrupt: %+v, %v", got, err)
	}
	if err := api.Rename(interrupted, metaserver.RootIno, "f", metaserver.RootIno, "g", 0); err != nil {
		t.Fatalf("rename after an interrupt: %v", err)
	}
	if err := api.Unlink(interrupted, metaserver.RootIno, "g"); err != nil {
		t.Fatalf("unlink after an interrupt: %v", err)
	}
	if _, err := api.Lookup(interrupted, metaserver.RootIno, "g"); !isNotFound(err) {
		t.Fatalf("lookup of the unlinked name: %v, want ENOENT", err)
	}
	if got := toErrno(context.Canceled); got != syscall.EINTR {
		t.Fatalf("data-path cancellation maps to %v, want EINTR", got)
	}
}

// TestInterruptedFlushCommits: close(2) of a descriptor with writes still
// buffered, whose FLUSH the kernel interrupted (any signal to the closing
// thread, a Go runtime's own among them), still commits the data and
// succeeds. close has no retry: EINTR there reads as lost data.
func TestInterruptedFlushCommits(t *testing.T) {
	c := newCluster(t)
	client := c.client(t)
	root, _ := NewRoot(client, Options{})
	ctx := context.Background()
	f, err := client.CreateFile(ctx, "/f", 0o644, true)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := bytes.Repeat([]byte("flushed "), 3<<17)
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	h := &handle{n: &node{m: root.(*node).m, ino: f.Ino()}, f: f}
	interrupted, cancel := context.WithCancel(ctx)
	cancel()
	if errno := h.Flush(interrupted); errno != 0 {
		t.Fatalf("flush after an interrupt: %v", errno)
	}
	a, err := client.Meta().GetAttr(ctx, f.Ino())
	if err != nil || a.Size != uint64(len(data)) {
		t.Fatalf("after the flush the metaserver has %+v, %v; want %d bytes committed", a, err, len(data))
	}
}
