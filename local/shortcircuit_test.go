package local_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/internal/testwait"
	"github.com/dockyard/dockyard/local"
)

// TestShortCircuitReadsThroughTheFSClient is what `dockyard mount` does next
// to `dockyard serve`: another fs client in the same host reads files
// through the chunkservers' short-circuit sockets, not their HTTP API, and
// keeps reading correct bytes while a chunkserver dies and comes back.
func TestShortCircuitReadsThroughTheFSClient(t *testing.T) {
	c := startCluster(t, local.Config{ShortCircuit: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := make([]byte, 9<<20+123)
	r := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if _, err := c.FS.WriteFile(ctx, "/f", bytes.NewReader(data), 0o644); err != nil {
		t.Fatal(err)
	}

	// The "mount": its own shard client, no block cache, so every read
	// reaches the shards.
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	shards := chunkserver.NewClient(&http.Client{Transport: tr})
	shards.EnableShortCircuit(chunkserver.ShortCircuitOptions{DownFor: 50 * time.Millisecond, RetryAfter: 20 * time.Millisecond, Writes: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	client := fs.New(c.Meta, shards, fs.Options{CacheBytes: -1, ReadAhead: -1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	read := func(what string) {
		t.Helper()
		f, err := client.OpenPath(ctx, "/f")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		got := make([]byte, len(data))
		if n, err := f.ReadAt(got, 0); (err != nil && err != io.EOF) || n != len(data) {
			t.Fatalf("%s: ReadAt = %d, %v", what, n, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("%s: read back different bytes", what)
		}
	}
	read("first read, over HTTP while the probes run")
	// Servers holding only parity were not read from, so not probed yet,
	// and a probe may have timed out on a busy machine: any read starts
	// one (again, after RetryAfter).
	waitFor(t, "every chunkserver attached", func() bool {
		all := true
		for i := range c.ChunkserverCount() {
			if addr := c.Chunkserver(i).Addr(); !shards.Attached(addr) {
				all = false
				_, _ = shards.ReadAt(ctx, addr, "0000000000000000.0", make([]byte, 1), 0)
			}
		}
		return all
	})
	out := counter(t, c, "dockyard_chunkserver_bytes_out_total")
	read("short-circuit read")
	if after := counter(t, c, "dockyard_chunkserver_bytes_out_total"); after != out {
		t.Errorf("chunkservers sent %d bytes over HTTP for a short-circuit read", after-out)
	}

	// A spare connection the transport dialled would hold up the
	// server's shutdown for seconds.
	tr.CloseIdleConnections()
	if err := c.Kill(1); err != nil {
		t.Fatal(err)
	}
	read("with a chunkserver killed")
	if err := c.Restart(1); err != nil {
		t.Fatal(err)
	}
	read("after the chunkserver restarted on a new socket")
	tr.CloseIdleConnections()
	if err := c.Kill(2); err != nil {
		t.Fatal(err)
	}
	read("with another chunkserver killed")
	if err := c.Restart(2); err != nil {
		t.Fatal(err)
	}

	// Writes go over the sockets too (over HTTP to a server whose socket
	// path is marked down): either way the file arrives whole.
	if err := c.WaitChunkserversUp(c.ChunkserverCount(), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	in := counter(t, c, "dockyard_chunkserver_bytes_in_total")
	more := data[:5<<20]
	if _, err := client.WriteFile(ctx, "/g", bytes.NewReader(more), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := counter(t, c, "dockyard_chunkserver_bytes_in_total") - in; got < int64(len(more)) {
		t.Errorf("chunkservers took %d bytes for a %d-byte file", got, len(more))
	}
	f, err := c.FS.OpenPath(ctx, "/g")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(more))
	if n, err := f.ReadAt(got, 0); (err != nil && err != io.EOF) || n != len(more) || !bytes.Equal(got, more) {
		t.Fatalf("reading back a file written through the sockets: %d, %v", n, err)
	}
}

// waitFor polls cond until it holds or the deadline passes.
var waitFor = testwait.For
