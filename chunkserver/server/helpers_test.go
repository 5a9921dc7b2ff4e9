package server_test

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/internal/testwait"
	"github.com/dockyard/dockyard/metaserver"
)

// fakeMeta plays the metaserver: it records heartbeats, completed repairs and
// bad-shard reports, and hands out whatever work a test queues. Methods of the
// embedded interfaces that the chunkserver never calls stay nil.
type fakeMeta struct {
	metaserver.Cluster
	metaserver.Chunks

	mu         sync.Mutex
	heartbeats []metaserver.Heartbeat
	next       metaserver.HeartbeatReply // handed out once, with the next heartbeat
	repaired   []metaserver.RepairDone
	reports    []string // "chunk/index"

	// strays are the shard names StrayShards reports. With strayCalls set,
	// each call first sends the names it was asked about there, then waits
	// for strayRelease, so a test paces the passes.
	strays       map[string]bool
	strayErr     error // answered instead while set
	strayCalls   chan []string
	strayRelease chan struct{}
}

func (f *fakeMeta) StrayShards(ctx context.Context, _ metaserver.ServerID, names []string) ([]string, error) {
	if f.strayCalls != nil {
		select {
		case f.strayCalls <- names:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		select {
		case <-f.strayRelease:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.strayErr != nil {
		return nil, f.strayErr
	}
	var out []string
	for _, n := range names {
		if f.strays[n] {
			out = append(out, n)
		}
	}
	return out, nil
}

func (f *fakeMeta) Heartbeat(_ context.Context, hb metaserver.Heartbeat) (metaserver.HeartbeatReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.heartbeats = append(f.heartbeats, hb)
	r := f.next
	f.next = metaserver.HeartbeatReply{}
	return r, nil
}

func (f *fakeMeta) CompleteRepair(_ context.Context, r metaserver.RepairDone) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.repaired = append(f.repaired, r)
	return nil
}

func (f *fakeMeta) ReportBadShard(_ context.Context, id metaserver.ChunkID, index int, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reports = append(f.reports, metaserver.ShardName(id, index))
	return nil
}

func (f *fakeMeta) queue(r metaserver.HeartbeatReply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next = r
}

func (f *fakeMeta) snapshot() (hbs []metaserver.Heartbeat, repaired []metaserver.RepairDone, reports []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]metaserver.Heartbeat(nil), f.heartbeats...),
		append([]metaserver.RepairDone(nil), f.repaired...),
		append([]string(nil), f.reports...)
}

// waitFor polls cond until it holds or the deadline passes.
var waitFor = testwait.For

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// startServer runs a chunkserver on a free loopback port until the test ends.
func startServer(t *testing.T, cfg server.Config) *server.Server {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if cfg.ScrubRate == 0 {
		cfg.ScrubRate = -1 // tests that want a scrubber ask for one
	}
	s, err := server.New(cfg)
	if err != nil {
		t.Fatalf("server.New: %v", err)
	}
	if err := s.Start(context.Background()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// memServer runs a chunkserver over an in-memory store.
func memServer(t *testing.T, id string, meta *fakeMeta) (*server.Server, *store.Memory) {
	t.Helper()
	m := store.NewMemory(0)
	cfg := server.Config{Store: m, ID: metaserver.ServerID(id)}
	if meta != nil {
		cfg.Cluster, cfg.Chunks = meta, meta
		cfg.HeartbeatInterval = 20 * time.Millisecond
	}
	return startServer(t, cfg), m
}
