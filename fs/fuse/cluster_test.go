package fuse

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	csserver "github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/internal/testwait"
	"github.com/dockyard/dockyard/metaserver"
	msserver "github.com/dockyard/dockyard/metaserver/server"
)

// testCluster is a single-node in-memory metaserver and six chunkservers in
// this process: enough for 4+2 erasure coding, and fast to start.
type testCluster struct {
	meta    *msserver.Memory
	api     metaserver.API
	servers []*csserver.Server

	stopTick chan struct{}
	tickDone sync.WaitGroup
}

// tickConfig makes a killed chunkserver suspect, then down, within a test's
// patience.
var tickConfig = msserver.Config{SuspectAfter: time.Second, DownAfter: 3 * time.Second}

// needFUSE skips a test that mounts where the kernel offers no FUSE device
// or the process may not mount.
func needFUSE(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		t.Skipf("FUSE is not available here: %v", err)
	}
	f.Close()
}

func newCluster(t testing.TB) *testCluster {
	t.Helper()
	needFUSE(t)
	c := &testCluster{meta: msserver.NewMemory(), stopTick: make(chan struct{})}
	c.api = c.meta.API()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := range 6 {
		s, err := csserver.New(csserver.Config{
			Store:             store.NewMemory(0),
			ID:                metaserver.ServerID(fmt.Sprintf("cs%d", i)),
			Cluster:           c.api,
			Chunks:            c.api,
			HeartbeatInterval: 100 * time.Millisecond,
			ScrubRate:         -1,
			Logger:            quiet,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		c.servers = append(c.servers, s)
		t.Cleanup(func() { s.Close() })
	}
	// The housekeeping a leader runs: liveness, leases, repairs.
	c.tickDone.Add(1)
	go func() {
		defer c.tickDone.Done()
		tk := time.NewTicker(200 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-c.stopTick:
				return
			case <-tk.C:
				c.meta.Tick(tickConfig)
			}
		}
	}()
	t.Cleanup(func() { close(c.stopTick); c.tickDone.Wait() })
	waitFor(t, 10*time.Second, "six chunkservers up", func() bool {
		cs, err := c.api.Chunkservers(context.Background())
		if err != nil {
			return false
		}
		up := 0
		for _, s := range cs {
			if s.State == metaserver.StateUp {
				up++
			}
		}
		return up == 6
	})
	return c
}

// client returns a new fs client of the cluster, as a second host would
// have: with a metadata cache fed by the change feed, as `dockyard mount`
// runs, closed when the test ends.
func (c *testCluster) client(t testing.TB) *dfs.Client {
	cl, _ := c.cachedClient(t)
	return cl
}

// cachedClient is client, with its metadata cache.
func (c *testCluster) cachedClient(t testing.TB) (*dfs.Client, *dfs.MetaCache) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	mc := c.meta.API()
	cache := dfs.NewMetaCache(mc, mc, dfs.MetaCacheOptions{Logger: quiet})
	t.Cleanup(func() { cache.Close() })
	return dfs.New(cache, chunkserver.NewClient(nil), dfs.Options{Logger: quiet}), cache
}

// mount mounts the cluster with a client of its own on a fresh directory and
// unmounts it when the test ends, failed or not.
func (c *testCluster) mount(t testing.TB, opt Options) (string, *Server) {
	t.Helper()
	return c.mountWith(t, c.client(t), opt)
}

// mountWith is mount with a given client.
func (c *testCluster) mountWith(t testing.TB, client *dfs.Client, opt Options) (string, *Server) {
	t.Helper()
	dir := t.TempDir()
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	srv, err := Mount(context.Background(), dir, client, opt)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
			// Never leave a mount behind, even a busy one.
			if err := Unmount(dir, true); err != nil {
				t.Errorf("lazy unmount %s: %v", dir, err)
			}
		}
	})
	return dir, srv
}

// waitFor polls cond until it holds or the deadline passes.
var waitFor = testwait.Within
