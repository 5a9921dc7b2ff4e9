package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"slices"
	"syscall"
	"testing"
	"time"

	ms "github.com/dockyard/dockyard/metaserver"
)

// cloneFixture is a tree with every kind of thing a clone must copy:
//
//	/src            dir 0750, xattr user.tag
//	/src/big        3 chunks, xattr user.k; also named /src/sub/hard
//	/src/sub/hard   hard link to big
//	/src/shared     1 chunk; also named /outside (a link leaving the tree)
//	/src/sym        symlink -> big
//	/src/empty      empty dir
//	/src/fifo       fifo
type cloneFixture struct {
	m      *Memory
	c      *ms.Client
	clk    *fakeClock
	src    ms.Ino
	big    ms.Ino
	shared ms.Ino
	chunks []ms.ChunkID // big's three, then shared's
}

func newCloneFixture(t *testing.T) *cloneFixture {
	t.Helper()
	ctx := context.Background()
	m, c, clk := newMem(t)
	addServers(t, c, 6)
	fx := &cloneFixture{m: m, c: c, clk: clk}
	src := mustCreate(t, c, ms.RootIno, "src", syscall.S_IFDIR|0o750)
	fx.src = src.Ino
	if err := c.SetXattr(ctx, src.Ino, "user.tag", []byte("tree"), 0); err != nil {
		t.Fatal(err)
	}
	big := mustCreate(t, c, src.Ino, "big", syscall.S_IFREG|0o640)
	fx.big = big.Ino
	for i := range 3 {
		ch := mustAlloc(t, c)
		fx.chunks = append(fx.chunks, ch.ID)
		off := uint64(i) * 4096
		if _, err := c.CommitExtents(ctx, big.Ino, []ms.Extent{{Off: off, Len: 4096, Chunk: ch.ID}}, nil, off+4096); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.SetXattr(ctx, big.Ino, "user.k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	sub := mustCreate(t, c, src.Ino, "sub", syscall.S_IFDIR|0o755)
	if _, err := c.Link(ctx, big.Ino, sub.Ino, "hard"); err != nil {
		t.Fatal(err)
	}
	shared := mustCreate(t, c, src.Ino, "shared", syscall.S_IFREG|0o644)
	fx.shared = shared.Ino
	ch := mustAlloc(t, c)
	fx.chunks = append(fx.chunks, ch.ID)
	if _, err := c.CommitExtents(ctx, shared.Ino, []ms.Extent{{Len: 1000, Chunk: ch.ID}}, nil, 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Link(ctx, shared.Ino, ms.RootIno, "outside"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Create(ctx, ms.CreateIn{Parent: src.Ino, Name: "sym", Mode: syscall.S_IFLNK | 0o777, Target: "big", Exclusive: true}); err != nil {
		t.Fatal(err)
	}
	mustCreate(t, c, src.Ino, "empty", syscall.S_IFDIR|0o700)
	mustCreate(t, c, src.Ino, "fifo", syscall.S_IFIFO|0o600)
	clk.advance(time.Hour) // so copied times and the clone's ctime differ
	return fx
}

func mustAlloc(t *testing.T, c *ms.Client) ms.Chunk {
	t.Helper()
	ch, err := c.AllocChunk(context.Background(), 4, 2, 1024, 4096, false)
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

func refs(t *testing.T, c *ms.Client, id ms.ChunkID) int {
	t.Helper()
	ch, err := c.GetChunk(context.Background(), id)
	if errors.Is(err, syscall.ENOENT) {
		return 0
	}
	if err != nil {
		t.Fatal(err)
	}
	return ch.Refs
}

func resolve(t *testing.T, c *ms.Client, p string) ms.Attr {
	t.Helper()
	a, err := c.ResolvePath(context.Background(), p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return a
}

// treeNode is what a clone must reproduce of one name: everything but the
// inode number and ctime.
type treeNode struct {
	Mode, Uid, Gid, Nlink uint32
	Size                  uint64
	Atime, Mtime          int64
	Target                string
	Xattrs                map[string]string
	Extents               []ms.Extent
}

// listTree maps every path under dir (relative) to its node, and the inode
// each path names.
func listTree(t *testing.T, c *ms.Client, dir ms.Ino) (map[string]treeNode, map[string]ms.Ino) {
	t.Helper()
	ctx := context.Background()
	nodes, inos := map[string]treeNode{}, map[string]ms.Ino{}
	var walk func(ms.Ino, string)
	walk = func(d ms.Ino, prefix string) {
		ents, err := c.ReadDir(ctx, d, "", 0, false)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			in, err := c.GetInode(ctx, e.Ino)
			if err != nil {
				t.Fatal(err)
			}
			x := map[string]string{}
			for k, v := range in.Xattrs {
				x[k] = string(v)
			}
			p := prefix + e.Name
			nodes[p] = treeNode{in.Mode, in.Uid, in.Gid, in.Nlink, in.Size, in.Atime, in.Mtime, in.Target, x, in.Extents}
			inos[p] = e.Ino
			if in.IsDir() {
				walk(e.Ino, p+"/")
			}
		}
	}
	walk(dir, "")
	return nodes, inos
}

func TestCloneTreeCopiesEverything(t *testing.T) {
	ctx := context.Background()
	fx := newCloneFixture(t)
	c := fx.c
	rootBefore := resolve(t, c, "/")
	srcBefore, err := c.GetInode(ctx, fx.src)
	if err != nil {
		t.Fatal(err)
	}

	a, err := c.CloneTree(ctx, fx.src, ms.RootIno, "dst")
	if err != nil {
		t.Fatal(err)
	}
	now := fx.clk.t.UnixNano()
	if !a.IsDir() || a.Mode != srcBefore.Mode || a.Uid != 1000 || a.Nlink != 4 || a.Ctime != now || a.Mtime != srcBefore.Mtime {
		t.Fatalf("clone root = %+v, source %+v", a, srcBefore.Attr)
	}
	if got := resolve(t, c, "/dst"); got != a {
		t.Fatalf("lookup of the clone = %+v, reply %+v", got, a)
	}
	if x, _ := c.GetXattr(ctx, a.Ino, "user.tag"); string(x) != "tree" {
		t.Fatalf("root xattr = %q", x)
	}
	root := resolve(t, c, "/")
	if root.Nlink != rootBefore.Nlink+1 || root.Mtime != now {
		t.Fatalf("destination parent after clone: %+v (before %+v)", root, rootBefore)
	}

	srcTree, srcInos := listTree(t, c, fx.src)
	dstTree, dstInos := listTree(t, c, a.Ino)
	// The one difference expected: shared has a name outside the source,
	// so its copy has one name only.
	want := maps.Clone(srcTree)
	sh := want["shared"]
	sh.Nlink = 1
	want["shared"] = sh
	if len(dstTree) != len(want) {
		t.Fatalf("clone lists %d names, want %d: %v", len(dstTree), len(want), slices.Sorted(maps.Keys(dstTree)))
	}
	for p, w := range want {
		g, ok := dstTree[p]
		if !ok {
			t.Fatalf("%s missing from the clone", p)
		}
		if g.Mode != w.Mode || g.Uid != w.Uid || g.Gid != w.Gid || g.Nlink != w.Nlink || g.Size != w.Size ||
			g.Atime != w.Atime || g.Mtime != w.Mtime || g.Target != w.Target ||
			!maps.Equal(g.Xattrs, w.Xattrs) || !slices.Equal(g.Extents, w.Extents) {
			t.Fatalf("%s: clone %+v\nsource %+v", p, g, w)
		}
		if dstInos[p] == srcInos[p] {
			t.Fatalf("%s: the clone shares inode %d with the source", p, dstInos[p])
		}
	}
	if dstInos["big"] != dstInos["sub/hard"] || dstTree["big"].Nlink != 2 {
		t.Fatalf("the hard link inside the tree is not one inode in the clone: %d, %d", dstInos["big"], dstInos["sub/hard"])
	}
	if dstTree["sym"].Target != "big" || dstTree["sym"].Size != 3 {
		t.Fatalf("symlink copy: %+v", dstTree["sym"])
	}
	if len(dstTree["big"].Extents) != 3 {
		t.Fatalf("big's copy has extents %+v", dstTree["big"].Extents)
	}
	if out, _ := c.GetAttr(ctx, fx.shared); out.Nlink != 2 {
		t.Fatalf("the source's shared file has %d links after the clone, want 2", out.Nlink)
	}
	for _, id := range fx.chunks {
		if r := refs(t, c, id); r != 2 {
			t.Fatalf("chunk %d has %d refs after the clone, want 2", id, r)
		}
	}
	// A clone of a single file.
	f, err := c.CloneTree(ctx, fx.big, ms.RootIno, "bigcopy")
	if err != nil {
		t.Fatal(err)
	}
	if f.Nlink != 1 || f.Size != 3*4096 || f.Ino == fx.big || refs(t, c, fx.chunks[0]) != 3 {
		t.Fatalf("file clone = %+v, refs %d", f, refs(t, c, fx.chunks[0]))
	}
}

func TestCloneTreeSidesAreIndependent(t *testing.T) {
	ctx := context.Background()
	fx := newCloneFixture(t)
	c := fx.c
	dst, err := c.CloneTree(ctx, fx.src, ms.RootIno, "dst")
	if err != nil {
		t.Fatal(err)
	}
	dstBig := resolve(t, c, "/dst/big")
	before, _ := c.GetInode(ctx, dstBig.Ino)

	// Overwrite the source's first chunk, truncate it to nothing, and drop
	// both names of the shared file: the clone keeps every chunk.
	fresh := mustAlloc(t, c)
	if _, err := c.CommitExtents(ctx, fx.big, []ms.Extent{{Len: 4096, Chunk: fresh.ID}}, nil, 4096); err != nil {
		t.Fatal(err)
	}
	if r := refs(t, c, fx.chunks[0]); r != 1 {
		t.Fatalf("overwritten chunk has %d refs, want 1 (the clone's)", r)
	}
	zero := uint64(0)
	if _, err := c.SetAttr(ctx, fx.big, ms.SetAttrIn{Size: &zero}); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][2]any{{fx.src, "shared"}, {ms.RootIno, "outside"}} {
		if err := c.Unlink(ctx, p[0].(ms.Ino), p[1].(string)); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range fx.chunks {
		if r := refs(t, c, id); r != 1 {
			t.Fatalf("chunk %d has %d refs once the source let go, want 1", id, r)
		}
	}
	if r := refs(t, c, fresh.ID); r != 0 {
		t.Fatalf("the source's new chunk has %d refs after its truncate", r)
	}
	after, _ := c.GetInode(ctx, dstBig.Ino)
	if !slices.Equal(after.Extents, before.Extents) || after.Size != before.Size || after.Gen != before.Gen {
		t.Fatalf("the clone changed with the source: %+v, was %+v", after, before)
	}
	if sh := resolve(t, c, "/dst/shared"); sh.Size != 1000 {
		t.Fatalf("the clone's shared file: %+v", sh)
	}

	// The other way round: a write to the clone leaves a fresh clone of the
	// clone (and so any other copy) alone.
	if _, err := c.CloneTree(ctx, dst.Ino, ms.RootIno, "dst2"); err != nil {
		t.Fatal(err)
	}
	half := uint64(5000)
	if _, err := c.SetAttr(ctx, dstBig.Ino, ms.SetAttrIn{Size: &half}); err != nil {
		t.Fatal(err)
	}
	d2, _ := c.GetInode(ctx, resolve(t, c, "/dst2/sub/hard").Ino)
	if !slices.Equal(d2.Extents, before.Extents) || d2.Size != 3*4096 {
		t.Fatalf("dst2 changed with dst: %+v", d2)
	}
	if r := refs(t, c, fx.chunks[2]); r != 1 {
		t.Fatalf("chunk cut off dst has %d refs, want 1 (dst2's)", r)
	}

	// Removing every copy frees the chunks and queues their shards' deletes.
	heartbeatAll(t, c, 0, 1, 2, 3, 4, 5) // drain deletes queued so far
	for _, dir := range []string{"dst", "dst2"} {
		removeAll(t, c, ms.RootIno, dir)
	}
	for _, id := range fx.chunks {
		if r := refs(t, c, id); r != 0 {
			t.Fatalf("chunk %d survives with %d refs after every copy went", id, r)
		}
	}
	var deleted []string
	for _, r := range heartbeatAll(t, c, 0, 1, 2, 3, 4, 5) {
		deleted = append(deleted, r.Deletes...)
	}
	for _, id := range fx.chunks {
		for i := range 6 {
			if !slices.Contains(deleted, ms.ShardName(id, i)) {
				t.Fatalf("shard %s not queued for deletion; deletes %v", ms.ShardName(id, i), deleted)
			}
		}
	}
}

// removeAll removes name in dir and everything below it.
func removeAll(t *testing.T, c *ms.Client, dir ms.Ino, name string) {
	t.Helper()
	ctx := context.Background()
	a, err := c.Lookup(ctx, dir, name)
	if err != nil {
		t.Fatal(err)
	}
	if !a.IsDir() {
		if err := c.Unlink(ctx, dir, name); err != nil {
			t.Fatal(err)
		}
		return
	}
	ents, err := c.ReadDir(ctx, a.Ino, "", 0, false)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		removeAll(t, c, a.Ino, e.Name)
	}
	if err := c.Rmdir(ctx, dir, name); err != nil {
		t.Fatal(err)
	}
}

func TestCloneTreeErrors(t *testing.T) {
	ctx := context.Background()
	fx := newCloneFixture(t)
	c := fx.c
	sub := resolve(t, c, "/src/sub")
	outside := resolve(t, c, "/outside")
	cases := []struct {
		name   string
		src    ms.Ino
		parent ms.Ino
		dst    string
		want   syscall.Errno
	}{
		{"name taken", fx.src, ms.RootIno, "outside", syscall.EEXIST},
		{"onto itself", fx.src, ms.RootIno, "src", syscall.EEXIST},
		{"into itself", fx.src, fx.src, "again", syscall.EINVAL},
		{"into its subtree", fx.src, sub.Ino, "again", syscall.EINVAL},
		{"root into itself", ms.RootIno, fx.src, "all", syscall.EINVAL},
		{"missing source", 999, ms.RootIno, "x", syscall.ENOENT},
		{"missing parent", fx.src, 999, "x", syscall.ENOENT},
		{"parent is a file", fx.src, outside.Ino, "x", syscall.ENOTDIR},
		{"bad name", fx.src, ms.RootIno, "a/b", syscall.EINVAL},
		{"dot name", fx.src, ms.RootIno, "..", syscall.EINVAL},
	}
	for _, tc := range cases {
		_, err := c.CloneTree(ctx, tc.src, tc.parent, tc.dst)
		wantErrno(t, tc.name, err, tc.want)
	}
	// A file may be cloned into its own directory (it has no subtree).
	if _, err := c.CloneTree(ctx, fx.big, fx.src, "big2"); err != nil {
		t.Fatal(err)
	}
}

func TestCloneTreeLimitChangesNothing(t *testing.T) {
	fx := newCloneFixture(t)
	old := cloneLimit
	t.Cleanup(func() { cloneLimit = old })
	// src holds 7 inodes: itself, big (two names), sub, shared, sym, empty, fifo.
	cloneLimit = 6
	before := snapshotBytes(t, fx.m.fsm)
	args, _ := json.Marshal(ms.CloneTreeArgs{Src: fx.src, NewParent: ms.RootIno, NewName: "dst"})
	// No request id and no later time: the snapshot sees any change.
	r := fx.m.fsm.apply(&command{Type: ms.OpCloneTree, Payload: args}, 0)
	if r.Err == nil || r.Err.Errno != syscall.E2BIG || !bytes.Contains([]byte(r.Err.Msg), []byte("more than 6 inodes")) {
		t.Fatalf("clone past the limit: %+v", r.Err)
	}
	if after := snapshotBytes(t, fx.m.fsm); !bytes.Equal(before, after) {
		t.Fatal("a refused clone changed the state")
	}
	cloneLimit = 7
	if r := fx.m.fsm.apply(&command{Type: ms.OpCloneTree, Payload: args}, 0); r.Err != nil {
		t.Fatalf("clone at the limit: %+v", r.Err)
	}
}

func TestCloneTreeSnapshotRestoreAndDeterminism(t *testing.T) {
	ctx := context.Background()
	fx := newCloneFixture(t)
	// Two replicas: the fixture's FSM and one restored from its snapshot.
	replica := NewFSM()
	if err := replica.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, fx.m.fsm)))); err != nil {
		t.Fatal(err)
	}
	args, _ := json.Marshal(ms.CloneTreeArgs{Src: fx.src, NewParent: ms.RootIno, NewName: "dst"})
	cmd := command{Type: ms.OpCloneTree, ReqID: "clone-1", Time: fx.clk.t.UnixNano(), Payload: args}
	for _, f := range []*FSM{fx.m.fsm, replica} {
		c := cmd
		if r := f.apply(&c, 0); r.Err != nil {
			t.Fatal(r.Err)
		}
	}
	b1 := snapshotBytes(t, fx.m.fsm)
	if b2 := snapshotBytes(t, replica); !bytes.Equal(b1, b2) {
		t.Fatal("two replicas applying the same clone differ")
	}
	restored := NewFSM()
	if err := restored.Restore(io.NopCloser(bytes.NewReader(b1))); err != nil {
		t.Fatal(err)
	}
	rm := NewMemory()
	rm.fsm = restored
	c := rm.API()
	orig, _ := listTree(t, fx.c, resolve(t, fx.c, "/dst").Ino)
	got, _ := listTree(t, c, resolve(t, c, "/dst").Ino)
	if len(got) != len(orig) {
		t.Fatalf("restored clone lists %d names, want %d", len(got), len(orig))
	}
	for p, w := range orig {
		g := got[p]
		if g.Nlink != w.Nlink || g.Size != w.Size || !slices.Equal(g.Extents, w.Extents) || !maps.Equal(g.Xattrs, w.Xattrs) {
			t.Fatalf("%s after restore: %+v, want %+v", p, g, w)
		}
	}
	for _, id := range fx.chunks {
		if r := refs(t, c, id); r != 2 {
			t.Fatalf("chunk %d has %d refs after restore, want 2", id, r)
		}
	}
	// The restored state still counts the clone's references: dropping the
	// source keeps the chunks.
	removeAll(t, c, ms.RootIno, "src")
	if err := c.Unlink(ctx, ms.RootIno, "outside"); err != nil {
		t.Fatal(err)
	}
	for _, id := range fx.chunks {
		if r := refs(t, c, id); r != 1 {
			t.Fatalf("chunk %d has %d refs once the source is gone, want 1", id, r)
		}
	}
}

func TestCloneTreeFeedAnnouncesTheName(t *testing.T) {
	fx := newCloneFixture(t)
	dst, err := fx.c.CloneTree(context.Background(), fx.src, ms.RootIno, "dst")
	if err != nil {
		t.Fatal(err)
	}
	fx.m.fsm.mu.RLock()
	defer fx.m.fsm.mu.RUnlock()
	g := fx.m.fsm.feed.pending[len(fx.m.fsm.feed.pending)-1]
	var entry, parent bool
	for _, ch := range g.changes {
		switch {
		case ch.Kind == ms.ChangeEntry && ch.Ino == ms.RootIno && ch.Name == "dst" && ch.Child == dst.Ino:
			entry = true
		case ch.Kind == ms.ChangeAttr && ch.Ino == ms.RootIno && ch.Attr != nil && ch.Attr.Mtime == dst.Ctime:
			parent = true
		}
	}
	if !entry || !parent {
		t.Fatalf("feed after a clone: %+v", g.changes)
	}
}
