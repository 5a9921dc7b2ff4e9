package fs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dockyard/dockyard/metaserver"
	msserver "github.com/dockyard/dockyard/metaserver/server"
)

// countingAPI counts the reads that reach the metaserver. hold, when set,
// holds a lookup's reply (already read) until it is closed.
type countingAPI struct {
	metaserver.API
	lookups, getattrs atomic.Int64

	mu   sync.Mutex
	hold chan struct{}
	held chan struct{} // closed when a lookup is being held
}

func (a *countingAPI) Lookup(ctx context.Context, parent metaserver.Ino, name string) (metaserver.Attr, error) {
	a.lookups.Add(1)
	r, err := a.API.Lookup(ctx, parent, name)
	a.mu.Lock()
	hold, held := a.hold, a.held
	a.hold, a.held = nil, nil
	a.mu.Unlock()
	if hold != nil {
		close(held)
		<-hold
	}
	return r, err
}

func (a *countingAPI) GetAttr(ctx context.Context, ino metaserver.Ino) (metaserver.Attr, error) {
	a.getattrs.Add(1)
	return a.API.GetAttr(ctx, ino)
}

// switchFeed passes the feed through until told to fail, reset or hang.
type switchFeed struct {
	w       metaserver.Watcher
	mu      sync.Mutex
	mode    string        // "", "fail", "reset", "hang"
	changed chan struct{} // closed when mode changes
	gate    chan struct{} // when set, replies wait for it to close
}

// hold makes the feed's replies wait until the returned channel is closed,
// like a feed that is slow to bring changes.
func (f *switchFeed) hold() chan struct{} {
	g := make(chan struct{})
	f.mu.Lock()
	f.gate = g
	f.mu.Unlock()
	return g
}

var errFeedDown = errors.New("feed down for the test")

func (f *switchFeed) set(mode string) {
	f.mu.Lock()
	f.mode = mode
	if f.changed != nil {
		close(f.changed)
	}
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

func (f *switchFeed) Watch(ctx context.Context, since uint64, wait time.Duration) (metaserver.WatchReply, error) {
	f.mu.Lock()
	mode, changed := f.mode, f.changed
	if mode == "reset" {
		f.mode = ""
	}
	f.mu.Unlock()
	switch mode {
	case "fail":
		return metaserver.WatchReply{}, errFeedDown
	case "reset":
		r, err := f.w.Watch(ctx, ^uint64(0), 0)
		r.Reset = true
		return r, err
	case "hang":
		// Like a metaserver that stopped answering, until the test lets
		// it go (a real call times out).
		select {
		case <-ctx.Done():
			return metaserver.WatchReply{}, ctx.Err()
		case <-changed:
			return metaserver.WatchReply{}, errFeedDown
		}
	}
	r, err := f.w.Watch(ctx, since, wait)
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return metaserver.WatchReply{}, ctx.Err()
		}
	}
	return r, err
}

type cacheRig struct {
	mem    *msserver.Memory
	remote metaserver.API // another mount: straight to the metaserver
	inner  *countingAPI
	feed   *switchFeed
	c      *MetaCache
}

func newCacheRig(t *testing.T, opt MetaCacheOptions) *cacheRig {
	t.Helper()
	mem := msserver.NewMemory()
	api := mem.API()
	r := &cacheRig{mem: mem, remote: api, inner: &countingAPI{API: api}, feed: &switchFeed{w: api}}
	r.c = NewMetaCache(r.inner, r.feed, opt)
	t.Cleanup(func() { r.c.Close() })
	r.waitLive(t)
	return r
}

func (r *cacheRig) waitLive(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := r.c.WaitLive(ctx); err != nil {
		t.Fatalf("cache never followed the feed: %v", err)
	}
}

// caughtUp waits until the cache applied the feed up to the metaserver's
// current state.
func (r *cacheRig) caughtUp(t *testing.T) {
	t.Helper()
	want, err := r.mem.Watch(context.Background(), ^uint64(0), 0)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the cache to catch up with the feed", func() bool { return r.c.Stats().Cursor >= want.Applied })
}

// eventually polls cond until it holds, failing the test after 10 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func createFile(t *testing.T, api metaserver.API, parent metaserver.Ino, name string) metaserver.Attr {
	t.Helper()
	a, err := api.Create(context.Background(), metaserver.CreateIn{Parent: parent, Name: name, Mode: syscall.S_IFREG | 0o644, Exclusive: true})
	if err != nil {
		t.Fatalf("create %s: %v", name, err)
	}
	return a
}

func TestMetaCacheHitsAndOwnMutations(t *testing.T) {
	r := newCacheRig(t, MetaCacheOptions{})
	ctx := context.Background()
	// The create's reply comes before its change from the feed (were it
	// the other way round, the reply would not be cached: it is not known
	// to be the latest).
	gate := r.feed.hold()
	a := createFile(t, r.c, metaserver.RootIno, "own")
	close(gate)
	// The create's reply is cached: no lookup reaches the metaserver.
	for range 3 {
		got, err := r.c.Lookup(ctx, metaserver.RootIno, "own")
		if err != nil || got != a {
			t.Fatalf("lookup: %+v, %v; want %+v", got, err, a)
		}
	}
	if n := r.inner.lookups.Load(); n != 0 {
		t.Fatalf("%d lookups reached the metaserver after an own create", n)
	}
	// Once the feed brought the create's own change, it is still cached.
	r.caughtUp(t)
	if _, err := r.c.Lookup(ctx, metaserver.RootIno, "own"); err != nil || r.inner.lookups.Load() != 0 {
		t.Fatalf("after the feed: %v, %d lookups sent", err, r.inner.lookups.Load())
	}

	// A file created elsewhere: one lookup, then hits.
	b := createFile(t, r.remote, metaserver.RootIno, "remote")
	// A reply that crosses the feed's change of the same name is not
	// cached (it might be older); with the feed caught up it is.
	r.caughtUp(t)
	for range 3 {
		if got, err := r.c.Lookup(ctx, metaserver.RootIno, "remote"); err != nil || got.Ino != b.Ino {
			t.Fatalf("lookup remote: %+v, %v", got, err)
		}
	}
	if n := r.inner.lookups.Load(); n != 1 {
		t.Fatalf("%d lookups sent for three of one name, want 1", n)
	}
	if got, err := r.c.GetAttr(ctx, b.Ino); err != nil || got.Ino != b.Ino || r.inner.getattrs.Load() != 0 {
		t.Fatalf("getattr after lookup: %+v, %v, %d sent", got, err, r.inner.getattrs.Load())
	}

	// Own chmod: the reply is what the next getattr answers, at once.
	mode := uint32(0o600)
	if _, err := r.c.SetAttr(ctx, a.Ino, metaserver.SetAttrIn{Mode: &mode}); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.c.GetAttr(ctx, a.Ino); got.Mode&0o777 != 0o600 {
		t.Fatalf("after own chmod: mode %o", got.Mode)
	}
	// Own unlink: gone at once, and never answered from the cache after.
	if err := r.c.Unlink(ctx, metaserver.RootIno, "own"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.c.Lookup(ctx, metaserver.RootIno, "own"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("lookup after own unlink: %v", err)
	}
	if st := r.c.Stats(); st.Hits == 0 || !st.Live {
		t.Fatalf("stats: %+v", st)
	}
}

func TestMetaCacheSeesRemoteChanges(t *testing.T) {
	r := newCacheRig(t, MetaCacheOptions{})
	ctx := context.Background()
	dir, err := r.remote.Create(ctx, metaserver.CreateIn{Parent: metaserver.RootIno, Name: "d", Mode: syscall.S_IFDIR | 0o755})
	if err != nil {
		t.Fatal(err)
	}
	a := createFile(t, r.remote, metaserver.RootIno, "f")
	if _, err := r.c.Lookup(ctx, metaserver.RootIno, "f"); err != nil {
		t.Fatal(err)
	}

	mode := uint32(0o640)
	if _, err := r.remote.SetAttr(ctx, a.Ino, metaserver.SetAttrIn{Mode: &mode}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the remote chmod", func() bool {
		got, err := r.c.Lookup(ctx, metaserver.RootIno, "f")
		return err == nil && got.Mode&0o777 == 0o640
	})

	if err := r.remote.Rename(ctx, metaserver.RootIno, "f", dir.Ino, "g", 0); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the remote rename", func() bool {
		_, err := r.c.Lookup(ctx, metaserver.RootIno, "f")
		got, err2 := r.c.Lookup(ctx, dir.Ino, "g")
		return errors.Is(err, syscall.ENOENT) && err2 == nil && got.Ino == a.Ino
	})

	if err := r.remote.Unlink(ctx, dir.Ino, "g"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the remote unlink", func() bool {
		_, err := r.c.Lookup(ctx, dir.Ino, "g")
		_, err2 := r.c.GetAttr(ctx, a.Ino)
		return errors.Is(err, syscall.ENOENT) && errors.Is(err2, syscall.ENOENT)
	})

	// Negative answers are never cached: a name created elsewhere is found
	// at once, without waiting for the feed.
	if _, err := r.c.Lookup(ctx, metaserver.RootIno, "new"); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("lookup of a missing name: %v", err)
	}
	createFile(t, r.remote, metaserver.RootIno, "new")
	if _, err := r.c.Lookup(ctx, metaserver.RootIno, "new"); err != nil {
		t.Fatalf("a name created elsewhere is not found at once: %v", err)
	}

	// An open revalidates: GetInode asks the metaserver and refreshes the
	// cached attributes even before the feed says anything.
	b := createFile(t, r.remote, metaserver.RootIno, "sized")
	if _, err := r.c.GetAttr(ctx, b.Ino); err != nil {
		t.Fatal(err)
	}
	r.feed.set("hang") // the feed says nothing from here on
	size := uint64(4096)
	if _, err := r.remote.SetAttr(ctx, b.Ino, metaserver.SetAttrIn{Size: &size}); err != nil {
		t.Fatal(err)
	}
	in, err := r.c.GetInode(ctx, b.Ino)
	if err != nil || in.Size != size {
		t.Fatalf("getinode: size %d, %v", in.Size, err)
	}
	if got, _ := r.c.GetAttr(ctx, b.Ino); got.Size != size {
		t.Fatalf("getattr after an open: size %d, want %d", got.Size, size)
	}
}

// A lookup read before a change but answered after the feed applied it
// must not be cached: the cache would keep the old value for good.
func TestMetaCacheRefusesReplyOlderThanChange(t *testing.T) {
	r := newCacheRig(t, MetaCacheOptions{})
	ctx := context.Background()
	a := createFile(t, r.remote, metaserver.RootIno, "f")
	r.caughtUp(t)

	hold, held := make(chan struct{}), make(chan struct{})
	r.inner.mu.Lock()
	r.inner.hold, r.inner.held = hold, held
	r.inner.mu.Unlock()
	old := make(chan metaserver.Attr, 1)
	go func() {
		got, _ := r.c.Lookup(ctx, metaserver.RootIno, "f")
		old <- got
	}()
	<-held // the lookup has read the old mode and is on its way back
	mode := uint32(0o600)
	if _, err := r.remote.SetAttr(ctx, a.Ino, metaserver.SetAttrIn{Mode: &mode}); err != nil {
		t.Fatal(err)
	}
	r.caughtUp(t)
	close(hold)
	if got := <-old; got.Mode&0o777 != 0o644 {
		t.Fatalf("the held lookup answered mode %o; the test wants the old one", got.Mode&0o777)
	}
	got, err := r.c.Lookup(ctx, metaserver.RootIno, "f")
	if err != nil || got.Mode&0o777 != 0o600 {
		t.Fatalf("after the change: mode %o, %v; the older reply was cached", got.Mode&0o777, err)
	}
	got, err = r.c.GetAttr(ctx, a.Ino)
	if err != nil || got.Mode&0o777 != 0o600 {
		t.Fatalf("getattr after the change: mode %o, %v", got.Mode&0o777, err)
	}
}

func TestMetaCacheDropsWhenFeedFailsResetsOrLags(t *testing.T) {
	r := newCacheRig(t, MetaCacheOptions{PollWait: 50 * time.Millisecond, MaxLag: 50 * time.Millisecond})
	ctx := context.Background()
	a := createFile(t, r.c, metaserver.RootIno, "f")
	fill := func() {
		t.Helper()
		if _, err := r.c.Lookup(ctx, metaserver.RootIno, "f"); err != nil {
			t.Fatal(err)
		}
		if r.c.Stats().Entries == 0 {
			t.Fatal("nothing cached")
		}
	}
	for _, mode := range []string{"fail", "reset", "hang"} {
		fill()
		drops := r.c.Stats().Drops
		r.feed.set(mode)
		eventually(t, "the cache to drop on "+mode, func() bool {
			st := r.c.Stats()
			return st.Drops > drops && st.Entries == 0
		})
		if mode != "reset" {
			// While the feed is out the cache answers nothing.
			before := r.inner.getattrs.Load()
			if _, err := r.c.GetAttr(ctx, a.Ino); err != nil {
				t.Fatal(err)
			}
			if _, err := r.c.GetAttr(ctx, a.Ino); err != nil || r.inner.getattrs.Load() != before+2 {
				t.Fatalf("%s: getattrs answered from a cache without a feed (%d sent, want 2)", mode, r.inner.getattrs.Load()-before)
			}
			if r.c.Stats().Entries != 0 {
				t.Fatalf("%s: replies cached without a feed", mode)
			}
		}
		r.feed.set("")
		r.waitLive(t)
	}
}

func TestMetaCacheBounded(t *testing.T) {
	r := newCacheRig(t, MetaCacheOptions{MaxEntries: 16})
	ctx := context.Background()
	for i := range 100 {
		createFile(t, r.c, metaserver.RootIno, fmt.Sprintf("f%03d", i))
		if n := r.c.Stats().Entries; n > 16 {
			t.Fatalf("%d entries held, bound 16", n)
		}
	}
	// Whatever was forgotten is fetched again, correctly.
	for i := range 100 {
		if _, err := r.c.Lookup(ctx, metaserver.RootIno, fmt.Sprintf("f%03d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.c.Stats().Entries; n > 16 {
		t.Fatalf("%d entries held after lookups, bound 16", n)
	}
}

func TestMetaCacheStaleReadsBypass(t *testing.T) {
	r := newCacheRig(t, MetaCacheOptions{})
	ctx := metaserver.AllowStale(context.Background())
	createFile(t, r.remote, metaserver.RootIno, "f")
	for range 2 {
		if _, err := r.c.Lookup(ctx, metaserver.RootIno, "f"); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.inner.lookups.Load(); n != 2 || r.c.Stats().Entries != 0 {
		t.Fatalf("stale reads: %d sent (want 2), %d cached (want 0)", n, r.c.Stats().Entries)
	}
}

// recorder is a MetaObserver that keeps what it hears.
type recorder struct {
	mu      sync.Mutex
	remote  []metaserver.Change
	dropped int
}

func (r *recorder) Remote(cs []metaserver.Change) {
	r.mu.Lock()
	r.remote = append(r.remote, cs...)
	r.mu.Unlock()
}

func (r *recorder) Dropped() {
	r.mu.Lock()
	r.dropped++
	r.mu.Unlock()
}

func (r *recorder) names() map[string]bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]bool{}
	for _, c := range r.remote {
		if c.Kind == metaserver.ChangeEntry {
			out[c.Name] = true
		}
	}
	return out
}

func TestMetaCacheObserverHearsOnlyOthersChanges(t *testing.T) {
	mem := msserver.NewMemory()
	mine, theirs := mem.API(), mem.API()
	c := NewMetaCache(mine, mine, MetaCacheOptions{PollWait: 50 * time.Millisecond, MaxLag: 50 * time.Millisecond})
	defer c.Close()
	rec := &recorder{}
	c.Observe(rec)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WaitLive(ctx); err != nil {
		t.Fatal(err)
	}
	createFile(t, c, metaserver.RootIno, "mine")
	createFile(t, theirs, metaserver.RootIno, "theirs")
	eventually(t, "the observer to hear the other client's create", func() bool { return rec.names()["theirs"] })
	if rec.names()["mine"] {
		t.Fatal("the observer heard this client's own create")
	}
}

func TestMetaCacheObserverHearsDrops(t *testing.T) {
	r := newCacheRig(t, MetaCacheOptions{PollWait: 50 * time.Millisecond, MaxLag: 50 * time.Millisecond})
	rec := &recorder{}
	r.c.Observe(rec)
	// A feed that hangs is noticed without anyone asking the cache.
	r.feed.set("hang")
	eventually(t, "the observer to hear the drop", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return rec.dropped > 0
	})
	r.feed.set("")
	r.waitLive(t)
}

// The feed may bring the change of an earlier own mutation after the reply
// of a later one was cached: the older value must not replace the newer.
func TestMetaCacheOwnReplyNotReplacedByOlderChange(t *testing.T) {
	r := newCacheRig(t, MetaCacheOptions{})
	ctx := context.Background()
	gate := r.feed.hold() // the feed brings nothing for now
	defer close(gate)
	a := createFile(t, r.c, metaserver.RootIno, "f")
	mtime := int64(43e9)
	set, err := r.c.SetAttr(ctx, a.Ino, metaserver.SetAttrIn{Mtime: &mtime})
	if err != nil {
		t.Fatal(err)
	}
	// Now the create's own change arrives, carrying the older attributes.
	r.c.mu.Lock()
	r.c.apply([]metaserver.Change{{Index: r.c.cursor + 1, Kind: metaserver.ChangeAttr, Ino: a.Ino, Attr: &a, Origin: r.c.self}})
	r.c.cursor++ // as the feed's loop does after applying a reply
	r.c.mu.Unlock()
	got, err := r.c.GetAttr(ctx, a.Ino)
	if err != nil || got != set {
		t.Fatalf("getattr: %+v, %v; want the setattr's reply %+v", got, err, set)
	}
	// A change that carries the very value cached confirms it.
	mtime++
	if set, err = r.c.SetAttr(ctx, a.Ino, metaserver.SetAttrIn{Mtime: &mtime}); err != nil {
		t.Fatal(err)
	}
	r.c.mu.Lock()
	r.c.apply([]metaserver.Change{{Index: r.c.cursor + 1, Kind: metaserver.ChangeAttr, Ino: a.Ino, Attr: &set, Origin: r.c.self}})
	v, ok := r.c.attrs[a.Ino]
	r.c.mu.Unlock()
	if !ok || v.unordered || v.attr != set {
		t.Fatalf("after the confirming change: %+v, cached %v", v, ok)
	}
}

// TestMetaCacheForgetInode: a name the cache does not hold is unlinked
// while the inode's attributes are cached (here, from a hard link this mount
// made). The cache cannot tell which inode the name held, so it keeps the
// old link count; the caller that knows (the FUSE mount, whose open-file
// orphan links do exactly this before every unlink of an open file) tells
// it, and the next getattr asks the metaserver.
func TestMetaCacheForgetInode(t *testing.T) {
	r := newCacheRig(t, MetaCacheOptions{})
	ctx := context.Background()
	gate := r.feed.hold() // no feed change drops what the link settles
	a := createFile(t, r.remote, metaserver.RootIno, "a")
	linked, err := r.c.Link(ctx, a.Ino, metaserver.RootIno, "b")
	if err != nil {
		t.Fatal(err)
	}
	if linked.Nlink != 2 {
		t.Fatalf("link answered nlink %d", linked.Nlink)
	}
	if err := r.c.Unlink(ctx, metaserver.RootIno, "a"); err != nil {
		t.Fatal(err)
	}
	if got, _ := r.c.GetAttr(ctx, a.Ino); got.Nlink != 2 {
		t.Fatalf("the cache learned of the unlink by itself (nlink %d); this test no longer shows why ForgetInode exists", got.Nlink)
	}
	r.c.ForgetInode(ctx, a.Ino)
	got, err := r.c.GetAttr(ctx, a.Ino)
	if err != nil {
		t.Fatal(err)
	}
	if got.Nlink != 1 {
		t.Fatalf("after ForgetInode: nlink %d, want 1", got.Nlink)
	}
	close(gate)
}
