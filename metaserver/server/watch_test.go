package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	ms "github.com/dockyard/dockyard/metaserver"
)

// changeSet indexes a reply's changes for assertions.
type changeSet struct {
	attrs   map[ms.Ino]*ms.Attr // nil value: the inode is gone
	entries map[string]ms.Ino   // "dir/name" -> child, 0 = gone
	dirs    map[ms.Ino]bool
	index   map[string]uint64 // key -> stamp
}

func keyOf(dir ms.Ino, name string) string { return fmt.Sprintf("%d/%s", dir, name) }

func collect(t *testing.T, r ms.WatchReply) changeSet {
	t.Helper()
	s := changeSet{attrs: map[ms.Ino]*ms.Attr{}, entries: map[string]ms.Ino{}, dirs: map[ms.Ino]bool{}, index: map[string]uint64{}}
	var last uint64
	for _, c := range r.Changes {
		if c.Index < last {
			t.Fatalf("changes out of order: %d after %d", c.Index, last)
		}
		last = c.Index
		if c.Index > r.Applied {
			t.Fatalf("change stamped %d beyond applied %d", c.Index, r.Applied)
		}
		switch c.Kind {
		case ms.ChangeAttr:
			s.attrs[c.Ino] = c.Attr
		case ms.ChangeEntry:
			s.entries[keyOf(c.Ino, c.Name)] = c.Child
			s.index[keyOf(c.Ino, c.Name)] = c.Index
		case ms.ChangeDir:
			s.dirs[c.Ino] = true
		default:
			t.Fatalf("unknown change kind %q", c.Kind)
		}
	}
	return s
}

func TestFeedRecordsNamespaceChanges(t *testing.T) {
	m, c, _ := newMem(t)
	ctx := context.Background()
	start, err := m.Watch(ctx, 0, 0)
	if err != nil {
		t.Fatal(err)
	}

	a := mustCreate(t, c, ms.RootIno, "a", syscall.S_IFREG|0o644)
	afterCreate := m.fsm.AppliedIndex()
	r, err := m.Watch(ctx, start.Applied, 0)
	if err != nil {
		t.Fatal(err)
	}
	s := collect(t, r)
	if s.entries[keyOf(ms.RootIno, "a")] != a.Ino {
		t.Fatalf("create: entry change %v, want child %d", r.Changes, a.Ino)
	}
	if got := s.attrs[a.Ino]; got == nil || *got != a {
		t.Fatalf("create: attr change %+v, want %+v", got, a)
	}
	if got := s.attrs[ms.RootIno]; got == nil || got.Mtime != a.Ctime {
		t.Fatalf("create: the parent's new mtime is not in the feed: %+v", got)
	}
	for _, ch := range r.Changes {
		if ch.Origin != c.ID() {
			t.Fatalf("change %+v: origin %q, want the client's id %q", ch, ch.Origin, c.ID())
		}
	}
	// One command per Memory index: the stamp is the entry's own index.
	if idx := s.index[keyOf(ms.RootIno, "a")]; idx != afterCreate || r.Applied != afterCreate {
		t.Fatalf("create stamped %d, applied %d; want both %d", idx, r.Applied, afterCreate)
	}

	// A refused command changes nothing and records nothing.
	if _, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "a", Mode: syscall.S_IFREG | 0o644, Exclusive: true}); err == nil {
		t.Fatal("exclusive create of an existing name succeeded")
	}
	if r2, _ := m.Watch(ctx, r.Applied, 0); len(r2.Changes) != 0 {
		t.Fatalf("a refused create recorded %v", r2.Changes)
	}

	mode := uint32(0o600)
	set, err := c.SetAttr(ctx, a.Ino, ms.SetAttrIn{Mode: &mode})
	if err != nil {
		t.Fatal(err)
	}
	d := mustCreate(t, c, ms.RootIno, "d", syscall.S_IFDIR|0o755)
	if err := c.Rename(ctx, ms.RootIno, "a", d.Ino, "b", 0); err != nil {
		t.Fatal(err)
	}
	r, err = m.Watch(ctx, r.Applied, 0)
	if err != nil {
		t.Fatal(err)
	}
	s = collect(t, r)
	if s.attrs[a.Ino] == nil || s.attrs[a.Ino].Mode != set.Mode {
		t.Fatalf("chmod: attr %+v, want mode %o", s.attrs[a.Ino], set.Mode)
	}
	if child, ok := s.entries[keyOf(ms.RootIno, "a")]; !ok || child != 0 {
		t.Fatalf("rename: old name not reported gone: %v", r.Changes)
	}
	if s.entries[keyOf(d.Ino, "b")] != a.Ino {
		t.Fatalf("rename: new name not reported: %v", r.Changes)
	}

	if err := c.Unlink(ctx, d.Ino, "b"); err != nil {
		t.Fatal(err)
	}
	r, err = m.Watch(ctx, r.Applied, 0)
	if err != nil {
		t.Fatal(err)
	}
	s = collect(t, r)
	if got, ok := s.attrs[a.Ino]; !ok || got != nil {
		t.Fatalf("unlink: the removed inode is not reported gone: %v", r.Changes)
	}
	if child, ok := s.entries[keyOf(d.Ino, "b")]; !ok || child != 0 {
		t.Fatalf("unlink: the name is not reported gone: %v", r.Changes)
	}

	if _, err := c.CreateTree(ctx, d.Ino, []ms.TreeEntry{{ParentIdx: -1, CreateIn: ms.CreateIn{Name: "x", Mode: syscall.S_IFREG | 0o644}}}); err != nil {
		t.Fatal(err)
	}
	r, err = m.Watch(ctx, r.Applied, 0)
	if err != nil {
		t.Fatal(err)
	}
	if s = collect(t, r); !s.dirs[d.Ino] {
		t.Fatalf("createtree: the directory is not reported: %v", r.Changes)
	}
}

func TestFeedLongPollWakesOnChange(t *testing.T) {
	m, c, _ := newMem(t)
	ctx := context.Background()
	at := m.fsm.AppliedIndex()
	type res struct {
		r   ms.WatchReply
		err error
	}
	got := make(chan res, 1)
	go func() {
		r, err := m.Watch(ctx, at, 20*time.Second)
		got <- res{r, err}
	}()
	// The watcher may or may not be waiting yet: either way it must see
	// the create, long before its wait runs out.
	a := mustCreate(t, c, ms.RootIno, "late", syscall.S_IFREG|0o644)
	select {
	case x := <-got:
		if x.err != nil {
			t.Fatal(x.err)
		}
		if collect(t, x.r).entries[keyOf(ms.RootIno, "late")] != a.Ino {
			t.Fatalf("woke with %v", x.r.Changes)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the long poll did not wake on a change")
	}

	// With nothing happening it returns at its deadline, at the same place.
	r, err := m.Watch(ctx, m.fsm.AppliedIndex(), 20*time.Millisecond)
	if err != nil || len(r.Changes) != 0 || r.Applied != m.fsm.AppliedIndex() {
		t.Fatalf("idle watch: %+v, %v", r, err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Watch(cctx, m.fsm.AppliedIndex(), time.Second); err == nil {
		t.Fatal("a cancelled watch returned no error")
	}
}

func TestFeedResetWhenSinceFellOff(t *testing.T) {
	m, c, _ := newMem(t)
	m.fsm.feed.limit = 8
	ctx := context.Background()
	start := m.fsm.AppliedIndex()
	for _, n := range []string{"a", "b", "c", "d", "e"} { // 3 changes each: the ring wraps
		mustCreate(t, c, ms.RootIno, n, syscall.S_IFREG|0o644)
	}
	r, err := m.Watch(ctx, start, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Reset || r.Applied != m.fsm.AppliedIndex() {
		t.Fatalf("watch from before the ring: %+v, want a reset at %d", r, m.fsm.AppliedIndex())
	}
	// From the reset point on it works again.
	mustCreate(t, c, ms.RootIno, "f", syscall.S_IFREG|0o644)
	r2, err := m.Watch(ctx, r.Applied, 0)
	if err != nil || r2.Reset || len(r2.Changes) != 3 {
		t.Fatalf("after the reset: %+v, %v", r2, err)
	}
}

func TestFeedRestoreRestarts(t *testing.T) {
	m, c, _ := newMem(t)
	ctx := context.Background()
	mustCreate(t, c, ms.RootIno, "a", syscall.S_IFREG|0o644)
	before := m.fsm.AppliedIndex()

	if err := m.fsm.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, m.fsm)))); err != nil {
		t.Fatal(err)
	}
	r, err := m.Watch(ctx, before, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Reset || r.Applied != 0 {
		t.Fatalf("right after a restore: %+v, want a reset without a place to resume", r)
	}
	// The first batch after the restore is where the feed starts again; a
	// waiting watcher learns it without waiting out its whole wait.
	done := make(chan ms.WatchReply, 1)
	go func() {
		r, _ := m.Watch(ctx, before, 20*time.Second)
		done <- r
	}()
	mustCreate(t, c, ms.RootIno, "b", syscall.S_IFREG|0o644)
	select {
	case r = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not end after the restart")
	}
	if !r.Reset || r.Applied != m.fsm.AppliedIndex() {
		t.Fatalf("after the restart: %+v, want a reset at %d", r, m.fsm.AppliedIndex())
	}
	mustCreate(t, c, ms.RootIno, "c", syscall.S_IFREG|0o644)
	if r2, _ := m.Watch(ctx, r.Applied, 0); r2.Reset || collect(t, r2).entries[keyOf(ms.RootIno, "c")] == 0 {
		t.Fatalf("after the restart the feed does not go on: %+v", r2)
	}
}

// A batch stamps each command with the index before the next one (its own,
// unless a configuration entry sits between) and the last with the batch's
// end: never below the command's own index.
func TestFeedStampsInABatch(t *testing.T) {
	f := NewFSM()
	cmd := func(name string) []byte {
		p, _ := json.Marshal(ms.CreateIn{Parent: ms.RootIno, Name: name, Mode: syscall.S_IFREG | 0o644})
		return encodeCommand(&command{Type: ms.OpCreate, Time: 1, Payload: p})
	}
	f.ApplyBatch([]*raft.Log{
		{Index: 10, Type: raft.LogCommand, Data: cmd("x")},
		{Index: 11, Type: raft.LogCommand, Data: cmd("y")},
		{Index: 12, Type: raft.LogConfiguration},
		{Index: 13, Type: raft.LogCommand, Data: cmd("z")},
	})
	r, _ := f.changesSince(0)
	s := collect(t, r)
	want := map[string]uint64{"x": 10, "y": 12, "z": 13}
	for n, idx := range want {
		if got := s.index[keyOf(ms.RootIno, n)]; got != idx {
			t.Errorf("%s stamped %d, want %d", n, got, idx)
		}
	}
	if r.Applied != 13 {
		t.Errorf("applied %d, want 13", r.Applied)
	}
	// Reads only ever see whole batches: from 10 on, x is not repeated.
	r, _ = f.changesSince(10)
	if s := collect(t, r); s.entries[keyOf(ms.RootIno, "x")] != 0 || s.entries[keyOf(ms.RootIno, "y")] == 0 {
		t.Errorf("since 10: %v", r.Changes)
	}
}

func TestWatchOverHTTP(t *testing.T) {
	n := startNode(t, testConfig(t, "w1", t.TempDir()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := ms.NewClient([]string{n.APIAddr()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start, err := c.Watch(ctx, ^uint64(0), 0) // where the feed is now
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "h", Mode: syscall.S_IFREG | 0o644})
	if err != nil {
		t.Fatal(err)
	}
	var seen bool
	at := start.Applied
	for !seen {
		r, err := c.Watch(ctx, at, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if r.Reset {
			t.Fatalf("reset: %+v", r)
		}
		seen = collect(t, r).entries[keyOf(ms.RootIno, "h")] == a.Ino
		at = r.Applied
	}
	// Errors come back typed.
	if _, err := ms.NewClientWith(badExec{}).Watch(ctx, 0, 0); err != ms.ErrNoFeed {
		t.Fatalf("watch over an executor without a feed: %v", err)
	}
}

// Malformed watch parameters are refused with 400 and a message naming the
// parameter, never read as zero.
func TestWatchBadParameters(t *testing.T) {
	n := startNode(t, testConfig(t, "w1", t.TempDir()))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	for _, q := range []struct{ query, names string }{
		{"since=abc", "since"},
		{"since=-1", "since"},
		{"since=1&wait=soon", "wait"},
		{"since=1&wait=-5", "wait"},
	} {
		resp, err := http.Get("http://" + n.APIAddr() + ms.WatchPath + "?" + q.query)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(body), q.names) {
			t.Errorf("%s: %d %s, want 400 naming %s", q.query, resp.StatusCode, body, q.names)
		}
	}
}

type badExec struct{}

func (badExec) Exec(context.Context, string, string, []byte) ([]byte, error) { return nil, nil }

// A follower serves the feed from its own applied state; a follower cut off
// from its leader stops serving it.
func TestWatchOnFollower(t *testing.T) {
	nodes := startCluster(t, 3)
	leader := leaderOf(nodes)
	var follower *Node
	for _, n := range nodes {
		if n != leader {
			follower = n
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	lc, err := ms.NewClient(addrs(nodes))
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	start, err := follower.Watch(ctx, ^uint64(0), 0)
	if err != nil {
		t.Fatal(err)
	}
	a, err := lc.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "f", Mode: syscall.S_IFREG | 0o644})
	if err != nil {
		t.Fatal(err)
	}
	at := start.Applied
	for seen := false; !seen; {
		r, err := follower.Watch(ctx, at, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		seen = collect(t, r).entries[keyOf(ms.RootIno, "f")] == a.Ino
		at = r.Applied
	}

	// Cut off: the leader goes away and the follower hears from nobody.
	for _, n := range nodes {
		if n != follower {
			_ = n.Close()
		}
	}
	waitFor(t, 15*time.Second, "the cut-off follower to refuse the feed", func() bool {
		_, err := follower.Watch(ctx, at, 0)
		return errors.Is(err, ms.ErrUnavailable)
	})
}

// BenchmarkFeedCreate measures what the feed adds to applying one create:
// noting what it touches before, reading the values after, recording them.
func BenchmarkFeedCreate(b *testing.B) {
	f := NewFSM()
	f.feed.limit = 1 << 12
	cmds := benchCreates(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range cmds {
		f.mu.Lock()
		t := f.touches(&cmds[i])
		if _, err := f.dispatchSafely(&cmds[i]); err != nil {
			b.Fatal(err)
		}
		f.feed.record(f.changesOf(t, "bench"), uint64(i), 0)
		f.applied.Store(uint64(i + 1))
		f.mu.Unlock()
		if i%64 == 63 {
			f.changesSince(^uint64(0)) // settle, as a watcher's read does
		}
	}
}

// benchCreates returns n create commands of distinct files in the root.
func benchCreates(n int) []command {
	cmds := make([]command, n)
	for i := range cmds {
		p, _ := json.Marshal(ms.CreateIn{Parent: ms.RootIno, Name: fmt.Sprintf("f%09d", i), Mode: syscall.S_IFREG | 0o644})
		cmds[i] = command{Type: ms.OpCreate, Time: 1, Payload: p}
	}
	return cmds
}

// BenchmarkCreateWithoutFeed is the same apply without the feed, to compare.
func BenchmarkCreateWithoutFeed(b *testing.B) {
	f := NewFSM()
	cmds := benchCreates(b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := range cmds {
		f.mu.Lock()
		if _, err := f.dispatchSafely(&cmds[i]); err != nil {
			b.Fatal(err)
		}
		f.applied.Store(uint64(i + 1))
		f.mu.Unlock()
	}
}
