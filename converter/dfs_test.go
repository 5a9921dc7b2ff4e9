package converter_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"path"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dockyard/dockyard/converter"
	"github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/local"
)

// countingSource counts the blob bytes a reader pulls from the DFS.
type countingSource struct {
	converter.BlobSource
	n atomic.Int64
}

type countingBlob struct {
	r io.ReaderAt
	n *atomic.Int64
}

func (c countingBlob) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

func (c *countingSource) OpenBlob(ctx context.Context, d digest.Digest) (converter.Blob, error) {
	b, err := c.BlobSource.OpenBlob(ctx, d)
	b.ReaderAt = countingBlob{b.ReaderAt, &c.n}
	return b, err
}

// TestDFSEndToEnd pushes an image's blobs into a real local cluster (an
// in-process metaserver and six chunkservers), indexes it through DFSStore,
// and reads files of the stored tree through an fs client whose LayerOpener
// is the converter: the path a lazy mount takes.
func TestDFSEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cl, err := local.Start(local.Config{Dir: t.TempDir(), HeartbeatInterval: 100 * time.Millisecond, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()

	// A layer with one big incompressible payload and a few small files.
	r := rand.New(rand.NewPCG(5, 5))
	payload := make([]byte, 16<<20)
	for i := range payload {
		payload[i] = byte(r.Uint32())
	}
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	add := func(h *tar.Header, data []byte) {
		h.Size = int64(len(data))
		h.ModTime = time.Unix(1700000000, 0)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	add(&tar.Header{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0755}, nil)
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "bin/true", Mode: 0755}, []byte("#!/bin/sh\nexit 0\n"))
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "payload", Mode: 0644}, payload)
	add(&tar.Header{Typeflag: tar.TypeReg, Name: "etc/hostname", Mode: 0644}, []byte("dockyard\n"))
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(raw.Bytes())
	zw.Close()

	put := func(b []byte) ocispec.Descriptor {
		d := digest.FromBytes(b)
		if _, err := cl.FS.MkdirAll(ctx, converter.BlobsDir+"/sha256", 0o755); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.FS.WriteFile(ctx, converter.BlobPath(d), bytes.NewReader(b), 0o644); err != nil {
			t.Fatal(err)
		}
		return ocispec.Descriptor{Digest: d, Size: int64(len(b))}
	}
	cfg := put([]byte(`{"os":"linux","architecture":"amd64","config":{"Cmd":["/bin/true"]},"rootfs":{"type":"layers","diff_ids":[]}}`))
	cfg.MediaType = ocispec.MediaTypeImageConfig
	layer := put(gz.Bytes())
	layer.MediaType = ocispec.MediaTypeImageLayerGzip
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{layer}}
	m.SchemaVersion = 2
	manifest, _ := json.Marshal(m)

	store := converter.NewDFSStore(cl.FS, 2) // tiny batches: several CreateTree calls
	ix := converter.NewIndexer(store, converter.IndexerOptions{Index: converter.Options{CheckpointSpacing: 1 << 20}, Logger: log})
	res, err := ix.IndexManifest(ctx, "test/image", manifest, ocispec.MediaTypeImageManifest)
	if err != nil {
		t.Fatal(err)
	}
	if !res.TreeCreated || len(res.IndexedNow) != 1 {
		t.Fatalf("result %+v", res)
	}
	again, err := ix.IndexManifest(ctx, "test/image", manifest, "")
	if err != nil || again.TreeCreated || len(again.IndexedNow) != 0 {
		t.Fatalf("second indexing: %+v %v", again, err)
	}

	// A second indexer that lost the race to publish removes its own tree.
	md := digest.FromBytes(manifest)
	lateTree, err := converter.MergeLayers([]converter.ImageLayer{{Index: res.Layers[0], Blob: 1}})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.WriteImageTree(ctx, md, lateTree); err != nil {
		t.Fatalf("losing the publish race: %v", err)
	}
	names, err := cl.FS.ReadDir(ctx, path.Dir(converter.ImageRootfsPath(md)))
	if err != nil || len(names) != 1 || names[0].Name != "rootfs" {
		t.Fatalf("image directory holds %+v (%v), want only rootfs", names, err)
	}

	// The opener reads blobs through a fresh client (cold block cache) with
	// the default read-ahead. A span is one exact read, so random reads of
	// files far apart do not look sequential to it. (A blob's very first
	// read near offset 0 does, which is why the files below are read last
	// first.)
	cold := fs.New(cl.Meta, cl.Shards, fs.Options{})
	src := &countingSource{BlobSource: converter.NewDFSStore(cold, 0)}
	opener := converter.NewOpener(src, converter.NewSpanCache(64<<20), 0)
	lazy := fs.New(cl.Meta, cl.Shards, fs.Options{LayerOpener: opener})
	rootfs := converter.ImageRootfsPath(digest.FromBytes(manifest))
	read := func(p string) []byte {
		f, err := lazy.OpenPath(ctx, rootfs+"/"+p)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b, err := io.ReadAll(io.NewSectionReader(f, 0, int64(f.Attr().Size)))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		return b
	}
	served0 := servedBytes(t, cl)
	if got := string(read("etc/hostname")); got != "dockyard\n" {
		t.Fatalf("etc/hostname = %q", got)
	}
	// The small file sits after the payload: only its span (plus the index)
	// is read, from the blob and so from the chunkservers.
	served := servedBytes(t, cl) - served0
	t.Logf("one small file: %d blob bytes read by the converter, %d shard bytes served, layer %d bytes", src.n.Load(), served, gz.Len())
	if n := src.n.Load(); n > int64(gz.Len())/10 {
		t.Errorf("read %d of %d layer bytes for one small file", n, gz.Len())
	}
	if served > int64(gz.Len())/5 {
		t.Errorf("chunkservers served %d bytes for one small file of a %d-byte layer", served, gz.Len())
	}
	served0 = servedBytes(t, cl)
	if got := string(read("bin/true")); got != "#!/bin/sh\nexit 0\n" {
		t.Fatalf("bin/true = %q", got)
	}
	// At the start of the layer, before the payload: one 1 MiB span.
	if served := servedBytes(t, cl) - served0; served > int64(gz.Len())/10 {
		t.Errorf("chunkservers served %d bytes for bin/true of a %d-byte layer", served, gz.Len())
	}
	if !bytes.Equal(read("payload"), payload) {
		t.Fatal("payload differs")
	}
	a, err := lazy.Stat(ctx, rootfs+"/bin/true")
	if err != nil || a.Mode != 0o100755 || a.Size != 17 {
		t.Errorf("bin/true attr %+v %v", a, err)
	}
}

// servedBytes sums the shard bytes every chunkserver of cl has served.
func servedBytes(t *testing.T, cl *local.Cluster) int64 {
	var sum int64
	for i := range cl.ChunkserverCount() {
		rec := httptest.NewRecorder()
		cl.Chunkserver(i).Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		for _, line := range strings.Split(rec.Body.String(), "\n") {
			if v, ok := strings.CutPrefix(line, "dockyard_chunkserver_bytes_out_total "); ok {
				n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
				if err != nil {
					t.Fatalf("metrics line %q: %v", line, err)
				}
				sum += int64(n)
			}
		}
	}
	return sum
}
