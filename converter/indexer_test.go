package converter

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"syscall"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dockyard/dockyard/metaserver"
)

var quietLog = slog.New(slog.NewTextHandler(io.Discard, nil))

// memStore is an in-memory Store over a fakeNS.
type memStore struct {
	mu          sync.Mutex
	blobs       map[digest.Digest][]byte
	inos        map[digest.Digest]metaserver.Ino
	indexes     map[digest.Digest][]byte
	indexWrites int
	blobReads   int64
	ns          *fakeNS
	trees       map[digest.Digest]metaserver.Ino
}

func newMemStore() *memStore {
	return &memStore{blobs: map[digest.Digest][]byte{}, inos: map[digest.Digest]metaserver.Ino{},
		indexes: map[digest.Digest][]byte{}, ns: newFakeNS(), trees: map[digest.Digest]metaserver.Ino{}}
}

func (s *memStore) addBlob(b []byte) digest.Digest {
	d := digest.FromBytes(b)
	s.blobs[d] = b
	s.inos[d] = metaserver.Ino(1000 + len(s.inos))
	return d
}

type countingBlob struct {
	s *memStore
	r *bytes.Reader
}

func (c countingBlob) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.s.mu.Lock()
	c.s.blobReads += int64(n)
	c.s.mu.Unlock()
	return n, err
}

func (s *memStore) OpenBlob(ctx context.Context, d digest.Digest) (Blob, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.blobs[d]
	if !ok {
		return Blob{}, metaserver.Errf("open", syscall.ENOENT, "%s", d)
	}
	return Blob{ReaderAt: countingBlob{s, bytes.NewReader(b)}, Size: int64(len(b)), Ino: s.inos[d]}, nil
}

func (s *memStore) ReadIndex(ctx context.Context, d digest.Digest) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.indexes[d]
	if !ok {
		return nil, fmt.Errorf("%s: %w", d, ErrNoIndex)
	}
	return b, nil
}

func (s *memStore) WriteIndex(ctx context.Context, d digest.Digest, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.indexes[d] = data
	s.indexWrites++
	return nil
}

func (s *memStore) HasImageTree(ctx context.Context, m digest.Digest) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.trees[m]
	return ok, nil
}

func (s *memStore) WriteImageTree(ctx context.Context, m digest.Digest, tree *Tree) error {
	inos, err := s.ns.CreateTree(ctx, metaserver.RootIno, []metaserver.TreeEntry{{ParentIdx: -1,
		CreateIn: metaserver.CreateIn{Name: m.Encoded(), Mode: tree.Root().Mode()}}})
	if err != nil {
		return err
	}
	if _, err := tree.Apply(ctx, s.ns, inos[0], 100); err != nil {
		return err
	}
	s.mu.Lock()
	s.trees[m] = inos[0]
	s.mu.Unlock()
	return nil
}

func manifestFor(t *testing.T, s *memStore, config []byte, layers ...[]byte) []byte {
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: s.addBlob(config), Size: int64(len(config))}}
	m.SchemaVersion = 2
	for _, l := range layers {
		m.Layers = append(m.Layers, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: s.addBlob(l), Size: int64(len(l))})
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestIndexerAndOpener(t *testing.T) {
	ctx := context.Background()
	s := newMemStore()
	lowerRaw := richTar(t)
	upperRaw := buildTar(t, []tarEntry{
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/.wh.big2", Mode: 0644}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/motd", Mode: 0644}, data: []byte("welcome\n")},
	})
	lower, upper := gzipBytes(t, lowerRaw, 6), zstdBytes(t, upperRaw, 0)
	manifest := manifestFor(t, s, []byte(`{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":[]}}`), lower, upper)
	ix := NewIndexer(s, IndexerOptions{Index: Options{CheckpointSpacing: 1 << 20}, Logger: quietLog})

	var wg sync.WaitGroup
	results := make([]*ImageResult, 3)
	errs := make([]error, 3)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = ix.IndexManifest(ctx, "library/test", manifest, ocispec.MediaTypeImageManifest)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if s.indexWrites != 2 {
		t.Errorf("%d index writes for 2 layers indexed concurrently", s.indexWrites)
	}
	if len(s.trees) != 1 {
		t.Fatalf("%d trees", len(s.trees))
	}
	again, err := ix.IndexManifest(ctx, "other/repo", manifest, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(again.IndexedNow) != 0 || again.TreeCreated {
		t.Errorf("second push re-indexed: %+v", again)
	}
	// A fresh indexer (another registry process) finds the stored indexes.
	fresh, err := NewIndexer(s, IndexerOptions{Logger: quietLog}).IndexManifest(ctx, "r", manifest, "")
	if err != nil || len(fresh.IndexedNow) != 0 {
		t.Fatalf("fresh indexer: %+v %v", fresh, err)
	}

	// Read every file of the stored tree through the Opener, as the fs client does.
	md := digest.FromBytes(manifest)
	paths := s.ns.paths(s.trees[md])
	if _, ok := paths["usr/bin/big2"]; ok {
		t.Error("whiteout not applied")
	}
	want := map[string][]byte{}
	for _, raw := range [][]byte{lowerRaw, upperRaw} {
		tr := tar.NewReader(bytes.NewReader(raw))
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			b, _ := io.ReadAll(tr)
			if h.Typeflag == tar.TypeReg {
				want[h.Name] = b
			}
		}
	}
	op := NewOpener(s, NewSpanCache(32<<20), 1) // one open layer: exercises eviction
	s.blobReads = 0
	files := 0
	for p, ino := range paths {
		n := s.ns.nodes[ino]
		if n.te.Layer == nil {
			continue
		}
		in := metaserver.Inode{Attr: metaserver.Attr{Ino: ino, Size: n.te.Size, Mode: n.te.Mode}, Layer: n.te.Layer}
		ra, err := op.OpenLayerFile(ctx, in)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		got, err := io.ReadAll(io.NewSectionReader(ra, 0, int64(n.te.Size)))
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		w, ok := want[p]
		if p == "usr/bin/ping6" {
			w, ok = want["usr/bin/ping"], true
		}
		if !ok || !bytes.Equal(got, w) {
			t.Fatalf("%s: content differs (%d vs %d bytes)", p, len(got), len(w))
		}
		files++
	}
	if files < 2000 {
		t.Errorf("only %d files read", files)
	}
	if _, err := op.OpenLayerFile(ctx, metaserver.Inode{}); err == nil {
		t.Error("inode without layer opened")
	}
}

func TestIndexerRejects(t *testing.T) {
	ctx := context.Background()
	s := newMemStore()
	ix := NewIndexer(s, IndexerOptions{Logger: quietLog})
	evil := gzipBytes(t, buildTar(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "../x", Mode: 0644}, data: []byte("x")}}), 6)
	m := manifestFor(t, s, []byte(`{"os":"linux","architecture":"amd64"}`), evil)
	if _, err := ix.IndexManifest(ctx, "r", m, ""); !errors.Is(err, ErrPathEscape) {
		t.Errorf("hostile layer: %v", err)
	}
	if len(s.indexes) != 0 || len(s.trees) != 0 {
		t.Error("hostile layer left an index or tree behind")
	}
	artifact := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:` +
		fmt.Sprintf("%064x", 1) + `","size":2},"layers":[]}`)
	if _, err := ix.IndexManifest(ctx, "r", artifact, ""); !errors.Is(err, ErrNotImage) {
		t.Errorf("artifact: %v", err)
	}
	index := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)
	if _, err := ix.IndexManifest(ctx, "r", index, ocispec.MediaTypeImageIndex); !errors.Is(err, ErrNotImage) {
		t.Errorf("index: %v", err)
	}
	missing := manifestFor(t, newMemStore(), []byte(`{}`), []byte("not in s"))
	if _, err := ix.IndexManifest(ctx, "r", missing, ""); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("missing blob: %v", err)
	}
}

func TestPlatformAndConfig(t *testing.T) {
	index := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[
		{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:` + fmt.Sprintf("%064x", 1) + `","size":1,"platform":{"os":"linux","architecture":"arm","variant":"v7"}},
		{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:` + fmt.Sprintf("%064x", 2) + `","size":1,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}},
		{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:` + fmt.Sprintf("%064x", 3) + `","size":1,"platform":{"os":"linux","architecture":"amd64"}},
		{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:` + fmt.Sprintf("%064x", 4) + `","size":1,"platform":{"os":"windows","architecture":"amd64"}}]}`)
	if !IsIndex(index, "") {
		t.Fatal("not detected as an index")
	}
	for _, c := range []struct {
		p    Platform
		want int
	}{{DefaultPlatform, 3}, {Platform{OS: "linux", Architecture: "arm64"}, 2}, {Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, 1}, {Platform{OS: "windows", Architecture: "amd64"}, 4}} {
		d, err := SelectPlatform(index, c.p)
		if err != nil || d.Digest.Encoded() != fmt.Sprintf("%064x", c.want) {
			t.Errorf("%s: %v %v", c.p, d.Digest, err)
		}
	}
	if _, err := SelectPlatform(index, Platform{OS: "linux", Architecture: "s390x"}); !errors.Is(err, ErrNoPlatform) {
		t.Errorf("s390x: %v", err)
	}
	cfg, err := ParseImageConfig([]byte(`{"architecture":"amd64","os":"linux","config":{"User":"1000:1000","Env":["PATH=/usr/bin","A=b"],
		"Entrypoint":["/entry"],"Cmd":["-v"],"WorkingDir":"/srv","ExposedPorts":{"80/tcp":{}},"Labels":{"k":"v"}},"rootfs":{"type":"layers","diff_ids":["sha256:` + fmt.Sprintf("%064x", 9) + `"]}}`))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.User != "1000:1000" || cfg.WorkingDir != "/srv" || len(cfg.Env) != 2 || cfg.Platform != DefaultPlatform || len(cfg.DiffIDs) != 1 || cfg.ExposedPorts[0] != "80/tcp" {
		t.Errorf("config %+v", cfg)
	}
	if got := fmt.Sprint(cfg.Args(nil)); got != "[/entry -v]" {
		t.Errorf("args %s", got)
	}
	if got := fmt.Sprint(cfg.Args([]string{"sh", "-c", "true"})); got != "[/entry sh -c true]" {
		t.Errorf("override args %s", got)
	}
	if _, err := ParseImageConfig([]byte("{")); !errors.Is(err, ErrMediaType) {
		t.Errorf("bad config: %v", err)
	}
}

func TestQueue(t *testing.T) {
	s := newMemStore()
	layer := gzipBytes(t, buildTar(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "f", Mode: 0644}, data: []byte("x")}}), 6)
	m := manifestFor(t, s, []byte(`{"os":"linux","architecture":"amd64"}`), layer)
	q := NewQueue(NewIndexer(s, IndexerOptions{Logger: quietLog}), 2, 8)
	q.OnManifestPut(context.Background(), "r", digest.FromBytes(m).String(), ocispec.MediaTypeImageManifest, m)
	q.OnManifestPut(context.Background(), "r", "sha256:idx", ocispec.MediaTypeImageIndex, []byte(`{"schemaVersion":2,"manifests":[]}`))
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Done != 1 || st.Failed != 0 || st.Dropped != 0 {
		t.Errorf("stats %+v", st)
	}
	if ok, _ := s.HasImageTree(context.Background(), digest.FromBytes(m)); !ok {
		t.Error("tree not created")
	}
	q.OnManifestPut(context.Background(), "r", "x", "", m)
	if st := q.Stats(); st.Dropped != 1 {
		t.Errorf("put after close not dropped: %+v", st)
	}
}
