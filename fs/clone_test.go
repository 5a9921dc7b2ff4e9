package fs

import (
	"bytes"
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/dockyard/dockyard/metaserver"
)

// TestCloneKeepsBytesWhileEitherSideChanges writes a tree, clones it and
// then overwrites, truncates and removes files on one side at a time,
// reading every file back through a fresh client each time: the bytes of
// the other side never move.
func TestCloneKeepsBytesWhileEitherSideChanges(t *testing.T) {
	ctx := context.Background()
	opt := Options{ChunkSize: testChunk}
	rc := newRealCluster(t, 6, -1)
	c := rc.client(opt)
	big := randBytes(21, 3*testChunk+777) // four chunks, the last one short
	small := randBytes(22, 1000)
	if _, err := c.MkdirAll(ctx, "/src/d", 0o755); err != nil {
		t.Fatal(err)
	}
	for p, b := range map[string][]byte{"/src/big": big, "/src/d/small": small} {
		if _, err := c.WriteFile(ctx, p, bytes.NewReader(b), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	// A write not yet committed when the clone is taken is not in it.
	f, err := c.OpenPath(ctx, "/src/d/small")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt([]byte("late"), 0); err != nil {
		t.Fatal(err)
	}

	a, err := c.Clone(ctx, "/src", "/dst")
	if err != nil {
		t.Fatal(err)
	}
	if !a.IsDir() {
		t.Fatalf("clone root: %+v", a)
	}
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, rc.client(opt), "/dst/d/small"); !bytes.Equal(got, small) {
		t.Fatalf("the clone holds a write committed after it: %q...", got[:8])
	}
	if got := readAll(t, rc.client(opt), "/src/d/small"); !bytes.HasPrefix(got, []byte("late")) {
		t.Fatalf("the source lost its own write: %q...", got[:8])
	}

	// Change the source: overwrite across a chunk boundary, truncate into
	// the second chunk, remove the small file.
	sf, err := c.OpenPath(ctx, "/src/big")
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	if _, err := sf.WriteAt(randBytes(23, testChunk), testChunk/2); err != nil {
		t.Fatal(err)
	}
	if err := sf.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if err := sf.Truncate(ctx, testChunk+10); err != nil {
		t.Fatal(err)
	}
	if err := c.Remove(ctx, "/src/d/small"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, rc.client(opt), "/dst/big"); !bytes.Equal(got, big) {
		t.Fatalf("clone after the source changed: differ at %d of %d", firstDiff(got, big), len(big))
	}
	srcNow := readAll(t, rc.client(opt), "/src/big")
	if len(srcNow) != testChunk+10 {
		t.Fatalf("source is %d bytes after its truncate", len(srcNow))
	}

	// Change the clone: the source stays as it is now.
	df, err := c.OpenPath(ctx, "/dst/big")
	if err != nil {
		t.Fatal(err)
	}
	defer df.Close()
	if _, err := df.WriteAt([]byte("clone side"), 5); err != nil {
		t.Fatal(err)
	}
	if err := df.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, rc.client(opt), "/src/big"); !bytes.Equal(got, srcNow) {
		t.Fatalf("source changed with the clone: differ at %d", firstDiff(got, srcNow))
	}
	want := bytes.Clone(big)
	copy(want[5:], "clone side")
	if got := readAll(t, rc.client(opt), "/dst/big"); !bytes.Equal(got, want) {
		t.Fatalf("clone after its own write: differ at %d", firstDiff(got, want))
	}
	if got := readAll(t, rc.client(opt), "/dst/d/small"); !bytes.Equal(got, small) {
		t.Fatal("the clone's small file changed")
	}
	// Once the source is gone the clone still reads whole.
	if err := c.RemoveAll(ctx, "/src"); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, rc.client(opt), "/dst/big"); !bytes.Equal(got, want) {
		t.Fatalf("clone after the source was removed: differ at %d", firstDiff(got, want))
	}
}

func TestCloneErrors(t *testing.T) {
	ctx := context.Background()
	rc := newRealCluster(t, 6, -1)
	c := rc.client(Options{ChunkSize: testChunk})
	if _, err := c.MkdirAll(ctx, "/a/b", 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		src, dst string
		want     syscall.Errno
	}{
		{"/a", "/a/b", syscall.EEXIST},
		{"/a", "/a/b/c", syscall.EINVAL}, // into itself
		{"/nope", "/x", syscall.ENOENT},
		{"/a", "/nope/x", syscall.ENOENT},
		{"a", "/x", syscall.EINVAL}, // relative
		{"/a", "/", syscall.EINVAL},
	}
	for _, tc := range cases {
		_, err := c.Clone(ctx, tc.src, tc.dst)
		if !errors.Is(err, tc.want) {
			t.Fatalf("clone %s %s: %v, want %v", tc.src, tc.dst, err, tc.want)
		}
	}
}

// TestMetaCacheCloneTree: a mount's own clone shows at once, in the name
// it made and in the parent's link count, from a cache that held both.
func TestMetaCacheCloneTree(t *testing.T) {
	r := newCacheRig(t, MetaCacheOptions{})
	ctx := context.Background()
	dir, err := r.c.Create(ctx, metaserver.CreateIn{Parent: metaserver.RootIno, Name: "d", Mode: syscall.S_IFDIR | 0o755, Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	r.caughtUp(t)
	before, err := r.c.GetAttr(ctx, metaserver.RootIno)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.c.GetAttr(ctx, metaserver.RootIno); err != nil { // now cached
		t.Fatal(err)
	}
	gate := r.feed.hold() // the feed cannot be what refreshes the cache
	a, err := r.c.CloneTree(ctx, dir.Ino, metaserver.RootIno, "copy")
	if err != nil {
		t.Fatal(err)
	}
	root, err := r.c.GetAttr(ctx, metaserver.RootIno)
	if err != nil || root.Nlink != before.Nlink+1 {
		t.Fatalf("parent after an own clone: %+v %v (before %+v)", root, err, before)
	}
	lookups := r.inner.lookups.Load()
	if got, err := r.c.Lookup(ctx, metaserver.RootIno, "copy"); err != nil || got != a {
		t.Fatalf("lookup of the clone: %+v %v, want %+v", got, err, a)
	}
	if r.inner.lookups.Load() != lookups {
		t.Fatal("the clone's name was not cached from its reply")
	}
	close(gate)
}
