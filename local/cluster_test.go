package local_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/dockyard/dockyard/internal/testwait"
	"github.com/dockyard/dockyard/local"
)

func startCluster(t testing.TB, cfg local.Config) *local.Cluster {
	t.Helper()
	cfg.Dir = t.TempDir()
	cfg.HeartbeatInterval = 100 * time.Millisecond
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := local.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return c
}

// TestRoundTrip writes a file of several erasure-coded chunks through the
// cluster's fs client and reads it back, over the in-process transport (what
// `dockyard serve` uses) and over loopback HTTP, with all servers up and with
// one killed, and checks the shards went the way the cluster says.
func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  local.Config
	}{
		{"in-process", local.Config{}},
		{"in-process-nosync", local.Config{NoSync: true}},
		{"http", local.Config{HTTPOnly: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCluster(t, tc.cfg)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			for i := range c.ChunkserverCount() {
				if got := c.Shards.Attached(c.Chunkserver(i).Addr()); got == tc.cfg.HTTPOnly {
					t.Errorf("chunkserver %d: attached %v, want %v", i, got, !tc.cfg.HTTPOnly)
				}
			}
			data := make([]byte, 9<<20+123) // three chunks of the default 4 MiB
			r := rand.New(rand.NewPCG(1, 2))
			for i := range data {
				data[i] = byte(r.Uint32())
			}
			if _, err := c.FS.WriteFile(ctx, "/f", bytes.NewReader(data), 0o644); err != nil {
				t.Fatal(err)
			}
			// 4+2: the servers together took 1.5 times the file's bytes.
			if in := counter(t, c, "dockyard_chunkserver_bytes_in_total"); in < int64(len(data))*3/2 {
				t.Errorf("chunkservers received %d bytes for a %d-byte file, want at least 1.5x", in, len(data))
			}
			readBack(ctx, t, c, data)
			// A server counts what it sent once its handler returns, which
			// may be just after the client has read the last byte.
			testwait.For(t, "the chunkservers to count at least the bytes read", func() bool {
				return counter(t, c, "dockyard_chunkserver_bytes_out_total") >= int64(len(data))
			})

			// One server down: the file still reads (from the other shards),
			// and a killed server is no longer called in process.
			addr := c.Chunkserver(0).Addr()
			if err := c.Kill(0); err != nil {
				t.Fatal(err)
			}
			if c.Shards.Attached(addr) {
				t.Errorf("a killed chunkserver is still attached")
			}
			readBack(ctx, t, c, data)
			if err := c.Restart(0); err != nil {
				t.Fatal(err)
			}
			if got := c.Shards.Attached(addr); got == tc.cfg.HTTPOnly {
				t.Errorf("restarted chunkserver: attached %v, want %v", got, !tc.cfg.HTTPOnly)
			}
			if err := c.WaitChunkserversUp(c.ChunkserverCount(), 30*time.Second); err != nil {
				t.Fatal(err)
			}
			readBack(ctx, t, c, data)
		})
	}
}

func readBack(ctx context.Context, t *testing.T, c *local.Cluster, want []byte) {
	t.Helper()
	f, err := c.FS.OpenPath(ctx, "/f")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(want))
	if n, err := f.ReadAt(got, 0); (err != nil && err != io.EOF) || n != len(want) {
		t.Fatalf("ReadAt = %d, %v; want %d bytes", n, err, len(want))
	}
	if !bytes.Equal(got, want) {
		t.Fatal("read back different bytes")
	}
}

// counter sums a metric over the running chunkservers, as /metrics shows it.
func counter(t *testing.T, c *local.Cluster, name string) int64 {
	t.Helper()
	var sum int64
	for i := range c.ChunkserverCount() {
		s := c.Chunkserver(i)
		if s == nil {
			continue
		}
		resp, err := http.Get("http://" + s.Addr() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		for line := range strings.Lines(string(body)) {
			if v, ok := strings.CutPrefix(line, name+" "); ok {
				n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				if err != nil {
					t.Fatalf("metrics line %q: %v", line, err)
				}
				sum += n
			}
		}
	}
	return sum
}
