package image

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// pushRegistry is the part of the distribution API a push uses, with one
// blob store per repository so mounts and copies can be told apart.
type pushRegistry struct {
	mu        sync.Mutex
	blobs     map[string]map[digest.Digest][]byte // repo -> blobs
	manifests map[string][]byte                   // repo:tag -> manifest
	log       []string                            // "METHOD path" of the calls that move or link blobs
	noMount   bool                                // answer mounts with a new upload (202)
	auth      bool                                // answer everything with 401
}

func newPushRegistry() *pushRegistry {
	return &pushRegistry{blobs: map[string]map[digest.Digest][]byte{}, manifests: map[string][]byte{}}
}

func (f *pushRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.auth {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	p := strings.TrimPrefix(r.URL.Path, "/v2/")
	if p == "" {
		return
	}
	switch {
	case strings.Contains(p, "/blobs/uploads/"):
		repo := p[:strings.Index(p, "/blobs/uploads/")]
		if f.blobs[repo] == nil {
			f.blobs[repo] = map[digest.Digest][]byte{}
		}
		switch r.Method {
		case http.MethodPost:
			if m := r.URL.Query().Get("mount"); m != "" && !f.noMount {
				if b, ok := f.blobs[r.URL.Query().Get("from")][digest.Digest(m)]; ok {
					f.blobs[repo][digest.Digest(m)] = b
					f.log = append(f.log, "mount "+repo+" "+m)
					w.WriteHeader(http.StatusCreated)
					return
				}
			}
			w.Header().Set("Location", "/v2/"+repo+"/blobs/uploads/u1?state=x")
			w.WriteHeader(http.StatusAccepted)
		case http.MethodPut:
			b, _ := io.ReadAll(r.Body)
			d := digest.Digest(r.URL.Query().Get("digest"))
			if digest.FromBytes(b) != d || r.URL.Query().Get("state") != "x" || r.ContentLength != int64(len(b)) {
				http.Error(w, "bad upload", http.StatusBadRequest)
				return
			}
			f.blobs[repo][d] = b
			f.log = append(f.log, "upload "+repo+" "+d.String())
			w.WriteHeader(http.StatusCreated)
		}
	case strings.Contains(p, "/blobs/"):
		i := strings.Index(p, "/blobs/")
		b, ok := f.blobs[p[:i]][digest.Digest(p[i+len("/blobs/"):])]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if r.Method == http.MethodGet {
			w.Write(b)
		}
	case strings.Contains(p, "/manifests/"):
		i := strings.Index(p, "/manifests/")
		key := p[:i] + ":" + p[i+len("/manifests/"):]
		if r.Method == http.MethodPut {
			b, _ := io.ReadAll(r.Body)
			f.manifests[key] = b
			w.WriteHeader(http.StatusCreated)
			return
		}
		b, ok := f.manifests[key]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
		w.Write(b)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

// baseImage stores a two-layer image with Docker media types in repo and
// returns it as Resolve would.
func (f *pushRegistry) baseImage(t *testing.T, host, repo string) *Resolved {
	t.Helper()
	f.blobs[repo] = map[digest.Digest][]byte{}
	var layers []ocispec.Descriptor
	var diffIDs []digest.Digest
	for _, s := range []string{"layer one", "layer two"} {
		d := digest.FromString(s)
		f.blobs[repo][d] = []byte(s)
		layers = append(layers, ocispec.Descriptor{MediaType: "application/vnd.docker.image.rootfs.diff.tar.gzip", Digest: d, Size: int64(len(s))})
		diffIDs = append(diffIDs, digest.FromString("diff "+s))
	}
	cfg := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}}
	cb, _ := json.Marshal(cfg)
	m := map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
		"config": ocispec.Descriptor{MediaType: "application/vnd.docker.container.image.v1+json", Digest: digest.FromBytes(cb), Size: int64(len(cb))},
		"layers": layers}
	mb, _ := json.Marshal(m)
	return &Resolved{Ref: Ref{Registry: host, Repo: repo, Tag: "base"}, Manifest: mb,
		MediaType: "application/vnd.docker.distribution.manifest.v2+json", Config: cfg}
}

func testCommit(t *testing.T, base *Resolved) Commit {
	t.Helper()
	var buf bytes.Buffer
	l, err := WriteLayer(context.Background(), &buf, sampleTree(), LayerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var bc *ocispec.Image
	if base != nil {
		bc = &base.Config
	}
	cfg, err := BuildConfig(bc, l.DiffID, CommitConfig{Created: time.Unix(0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	return Commit{Base: base, Layer: l, Blob: bytes.NewReader(buf.Bytes()), Config: cfg}
}

func TestPush(t *testing.T) {
	reg := newPushRegistry()
	srv := httptest.NewServer(reg)
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	r := &Resolver{}
	ctx := context.Background()
	base := reg.baseImage(t, host, "lib/base")
	c := testCommit(t, base)
	ref := Ref{Registry: host, Repo: "app", Tag: "v1"}

	if err := r.Ping(ctx, ref); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	d, err := r.Push(ctx, ref, c)
	if err != nil {
		t.Fatal(err)
	}
	mb := reg.manifests["app:v1"]
	if digest.FromBytes(mb) != d {
		t.Errorf("Push returned %s, the stored manifest is %s", d, digest.FromBytes(mb))
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		t.Fatal(err)
	}
	if m.MediaType != ocispec.MediaTypeImageManifest || m.Config.MediaType != ocispec.MediaTypeImageConfig || len(m.Layers) != 3 {
		t.Fatalf("manifest %s", mb)
	}
	for i, l := range m.Layers {
		if l.MediaType != ocispec.MediaTypeImageLayerGzip {
			t.Errorf("layer %d media type %s, want the OCI one", i, l.MediaType)
		}
		if _, ok := reg.blobs["app"][l.Digest]; !ok {
			t.Errorf("layer %d (%s) is not in the pushed repository", i, l.Digest)
		}
	}
	if m.Layers[2].Digest != c.Layer.Descriptor.Digest {
		t.Errorf("the new layer is %s, want %s", m.Layers[2].Digest, c.Layer.Descriptor.Digest)
	}
	var cfg ocispec.Image
	if err := json.Unmarshal(reg.blobs["app"][m.Config.Digest], &cfg); err != nil || len(cfg.RootFS.DiffIDs) != 3 {
		t.Errorf("stored config %+v, %v", cfg, err)
	}
	// The base's layers were mounted, not uploaded again.
	var mounts, uploads int
	for _, e := range reg.log {
		switch {
		case strings.HasPrefix(e, "mount app "):
			mounts++
		case strings.HasPrefix(e, "upload app "):
			uploads++
		}
	}
	if mounts != 2 || uploads != 2 {
		t.Errorf("calls %v: want the 2 base layers mounted and the layer and config uploaded", reg.log)
	}

	// A registry that will not mount gets the bytes copied; a blob already
	// there is not sent again.
	reg.log, reg.noMount = nil, true
	if _, err := r.Push(ctx, Ref{Registry: host, Repo: "other", Tag: "v1"}, testCommit(t, base)); err != nil {
		t.Fatal(err)
	}
	if len(reg.log) != 4 || !strings.HasPrefix(reg.log[0], "upload other ") {
		t.Errorf("calls %v: want the base layers copied, then the layer and config uploaded", reg.log)
	}
	reg.log = nil
	if _, err := r.Push(ctx, Ref{Registry: host, Repo: "other", Tag: "v2"}, testCommit(t, base)); err != nil {
		t.Fatal(err)
	}
	if len(reg.log) != 0 {
		t.Errorf("calls %v: everything was there already", reg.log)
	}

	// Without a base: one layer.
	if _, err := r.Push(ctx, Ref{Registry: host, Repo: "scratch", Tag: "1"}, testCommit(t, nil)); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(reg.manifests["scratch:1"], &m); err != nil || len(m.Layers) != 1 {
		t.Errorf("scratch manifest %s, %v", reg.manifests["scratch:1"], err)
	}

	if _, err := r.Push(ctx, Ref{Registry: host, Repo: "app", Digest: d}, c); err == nil || !strings.Contains(err.Error(), "not a digest") {
		t.Errorf("a push to a digest: %v", err)
	}
	reg.auth = true
	if _, err := r.Push(ctx, ref, testCommit(t, nil)); err == nil || !strings.Contains(err.Error(), "credentials") {
		t.Errorf("a registry asking for credentials: %v", err)
	}
	srv.Close()
	if err := r.Ping(ctx, ref); err == nil || !strings.Contains(err.Error(), "registry "+host) {
		t.Errorf("an unreachable registry: %v", err)
	}
}
