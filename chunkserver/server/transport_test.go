package server_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
)

// The client's contract, run over both transports: HTTP over loopback, and
// in-process (Client.Attach) as `dockyard serve` uses it. Every test of this
// file runs once per transport with the same table and the same assertions,
// so a caller cannot tell the two apart.

// countingServer wraps a server's in-process transport and counts the calls
// that reach it, so the local runs prove they did not fall back to HTTP.
type countingServer struct {
	chunkserver.LocalServer
	calls atomic.Int64
}

func (c *countingServer) PutShard(ctx context.Context, name string, data []byte) (uint64, error) {
	c.calls.Add(1)
	return c.LocalServer.PutShard(ctx, name, data)
}

func (c *countingServer) ReadShard(ctx context.Context, name string, p []byte, off int64) error {
	c.calls.Add(1)
	return c.LocalServer.ReadShard(ctx, name, p, off)
}

func (c *countingServer) StatShard(ctx context.Context, name string) (chunkserver.ShardInfo, error) {
	c.calls.Add(1)
	return c.LocalServer.StatShard(ctx, name)
}

func (c *countingServer) DeleteShard(ctx context.Context, name string) error {
	c.calls.Add(1)
	return c.LocalServer.DeleteShard(ctx, name)
}

func (c *countingServer) PutShardBuffered(ctx context.Context, name string, data []byte) (uint64, error) {
	c.calls.Add(1)
	return c.LocalServer.(chunkserver.LocalBufferedServer).PutShardBuffered(ctx, name, data)
}

func (c *countingServer) SyncShards(ctx context.Context) error {
	c.calls.Add(1)
	return c.LocalServer.(chunkserver.LocalBufferedServer).SyncShards(ctx)
}

// forEachTransport runs fn once over HTTP and once in-process against a
// server made by newServer.
func forEachTransport(t *testing.T, newServer func(t *testing.T) *server.Server,
	fn func(t *testing.T, c *chunkserver.Client, s *server.Server)) {
	for _, local := range []bool{false, true} {
		name := "http"
		if local {
			name = "local"
		}
		t.Run(name, func(t *testing.T) {
			s := newServer(t)
			c := chunkserver.NewClient(nil)
			if !local {
				fn(t, c, s)
				return
			}
			cs := &countingServer{LocalServer: s}
			c.Attach(s.Addr(), cs)
			fn(t, c, s)
			if cs.calls.Load() == 0 {
				t.Errorf("no call reached the in-process transport")
			}
		})
	}
}

func diskServer(t *testing.T) *server.Server {
	return startServer(t, server.Config{DataDir: t.TempDir()})
}

func TestTransportRoundTrip(t *testing.T) {
	forEachTransport(t, diskServer, func(t *testing.T, c *chunkserver.Client, s *server.Server) {
		ctx := context.Background()
		addr := s.Addr()
		for i, size := range []int{0, 1, store.BlockSize - 1, store.BlockSize, store.BlockSize + 1, 1<<20 + 3} {
			name := chunkserver.FormatSum(uint64(i)) + ".0"
			data := randBytes(uint64(size), size)
			sum, err := c.Put(ctx, addr, name, data)
			if err != nil {
				t.Fatalf("Put %d bytes: %v", size, err)
			}
			if sum != chunkserver.Sum(data) {
				t.Errorf("Put sum %016x, want %016x", sum, chunkserver.Sum(data))
			}
			info, err := c.Stat(ctx, addr, name)
			if err != nil || info != (chunkserver.ShardInfo{Size: int64(size), Sum: sum}) {
				t.Errorf("Stat = %+v, %v; want size %d sum %016x", info, err, size, sum)
			}
			got := make([]byte, size)
			if n, err := c.ReadAt(ctx, addr, name, got, 0); err != nil || n != size || !bytes.Equal(got, data) {
				t.Fatalf("ReadAt whole %d-byte shard = %d, %v (equal %v)", size, n, err, bytes.Equal(got, data))
			}
			for _, off := range []int{1, store.BlockSize - 1, store.BlockSize, store.BlockSize + 1} {
				for _, l := range []int{1, 2, store.BlockSize} {
					if off+l > size {
						continue
					}
					p := make([]byte, l)
					if n, err := c.ReadAt(ctx, addr, name, p, int64(off)); err != nil || n != l || !bytes.Equal(p, data[off:off+l]) {
						t.Errorf("size %d: ReadAt(off %d, len %d) = %d, %v (equal %v)", size, off, l, n, err, bytes.Equal(p, data[off:off+l]))
					}
				}
			}
			// Across the end and wholly past it: the same error both ways.
			for _, off := range []int{size - 1, size, size + 10} {
				if off < 0 {
					continue
				}
				if _, err := c.ReadAt(ctx, addr, name, make([]byte, 2), int64(off)); !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Errorf("ReadAt(off %d, len 2) of a %d-byte shard = %v, want io.ErrUnexpectedEOF", off, size, err)
				}
			}
			if n, err := c.ReadAt(ctx, addr, name, nil, 0); n != 0 || err != nil {
				t.Errorf("empty ReadAt = %d, %v", n, err)
			}
			if err := c.Delete(ctx, addr, name); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if _, err := c.Stat(ctx, addr, name); !errors.Is(err, chunkserver.ErrNotFound) {
				t.Errorf("Stat after Delete = %v, want ErrNotFound", err)
			}
		}
		st, err := c.Status(ctx, addr)
		if err != nil || st.ID != string(s.ID()) || st.Shards != 0 || st.Capacity <= 0 {
			t.Errorf("Status = %+v, %v", st, err)
		}
	})
}

func TestTransportErrors(t *testing.T) {
	forEachTransport(t, diskServer, func(t *testing.T, c *chunkserver.Client, s *server.Server) {
		ctx := context.Background()
		addr := s.Addr()
		missing := "00000000000000aa.1"
		var se *chunkserver.ShardError
		var st *chunkserver.StatusError
		if _, err := c.ReadAt(ctx, addr, missing, make([]byte, 4), 0); !errors.Is(err, chunkserver.ErrNotFound) ||
			!errors.As(err, &st) || st.Code != http.StatusNotFound {
			t.Errorf("ReadAt(missing) = %v, want a 404 StatusError wrapping ErrNotFound", err)
		}
		if _, err := c.Stat(ctx, addr, missing); !errors.As(err, &se) || se.Op != "stat" || se.Addr != addr ||
			se.Name != missing || !errors.Is(err, chunkserver.ErrNotFound) {
			t.Errorf("Stat(missing) = %v, want a ShardError naming %s and %s wrapping ErrNotFound", err, addr, missing)
		}
		if err := c.Delete(ctx, addr, missing); err != nil {
			t.Errorf("Delete(missing) = %v, want success", err)
		}
		if _, err := c.Put(ctx, addr, "../../etc.1", []byte("x")); !errors.Is(err, chunkserver.ErrBadName) {
			t.Errorf("Put(bad name) = %v, want ErrBadName", err)
		}
		if _, err := c.ReadAt(ctx, addr, missing, make([]byte, 1), -1); err == nil {
			t.Errorf("ReadAt at a negative offset succeeded")
		}
		cancelled, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := c.Put(cancelled, addr, missing, []byte("x")); !errors.Is(err, context.Canceled) {
			t.Errorf("Put with a cancelled context = %v, want context.Canceled", err)
		}
		if _, err := c.Stat(ctx, addr, missing); !errors.Is(err, chunkserver.ErrNotFound) {
			t.Errorf("the cancelled Put stored a shard: %v", err)
		}
	})
}

func TestTransportCorruptShard(t *testing.T) {
	var meta *fakeMeta
	var disk *store.Disk
	newServer := func(t *testing.T) *server.Server {
		d, err := store.OpenDisk(t.TempDir(), 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		meta, disk = &fakeMeta{}, d
		return startServer(t, server.Config{Store: d, ID: "cs-corrupt", Chunks: meta})
	}
	forEachTransport(t, newServer, func(t *testing.T, c *chunkserver.Client, s *server.Server) {
		ctx := context.Background()
		name := "0000000000000042.5"
		data := randBytes(5, 4*store.BlockSize)
		if _, err := c.Put(ctx, s.Addr(), name, data); err != nil {
			t.Fatal(err)
		}
		flipOnDisk(t, disk.Path(name), 2*store.BlockSize+7)
		p := make([]byte, len(data))
		n, err := c.ReadAt(ctx, s.Addr(), name, p, 0)
		var st *chunkserver.StatusError
		if !errors.Is(err, chunkserver.ErrCorrupt) || n != 0 || !errors.As(err, &st) || st.Code != http.StatusInternalServerError {
			t.Fatalf("ReadAt of a corrupt shard = %d, %v; want 0 and a 500 wrapping ErrCorrupt", n, err)
		}
		if !bytes.Equal(p, make([]byte, len(p))) {
			t.Errorf("bytes of a shard that failed its checksum were handed out")
		}
		waitFor(t, "the corrupt read to be reported", func() bool {
			_, _, reports := meta.snapshot()
			return len(reports) > 0
		})
		q := make([]byte, 2*store.BlockSize)
		if _, err := c.ReadAt(ctx, s.Addr(), name, q, 0); err != nil || !bytes.Equal(q, data[:2*store.BlockSize]) {
			t.Errorf("ReadAt of the intact blocks: %v", err)
		}
		if m := scrape(t, s); !strings.Contains(m, "dockyard_chunkserver_corrupt_total 1\n") {
			t.Errorf("the corrupt read is not counted in /metrics")
		}
		if _, _, reports := meta.snapshot(); len(reports) != 1 || reports[0] != name {
			t.Errorf("reports = %v, want one of %s", reports, name)
		}
	})
}

func TestTransportLimits(t *testing.T) {
	newServer := func(t *testing.T) *server.Server {
		return startServer(t, server.Config{DataDir: t.TempDir(), Capacity: 300 << 10, MaxShardSize: 256 << 10})
	}
	forEachTransport(t, newServer, func(t *testing.T, c *chunkserver.Client, s *server.Server) {
		ctx := context.Background()
		var st *chunkserver.StatusError
		if _, err := c.Put(ctx, s.Addr(), "0000000000000001.9", make([]byte, 257<<10)); !errors.As(err, &st) ||
			st.Code != http.StatusRequestEntityTooLarge {
			t.Errorf("Put over MaxShardSize = %v, want HTTP 413", err)
		}
		if _, err := c.Put(ctx, s.Addr(), "0000000000000001.0", make([]byte, 200<<10)); err != nil {
			t.Fatalf("Put within capacity: %v", err)
		}
		_, err := c.Put(ctx, s.Addr(), "0000000000000001.1", make([]byte, 200<<10))
		if !errors.Is(err, chunkserver.ErrNoSpace) || !errors.As(err, &st) || st.Code != http.StatusInsufficientStorage {
			t.Fatalf("Put over capacity = %v, want a 507 wrapping ErrNoSpace", err)
		}
		for _, n := range []string{"0000000000000001.1", "0000000000000001.9"} {
			if _, err := c.Stat(ctx, s.Addr(), n); !errors.Is(err, chunkserver.ErrNotFound) {
				t.Errorf("the refused shard %s exists: %v", n, err)
			}
		}
	})
}

// TestTransportMetrics checks the in-process calls are counted as the HTTP
// requests they replace.
func TestTransportMetrics(t *testing.T) {
	forEachTransport(t, diskServer, func(t *testing.T, c *chunkserver.Client, s *server.Server) {
		ctx := context.Background()
		name := "00000000000000e1.0"
		if _, err := c.Put(ctx, s.Addr(), name, make([]byte, 1000)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ReadAt(ctx, s.Addr(), name, make([]byte, 100), 10); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Stat(ctx, s.Addr(), "00000000000000e1.1"); !errors.Is(err, chunkserver.ErrNotFound) {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, s.Addr(), name); err != nil {
			t.Fatal(err)
		}
		m := scrape(t, s)
		for _, want := range []string{
			"dockyard_chunkserver_bytes_in_total 1000\n",
			"dockyard_chunkserver_bytes_out_total 100\n",
			`dockyard_chunkserver_requests_total{method="PUT",code="201"} 1` + "\n",
			`dockyard_chunkserver_requests_total{method="GET",code="206"} 1` + "\n",
			`dockyard_chunkserver_requests_total{method="HEAD",code="404"} 1` + "\n",
			`dockyard_chunkserver_requests_total{method="DELETE",code="204"} 1` + "\n",
		} {
			if !strings.Contains(m, want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	})
}

// TestTransportClosedServer: a closed server fails calls as an unreachable
// one does — not with a status a caller would take for the shard's state.
func TestTransportClosedServer(t *testing.T) {
	newServer := func(t *testing.T) *server.Server {
		s, err := server.New(server.Config{Store: store.NewMemory(0), ID: "cs-closed", Logger: quietLogger(), ScrubRate: -1})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
		return s
	}
	forEachTransport(t, newServer, func(t *testing.T, c *chunkserver.Client, s *server.Server) {
		ctx := context.Background()
		name := "00000000000000c1.0"
		if _, err := c.Put(ctx, s.Addr(), name, []byte("before")); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		var st *chunkserver.StatusError
		var se *chunkserver.ShardError
		for op, err := range map[string]error{
			"put":    func() error { _, err := c.Put(ctx, s.Addr(), name, []byte("after")); return err }(),
			"read":   func() error { _, err := c.ReadAt(ctx, s.Addr(), name, make([]byte, 6), 0); return err }(),
			"stat":   func() error { _, err := c.Stat(ctx, s.Addr(), name); return err }(),
			"delete": c.Delete(ctx, s.Addr(), name),
		} {
			if err == nil || errors.As(err, &st) || !errors.As(err, &se) || se.Op != op {
				t.Errorf("%s on a closed server = %v, want a ShardError that is no StatusError", op, err)
			}
		}
	})
	// In-process, the failure names its cause.
	s := newServer(t)
	c := chunkserver.NewClient(nil)
	c.Attach(s.Addr(), s)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat(context.Background(), s.Addr(), "00000000000000c1.0"); !errors.Is(err, chunkserver.ErrServerClosed) {
		t.Errorf("Stat on a closed in-process server = %v, want ErrServerClosed", err)
	}
}

// TestDetach sends calls over HTTP again once a server is detached.
func TestDetach(t *testing.T) {
	s := diskServer(t)
	cs := &countingServer{LocalServer: s}
	c := chunkserver.NewClient(nil)
	c.Attach(s.Addr(), cs)
	ctx := context.Background()
	name := "00000000000000d1.0"
	if _, err := c.Put(ctx, s.Addr(), name, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if !c.Attached(s.Addr()) {
		t.Errorf("Attached = false after Attach")
	}
	c.Detach(s.Addr())
	c.Detach(s.Addr()) // twice is harmless
	if c.Attached(s.Addr()) {
		t.Errorf("Attached = true after Detach")
	}
	if _, err := c.Stat(ctx, s.Addr(), name); err != nil {
		t.Fatal(err)
	}
	if got := cs.calls.Load(); got != 1 {
		t.Errorf("%d calls went in-process, want only the one before Detach", got)
	}
}

func scrape(t *testing.T, s *server.Server) string {
	t.Helper()
	resp, err := http.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
