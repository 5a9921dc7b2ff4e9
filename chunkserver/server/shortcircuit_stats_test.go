package server_test

import (
	"bytes"
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
)

// attachedClient is a client with short-circuit reads on that has found s
// on this host, as a mount's does, and a shard of s to read through it.
func attachedClient(t *testing.T, s *server.Server) (c *chunkserver.Client, name string, data []byte) {
	t.Helper()
	ctx := context.Background()
	// Closing the idle connections first spares the server's shutdown a
	// wait on the spare one the probe may have dialled.
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c = chunkserver.NewClient(&http.Client{Transport: tr})
	c.EnableShortCircuit(chunkserver.ShortCircuitOptions{RetryAfter: 20 * time.Millisecond, Logger: quietLogger()})
	if !c.ShortCircuitEnabled() {
		t.Fatal("ShortCircuitEnabled after EnableShortCircuit is false")
	}
	if st := c.ShortCircuitStats(); st != (chunkserver.ShortCircuitStats{}) {
		t.Fatalf("stats %+v before any read, want zeros", st)
	}
	waitFor(t, "the server to be attached", func() bool {
		if c.Attached(s.Addr()) {
			return true
		}
		// Starts (or retries) the probe. A missing shard moves no
		// counter whichever way the read goes, should the probe
		// attach the server meanwhile.
		_, _ = c.ReadAt(ctx, s.Addr(), chunkserver.FormatSum(0)+".0", make([]byte, 1), 0)
		return false
	})
	if st := c.ShortCircuitStats(); st != (chunkserver.ShortCircuitStats{Attached: 1}) {
		t.Fatalf("stats %+v once attached, before a read through it: want one server attached, nothing counted", st)
	}
	name = chunkserver.FormatSum(0x5c) + ".0"
	data = randBytes(9, 2*store.BlockSize+100)
	putShard(t, chunkserver.NewClient(nil), s.Addr(), name, data)
	return c, name, data
}

// readVia reads n bytes of name at off through c and checks them.
func readVia(t *testing.T, c *chunkserver.Client, addr, name string, data []byte, off, n int) {
	t.Helper()
	p := make([]byte, n)
	if _, err := c.ReadAt(context.Background(), addr, name, p, int64(off)); err != nil || !bytes.Equal(p, data[off:off+n]) {
		t.Fatalf("ReadAt(off %d, len %d): %v (equal %v)", off, n, err, bytes.Equal(p, data[off:off+n]))
	}
}

// The client's counters say which way its reads went: through a
// descriptor from a plain store, and HTTP once the socket is gone.
func TestClientShortCircuitStatsDescriptorReadsAndFallback(t *testing.T) {
	s := scServer(t, nil)
	c, name, data := attachedClient(t, s)
	readVia(t, c, s.Addr(), name, data, 0, len(data))
	readVia(t, c, s.Addr(), name, data, 10, 1000)
	want := chunkserver.ShortCircuitStats{Attached: 1, Opens: 1, Reads: 2, ReadBytes: int64(len(data) + 1000)}
	if st := c.ShortCircuitStats(); st != want {
		t.Fatalf("after two reads through a descriptor: %+v, want %+v", st, want)
	}

	// A shard without a descriptor yet needs the socket, which is gone:
	// that read goes over HTTP and the socket path is left alone.
	other := chunkserver.FormatSum(0x5d) + ".0"
	otherData := randBytes(10, 3000)
	putShard(t, chunkserver.NewClient(nil), s.Addr(), other, otherData)
	server.CloseShortCircuit(s)
	readVia(t, c, s.Addr(), other, otherData, 0, len(otherData))
	want.Fallbacks, want.SocketErrors = 1, 1
	if st := c.ShortCircuitStats(); st != want {
		t.Fatalf("after a read with the socket gone: %+v, want %+v", st, want)
	}

	// Detached, the server no longer counts as attached, but what went
	// through it stays counted: the series are counters.
	c.Detach(s.Addr())
	want.Attached = 0
	if st := c.ShortCircuitStats(); st != want {
		t.Fatalf("after Detach: %+v, want %+v", st, want)
	}
}

// From an encrypted store the reads come as checked bytes over the socket,
// counted apart from descriptor reads.
func TestClientShortCircuitStatsByteReads(t *testing.T) {
	s := startServer(t, server.Config{DataDir: shortDir(t), ShortCircuit: true, Encryption: testKeys(t)})
	if s.ShortCircuitSocket() == "" {
		t.Fatal("the encrypted server offers no short-circuit socket")
	}
	c, name, data := attachedClient(t, s)
	readVia(t, c, s.Addr(), name, data, 0, len(data))
	readVia(t, c, s.Addr(), name, data, store.BlockSize-3, 7)
	want := chunkserver.ShortCircuitStats{Attached: 1, ByteReads: 2, ByteReadBytes: int64(len(data) + 7)}
	if st := c.ShortCircuitStats(); st != want {
		t.Fatalf("after two reads from an encrypted store: %+v, want %+v", st, want)
	}
}

// A client that never enabled short-circuit reads says so, and counts
// nothing however it reads.
func TestClientShortCircuitStatsOff(t *testing.T) {
	s := scServer(t, nil)
	c := chunkserver.NewClient(nil)
	data := randBytes(11, 500)
	name := chunkserver.FormatSum(0x5e) + ".0"
	putShard(t, c, s.Addr(), name, data)
	readVia(t, c, s.Addr(), name, data, 0, len(data))
	if c.ShortCircuitEnabled() {
		t.Error("ShortCircuitEnabled on a plain client")
	}
	if st := c.ShortCircuitStats(); st != (chunkserver.ShortCircuitStats{}) {
		t.Errorf("stats %+v of a plain client, want zeros", st)
	}
}
