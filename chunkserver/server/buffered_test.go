package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"syscall"
	"testing"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
)

// A buffered Put and a Sync over both transports: the shard reads back at
// once, stays pending until the Sync, and a plain Put is never pending.
func TestTransportBufferedPutAndSync(t *testing.T) {
	newServer := func(t *testing.T) *server.Server {
		// No background flush: the test decides when shards become durable.
		return startServer(t, server.Config{DataDir: t.TempDir(), FlushInterval: -1})
	}
	forEachTransport(t, newServer, func(t *testing.T, c *chunkserver.Client, s *server.Server) {
		ctx := context.Background()
		addr := s.Addr()
		d := s.Store().(*store.Disk)
		data := randBytes(42, 300<<10)
		name := "0000000000000b0f.2"
		sum, err := c.PutBuffered(ctx, addr, name, data)
		if err != nil || sum != chunkserver.Sum(data) {
			t.Fatalf("PutBuffered = %016x, %v; want %016x", sum, err, chunkserver.Sum(data))
		}
		got := make([]byte, len(data))
		if _, err := c.ReadAt(ctx, addr, name, got, 0); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("reading a buffered shard back: %v (equal %v)", err, bytes.Equal(got, data))
		}
		if n := d.Unsynced(); n != 1 {
			t.Fatalf("Unsynced after one buffered Put = %d, want 1", n)
		}
		if _, err := c.Put(ctx, addr, "0000000000000b0f.3", data); err != nil {
			t.Fatal(err)
		}
		if n := d.Unsynced(); n != 1 {
			t.Fatalf("Unsynced after a plain Put = %d, want still 1", n)
		}
		if err := c.Sync(ctx, addr); err != nil {
			t.Fatalf("Sync: %v", err)
		}
		if n := d.Unsynced(); n != 0 {
			t.Errorf("Unsynced after Sync = %d, want 0", n)
		}
		// With nothing buffered a Sync is still fine.
		if err := c.Sync(ctx, addr); err != nil {
			t.Fatalf("Sync with nothing buffered: %v", err)
		}
	})
}

// failingSync is a memory store whose Sync fails, as a disk would on EIO.
type failingSync struct{ *store.Memory }

func (failingSync) Sync() error {
	return fmt.Errorf("flushing buffered shards: fdatasync shard 1.0: %w", syscall.EIO)
}

func TestTransportSyncError(t *testing.T) {
	newServer := func(t *testing.T) *server.Server {
		return startServer(t, server.Config{Store: failingSync{store.NewMemory(0)}, ID: "cs-eio"})
	}
	forEachTransport(t, newServer, func(t *testing.T, c *chunkserver.Client, s *server.Server) {
		ctx := context.Background()
		if _, err := c.PutBuffered(ctx, s.Addr(), "0000000000000001.0", []byte("x")); err != nil {
			t.Fatal(err)
		}
		err := c.Sync(ctx, s.Addr())
		var se *chunkserver.ShardError
		if !errors.Is(err, chunkserver.ErrSync) || !errors.As(err, &se) || se.Op != "sync" || se.Addr != s.Addr() {
			t.Fatalf("Sync on a failing disk = %v, want a sync ShardError wrapping ErrSync", err)
		}
		if !strings.Contains(err.Error(), "fdatasync") {
			t.Errorf("Sync error %q lost the server's reason", err)
		}
	})
}

func TestHTTPBufferedFlag(t *testing.T) {
	s := startServer(t, server.Config{DataDir: t.TempDir(), FlushInterval: -1})
	d := s.Store().(*store.Disk)
	put := func(query string) *http.Response {
		t.Helper()
		req, err := http.NewRequest(http.MethodPut, "http://"+s.Addr()+"/shards/0000000000000c0c.0"+query, strings.NewReader("shard"))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	for _, bad := range []string{"?buffered=maybe", "?buffered=2", "?buffered=yes"} {
		if resp := put(bad); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("PUT %s answered %d, want 400", bad, resp.StatusCode)
		}
	}
	if n := d.Unsynced(); n != 0 {
		t.Fatalf("refused PUTs left %d shards pending", n)
	}
	for query, pending := range map[string]int{"?buffered=false": 0, "": 0, "?buffered=1": 1} {
		if resp := put(query); resp.StatusCode != http.StatusCreated {
			t.Fatalf("PUT %q answered %d, want 201", query, resp.StatusCode)
		}
		if n := d.Unsynced(); n != pending {
			t.Errorf("after PUT %q: %d shards pending, want %d", query, n, pending)
		}
		if err := d.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	// Only POST syncs.
	resp, err := http.Get("http://" + s.Addr() + chunkserver.SyncPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET %s answered %d, want 405", chunkserver.SyncPath, resp.StatusCode)
	}
}
