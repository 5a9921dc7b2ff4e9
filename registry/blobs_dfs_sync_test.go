package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
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

// TestCommitUploadMakesBlobDurable: the fs client writes shards buffered, so
// an upload's bytes sit unsynced on the chunkservers' disks until the
// registry syncs them: when a PATCH's writer closes (the registry then
// acknowledges the range) and again when the upload is committed, so that no
// blob becomes visible while a chunkserver holds a shard of it that is not
// durable.
func TestCommitUploadMakesBlobDurable(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	mem := msserver.NewMemory()
	api := mem.API()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var disks []*store.Disk
	for i := range 6 {
		cs, err := csserver.New(csserver.Config{
			DataDir: t.TempDir(), ID: metaserver.ServerID(fmt.Sprintf("cs%d", i)),
			// No background flush: only a Sync makes shards durable here.
			FlushInterval: -1,
			Cluster:       api, Chunks: api, ScrubRate: -1, HeartbeatInterval: 50 * time.Millisecond,
			Logger: quiet,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := cs.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cs.Close() })
		disks = append(disks, cs.Store().(*store.Disk))
	}
	deadline := time.Now().Add(10 * time.Second)
	for up := 0; up < 6; {
		infos, err := api.Chunkservers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		up = 0
		for _, in := range infos {
			if in.State == metaserver.StateUp {
				up++
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of 6 chunkservers up", up)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	t.Cleanup(tr.CloseIdleConnections)
	c := fs.New(api, chunkserver.NewClient(&http.Client{Transport: tr}), fs.Options{ChunkSize: 256 << 10, Logger: quiet})
	s, err := NewDFSBlobStore(ctx, c)
	if err != nil {
		t.Fatal(err)
	}

	unsynced := func() int {
		n := 0
		for _, d := range disks {
			n += d.Unsynced()
		}
		return n
	}
	blob := make([]byte, 700<<10)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range blob {
		blob[i] = byte(r.Uint32())
	}
	d := digestOf("sha256", blob)
	// Each PATCH is acknowledged with the range the registry holds, so the
	// writer's Close makes its bytes durable.
	if err := s.CreateUpload(ctx, "u1"); err != nil {
		t.Fatal(err)
	}
	w, err := s.WriteUpload(ctx, "u1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(w, bytes.NewReader(blob[:300<<10])); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := unsynced(); n != 0 {
		t.Fatalf("%d shards not durable after the upload's writer closed", n)
	}

	// The commit syncs too: here the rest of the upload is written past
	// the writer (as a process that stopped before its Close would leave
	// it; a plain Close leaves shards buffered, which also shows the
	// writer's Close above is what synced), and CommitUpload must still not make the blob visible before
	// those bytes are durable.
	f, err := c.OpenPath(ctx, s.uploadPath("u1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(blob[300<<10:], 300<<10); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if unsynced() == 0 {
		t.Fatal("test set-up: the rest of the upload was durable before the commit; nothing left to check")
	}
	if err := s.CommitUpload(ctx, "u1", int64(len(blob)), d); err != nil {
		t.Fatalf("CommitUpload: %v", err)
	}
	if n := unsynced(); n != 0 {
		t.Errorf("%d shards not durable after the blob was committed", n)
	}
	if size, err := s.Stat(ctx, d); err != nil || size != int64(len(blob)) {
		t.Errorf("Stat of the committed blob = %d, %v", size, err)
	}
}
