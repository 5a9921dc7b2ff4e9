package fs

import (
	"bytes"
	"context"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/dockyard/dockyard/metaserver"
)

// countingMeta counts the inode fetches made through it.
type countingMeta struct {
	*fakeMeta
	getInodes atomic.Int64
}

func (m *countingMeta) GetInode(ctx context.Context, ino metaserver.Ino) (metaserver.Inode, error) {
	m.getInodes.Add(1)
	return m.fakeMeta.GetInode(ctx, ino)
}

// TestOpenCreated checks that a file opened from its create's reply needs no
// second trip to the metaserver when it is empty, works like any open file,
// and that anything not known to be empty is fetched afresh.
func TestOpenCreated(t *testing.T) {
	cl := newCluster(t, 6)
	meta := &countingMeta{fakeMeta: cl.meta}
	opt := Options{ChunkSize: testChunk, Logger: discardLogger()}
	c := New(meta, cl.client(opt).shards, opt)
	ctx := context.Background()

	a, err := meta.Create(ctx, metaserver.CreateIn{Parent: metaserver.RootIno, Name: "new", Mode: syscall.S_IFREG | 0o644, Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	f, err := c.OpenCreated(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	if n := meta.getInodes.Load(); n != 0 {
		t.Fatalf("opening an empty created file fetched the inode %d times", n)
	}
	want := randBytes(7, testChunk+10)
	if _, err := f.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, c, "/new"); !bytes.Equal(got, want) {
		t.Fatalf("read back differs at %d", firstDiff(got, want))
	}

	// A non-empty file (a create that found one) is fetched: its extents
	// are not in the attributes.
	before := meta.getInodes.Load()
	st, err := c.Stat(ctx, "/new")
	if err != nil {
		t.Fatal(err)
	}
	g, err := c.OpenCreated(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if meta.getInodes.Load() == before {
		t.Fatal("a non-empty file was opened without fetching its inode")
	}
	buf := make([]byte, len(want))
	if _, err := g.ReadAt(buf, 0); err != nil || !bytes.Equal(buf, want) {
		t.Fatalf("read through the reopened file: %v", err)
	}

	// Not a regular file: refused as Open refuses it.
	d, err := meta.Create(ctx, metaserver.CreateIn{Parent: metaserver.RootIno, Name: "dir", Mode: syscall.S_IFDIR | 0o755})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.OpenCreated(ctx, d); err == nil {
		t.Fatal("opened a directory")
	}
}
