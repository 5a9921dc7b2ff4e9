package fuse

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/metaserver"
)

// TestChangesReachOtherMountThroughFeed: mount B sees mount A's chmod,
// rename and unlink only through the change feed. In "cache", B's kernel
// keeps nothing and asks B's metadata cache on every stat, which holds what
// B saw until the feed says otherwise. In "kernel", B's kernel keeps what it
// saw for a minute (FeedTimeout) and the feed's changes are pushed to it.
func TestChangesReachOtherMountThroughFeed(t *testing.T) {
	t.Run("cache", func(t *testing.T) {
		testChangesThroughFeed(t, Options{EntryTimeout: -1, AttrTimeout: -1, FeedTimeout: -1}, false)
	})
	t.Run("kernel", func(t *testing.T) {
		// No short timeouts to fall back on: whatever the kernel keeps,
		// it keeps because the feed is followed.
		testChangesThroughFeed(t, Options{EntryTimeout: -1, AttrTimeout: -1}, true)
	})
}

func testChangesThroughFeed(t *testing.T, optB Options, kernelKeeps bool) {
	c := newCluster(t)
	a, _ := c.mount(t, Options{})
	clientB, cacheB := c.cachedClient(t)
	b, _ := c.mountWith(t, clientB, optB)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cacheB.WaitLive(ctx); err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(filepath.Join(a, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	stat := func(name string) (os.FileInfo, error) { return os.Stat(filepath.Join(b, name)) }
	waitFor(t, 5*time.Second, "B to see f", func() bool { _, err := stat("f"); return err == nil })
	before := cacheB.Stats()
	for range 3 {
		if fi, err := stat("f"); err != nil || fi.Mode().Perm() != 0o644 {
			t.Fatalf("B stat f: %v, %v", fi, err)
		}
	}
	// Make sure the stats were answered where this variant says, or the
	// test would not exercise the feed.
	after := cacheB.Stats()
	asked := after.Hits + after.Misses - before.Hits - before.Misses
	switch {
	case !kernelKeeps && after.Hits == before.Hits:
		t.Fatal("B's stats never hit its metadata cache")
	case kernelKeeps && asked != 0:
		t.Fatalf("B's kernel asked the metadata cache %d times; it should keep what it saw", asked)
	}

	if err := os.Chmod(filepath.Join(a, "f"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "B to see the chmod", func() bool {
		fi, err := stat("f")
		return err == nil && fi.Mode().Perm() == 0o600
	})

	if err := os.Rename(filepath.Join(a, "f"), filepath.Join(a, "g")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "B to see the rename", func() bool {
		_, errOld := stat("f")
		fi, errNew := stat("g")
		return errors.Is(errOld, fs.ErrNotExist) && errNew == nil && fi.Mode().Perm() == 0o600
	})

	if err := os.Remove(filepath.Join(a, "g")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "B to see the unlink", func() bool {
		_, err := stat("g")
		return errors.Is(err, fs.ErrNotExist)
	})
}

// breakableFeed passes the change feed through until broken.
type breakableFeed struct {
	w      metaserver.Watcher
	broken atomic.Bool
}

var errBroken = errors.New("feed broken by the test")

func (f *breakableFeed) Watch(ctx context.Context, since uint64, wait time.Duration) (metaserver.WatchReply, error) {
	if f.broken.Load() {
		return metaserver.WatchReply{}, errBroken
	}
	return f.w.Watch(ctx, since, wait)
}

// mountBreakable mounts the cluster again behind a metadata cache whose
// change feed the test can break (feed.broken), with short poll and lag
// bounds so a failure is noticed within a fraction of a second. It returns
// once the cache follows the feed.
func (c *testCluster) mountBreakable(t *testing.T) (string, *Server, *dfs.MetaCache, *breakableFeed) {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	mc := c.meta.API()
	feed := &breakableFeed{w: mc}
	cache := dfs.NewMetaCache(mc, feed, dfs.MetaCacheOptions{PollWait: 100 * time.Millisecond, MaxLag: 100 * time.Millisecond, Logger: quiet})
	t.Cleanup(func() { cache.Close() })
	dir, srv := c.mountWith(t, dfs.New(cache, chunkserver.NewClient(nil), dfs.Options{Logger: quiet}), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cache.WaitLive(ctx); err != nil {
		t.Fatal(err)
	}
	return dir, srv, cache, feed
}

// TestKernelForgetsWhenFeedFails: once the feed fails, B's kernel must not
// go on answering from what it kept for the long timeout, since changes may
// now go unseen.
func TestKernelForgetsWhenFeedFails(t *testing.T) {
	c := newCluster(t)
	a, _ := c.mount(t, Options{})
	b, _, cacheB, feed := c.mountBreakable(t)
	if err := os.WriteFile(filepath.Join(a, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "B to see f", func() bool { _, err := os.Stat(filepath.Join(b, "f")); return err == nil })
	// Once more, so the kernel holds f from a lookup made while following.
	if _, err := os.Stat(filepath.Join(b, "f")); err != nil {
		t.Fatal(err)
	}

	feed.broken.Store(true)
	waitFor(t, 5*time.Second, "B's cache to stop following", func() bool { return !cacheB.Stats().Live })
	if err := os.Chmod(filepath.Join(a, "f"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Without the feed, B is back to the short timeouts (1 s) at worst.
	waitFor(t, 5*time.Second, "B to see the chmod without the feed", func() bool {
		fi, err := os.Stat(filepath.Join(b, "f"))
		return err == nil && fi.Mode().Perm() == 0o600
	})
}
