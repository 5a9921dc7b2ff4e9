package local_test

import (
	"bytes"
	"context"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/store"
	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/local"
)

// TestEncryptedClusterReadsThroughTheFSClient is `dockyard mount` next to
// `dockyard serve --encryption-key-file`: the mount's fs client attaches to
// the chunkservers' short-circuit sockets, which hand out no descriptors of
// encrypted files but serve the bytes themselves, and reads the file back
// whole; no shard file holds a recognisable piece of it.
func TestEncryptedClusterReadsThroughTheFSClient(t *testing.T) {
	k, err := store.GenerateKey("test")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := store.NewKeys(k)
	if err != nil {
		t.Fatal(err)
	}
	c := startCluster(t, local.Config{ShortCircuit: true, Encryption: keys})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	data := make([]byte, 5<<20+321)
	r := rand.New(rand.NewPCG(5, 6))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	if _, err := c.FS.WriteFile(ctx, "/f", bytes.NewReader(data), 0o644); err != nil {
		t.Fatal(err)
	}

	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	shards := chunkserver.NewClient(&http.Client{Transport: tr})
	shards.EnableShortCircuit(chunkserver.ShortCircuitOptions{RetryAfter: 20 * time.Millisecond, Writes: true,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	client := dfs.New(c.Meta, shards, dfs.Options{CacheBytes: -1, ReadAhead: -1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	read := func(what string, off, n int) {
		t.Helper()
		f, err := client.OpenPath(ctx, "/f")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		got := make([]byte, n)
		if m, err := f.ReadAt(got, int64(off)); (err != nil && err != io.EOF) || m != n {
			t.Fatalf("%s: ReadAt = %d, %v", what, m, err)
		}
		if !bytes.Equal(got, data[off:off+n]) {
			t.Fatalf("%s: read back different bytes", what)
		}
	}
	read("first read, over HTTP while the probes run", 0, len(data))
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
	before := counter(t, c, "dockyard_chunkserver_short_circuit_reads_total")
	read("read over the sockets", 0, len(data))
	read("ranged read over the sockets", 1<<20-7, 300<<10)
	if counter(t, c, "dockyard_chunkserver_short_circuit_reads_total") == before {
		t.Error("no read went over the short-circuit sockets")
	}
	if n := counter(t, c, "dockyard_chunkserver_short_circuit_opens_total"); n != 0 {
		t.Errorf("chunkservers handed out %d descriptors of encrypted shard files", n)
	}

	// Writes through the sockets are encrypted by the servers too.
	more := data[:2<<20]
	if _, err := client.WriteFile(ctx, "/g", bytes.NewReader(more), 0o644); err != nil {
		t.Fatal(err)
	}
	probe := data[3<<20 : 3<<20+64]
	err = filepath.WalkDir(c.ChunkserverDir(0)+"/..", func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || e.Type()&fs.ModeSocket != 0 {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, probe) || bytes.Contains(b, more[:64]) {
			t.Errorf("%s holds file bytes in clear", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
