package registry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	csserver "github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/metaserver"
	msserver "github.com/dockyard/dockyard/metaserver/server"
)

// newDFSStore starts an in-process Dockyard cluster — an in-memory
// metaserver and six chunkservers on memory stores, so 4+2 erasure coding is
// real — and returns a DFSBlobStore over an fs client of it. Chunks are
// small so a test blob spans several stripes.
func newDFSStore(t *testing.T) *DFSBlobStore {
	t.Helper()
	return newDFSStoreOpt(t, fs.Options{ChunkSize: 256 << 10, ReplicateBelow: 16 << 10})
}

// newDFSStoreOpt is newDFSStore with the given fs client options.
func newDFSStoreOpt(t *testing.T, opt fs.Options) *DFSBlobStore {
	t.Helper()
	return newDFSStoreCap(t, opt, 0)
}

// newDFSStoreCap is newDFSStoreOpt with every chunkserver limited to
// capacity bytes (0: unlimited).
func newDFSStoreCap(t *testing.T, opt fs.Options, capacity int64) *DFSBlobStore {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	mem := msserver.NewMemory()
	api := mem.API()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	for i := range 6 {
		cs, err := csserver.New(csserver.Config{
			Store: store.NewMemory(capacity), ID: metaserver.ServerID(fmt.Sprintf("cs%d", i)),
			Cluster: api, Chunks: api, ScrubRate: -1, HeartbeatInterval: 50 * time.Millisecond,
			Logger: quiet,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := cs.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cs.Close() })
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		infos, err := api.Chunkservers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		up := 0
		for _, in := range infos {
			if in.State == metaserver.StateUp {
				up++
			}
		}
		if up == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of 6 chunkservers up", up)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Idle client connections would hold up the chunkservers' graceful
	// shutdown; this cleanup runs before theirs.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	opt.Logger = quiet
	c := fs.New(api, chunkserver.NewClient(&http.Client{Transport: tr}), opt)
	s, err := NewDFSBlobStore(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
