package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/dockyard/dockyard/metaserver"
)

func newGCEnv(t *testing.T) (*testEnv, *fakeClock) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	env := newTestEnv(t, Config{GCGrace: time.Hour, UploadTTL: 24 * time.Hour, Now: clock.Now})
	return env, clock
}

func TestGCRemovesOnlyUnreferenced(t *testing.T) {
	t.Run("local", func(t *testing.T) {
		env, clock := newGCEnv(t)
		testGCRemovesOnlyUnreferenced(t, env, clock)
	})
	t.Run("dfs", func(t *testing.T) {
		clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
		testGCRemovesOnlyUnreferenced(t, newDFSEnv(t, Config{GCGrace: time.Hour, UploadTTL: 24 * time.Hour, Now: clock.Now}), clock)
	})
}

func testGCRemovesOnlyUnreferenced(t *testing.T, env *testEnv, clock *fakeClock) {
	ctx := context.Background()
	_, kept := env.pushImage("g", "v1", []byte("referenced layer"))
	orphan := env.pushBlob("g", []byte("pushed, never referenced"))
	stale := env.must(env.do("POST", "/v2/g/blobs/uploads/", nil, nil), http.StatusAccepted).header.Get("Location")

	// Within the grace period nothing goes.
	st, err := env.reg.CollectGarbage(ctx)
	if err != nil || st != (GCStats{}) {
		t.Fatalf("within grace: %+v %v", st, err)
	}
	clock.Add(2 * time.Hour)
	st, err = env.reg.CollectGarbage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Links != 1 || st.Blobs != 1 || st.Uploads != 0 {
		t.Fatalf("after grace: %+v", st)
	}
	env.must(env.do("GET", "/v2/g/blobs/"+orphan, nil, nil), http.StatusNotFound)
	if _, err := env.blobs.Stat(ctx, mustDigest(t, orphan)); !errors.Is(err, ErrBlobNotFound) {
		t.Fatalf("orphan bytes still stored: %v", err)
	}
	env.must(env.do("GET", "/v2/g/blobs/"+kept, nil, nil), http.StatusOK)
	env.must(env.do("GET", "/v2/g/manifests/v1", nil, nil), http.StatusOK)

	// Idle uploads go after UploadTTL.
	clock.Add(23 * time.Hour)
	st, err = env.reg.CollectGarbage(ctx)
	if err != nil || st.Uploads != 1 {
		t.Fatalf("stale upload: %+v %v", st, err)
	}
	env.must(env.do("GET", stale, nil, nil), http.StatusNotFound)

	// A re-upload of collected content works and is visible again.
	env.pushBlob("g", []byte("pushed, never referenced"))
	env.must(env.do("GET", "/v2/g/blobs/"+orphan, nil, nil), http.StatusOK)
}

// hookKV runs a callback once, right after the first KVList with a prefix.
type hookKV struct {
	metaserver.KV
	prefix string
	once   sync.Once
	fn     func()
}

func (h *hookKV) KVList(ctx context.Context, b, prefix, after string, limit int) ([]metaserver.KVPair, error) {
	out, err := h.KV.KVList(ctx, b, prefix, after, limit)
	if prefix == h.prefix {
		h.once.Do(h.fn)
	}
	return out, err
}

// TestGCRaceWithManifestPut puts a manifest referencing an old unreferenced
// blob after the collector has scanned the manifests but before it sweeps the
// links: the manifest must win and the blob must stay.
func TestGCRaceWithManifestPut(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	blobs, err := NewLocalBlobStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	kv := &hookKV{KV: newMemKV(), prefix: "l/"}
	env := &testEnv{t: t, blobs: blobs, kv: kv}
	cfg := Config{GCGrace: time.Hour, Now: clock.Now}
	reg, err := New(cfg, blobs, kv)
	if err != nil {
		t.Fatal(err)
	}
	env.reg = reg
	env.srv = newServer(t, reg)

	cfgBlob := []byte(`{"os":"linux"}`)
	cd := env.pushBlob("race", cfgBlob)
	ld := env.pushBlob("race", []byte("slow push layer"))
	clock.Add(2 * time.Hour) // both links are now old and unreferenced
	manifest := imageManifest(cd, len(cfgBlob), map[string]int{ld: 15}, nil)
	kv.fn = func() {
		// The collector has marked; the push finishes now.
		env.must(env.do("PUT", "/v2/race/manifests/v1", map[string]string{"Content-Type": MediaTypeOCIManifest}, manifest), http.StatusCreated)
	}
	st, err := reg.CollectGarbage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Links != 0 || st.Blobs != 0 {
		t.Fatalf("collector removed referenced content: %+v", st)
	}
	env.must(env.do("GET", "/v2/race/blobs/"+ld, nil, nil), http.StatusOK)
	// And the next round, which sees the manifest, keeps it too.
	clock.Add(2 * time.Hour)
	if st, err := reg.CollectGarbage(context.Background()); err != nil || st != (GCStats{}) {
		t.Fatalf("second round: %+v %v", st, err)
	}
}

// TestReserveWaitsForDeletingMark: an upload finishing while the collector
// deletes the same digest waits, then stores a fresh copy.
func TestReserveWaitsForDeletingMark(t *testing.T) {
	env, clock := newGCEnv(t)
	ctx := context.Background()
	data := []byte("contended blob")
	d := mustDigest(t, env.pushBlob("w", data))
	env.must(env.do("DELETE", "/v2/w/blobs/"+d.String(), nil, nil), http.StatusAccepted)
	clock.Add(2 * time.Hour)
	// Play the collector by hand: mark the record deleting.
	var b blobRecord
	raw, _, err := env.reg.rec.get(ctx, blobKey(d), &b)
	if err != nil {
		t.Fatal(err)
	}
	b.Deleting, b.Touched = true, clock.Now().UnixNano()
	marked := mustJSON(b)
	if err := env.kv.KVTxn(ctx, []metaserver.KVCond{is(blobKey(d), raw)}, []metaserver.KVOp{{Bucket: bucket, Key: blobKey(d), Value: marked}}); err != nil {
		t.Fatal(err)
	}
	done := make(chan resp, 1)
	go func() { done <- env.do("POST", "/v2/w/blobs/uploads/?digest="+d.String(), nil, data) }()
	select {
	case r := <-done:
		t.Fatalf("upload finished while the blob was being deleted: %d", r.status)
	case <-time.After(200 * time.Millisecond):
		// Still waiting, as it should: this is the negative check, so a
		// bounded wait is the point of it.
	}
	if err := env.blobs.Delete(ctx, d); err != nil {
		t.Fatal(err)
	}
	if err := env.kv.KVTxn(ctx, []metaserver.KVCond{is(blobKey(d), marked)}, []metaserver.KVOp{del(blobKey(d))}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.status != http.StatusCreated {
			t.Fatalf("upload after deletion: %d %s", r.status, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upload still waiting after the deletion finished")
	}
	got := env.must(env.do("GET", "/v2/w/blobs/"+d.String(), nil, nil), http.StatusOK)
	if string(got.body) != string(data) {
		t.Fatalf("blob %q", got.body)
	}
}

// TestGCPagesThroughManifests: more manifests than one listing page, and
// every blob they reference survives.
func TestGCPagesThroughManifests(t *testing.T) {
	env, clock := newGCEnv(t)
	var layers []string
	for i := range manifestPageSize*2 + 5 {
		_, l := env.pushImage("many", fmt.Sprintf("t%d", i), []byte(fmt.Sprintf("layer %d", i)))
		layers = append(layers, l)
	}
	for i := range 3 {
		env.pushBlob("many", []byte(fmt.Sprintf("unreferenced %d", i)))
	}
	clock.Add(2 * time.Hour)
	st, err := env.reg.CollectGarbage(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Links != 3 || st.Blobs != 3 {
		t.Fatalf("collected %+v, want exactly the 3 unreferenced blobs", st)
	}
	for _, l := range layers {
		env.must(env.do("HEAD", "/v2/many/blobs/"+l, nil, nil), http.StatusOK)
	}
}
