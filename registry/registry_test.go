package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseRoute(t *testing.T) {
	cases := []struct {
		tail string
		want route
		ok   bool
	}{
		{"", route{kind: "base"}, true},
		{"_catalog", route{kind: "catalog"}, true},
		{"a/b/c/tags/list", route{kind: "tags", name: "a/b/c"}, true},
		{"a/manifests/latest", route{kind: "manifest", name: "a", ref: "latest"}, true},
		// Names may contain the endpoint words; the rightmost match wins.
		{"blobs/manifests/x/manifests/v1", route{kind: "manifest", name: "blobs/manifests/x", ref: "v1"}, true},
		{"a/blobs/sha256:ab", route{kind: "blob", name: "a", ref: "sha256:ab"}, true},
		{"a/blobs/uploads/", route{kind: "upload", name: "a"}, true},
		{"a/blobs/uploads", route{kind: "upload", name: "a"}, true},
		{"a/blobs/uploads/0123", route{kind: "upload", name: "a", ref: "0123"}, true},
		{"a/referrers/sha256:ab", route{kind: "referrers", name: "a", ref: "sha256:ab"}, true},
		{"a/b", route{}, false},
		{"manifests/v1", route{}, false},
		{"a/manifests/", route{}, false},
	}
	for _, tc := range cases {
		got, ok := parseRoute(tc.tail)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseRoute(%q) = %+v, %v; want %+v, %v", tc.tail, got, ok, tc.want, tc.ok)
		}
	}
}

// chunk PATCHes one chunk with a Content-Range and returns the next location.
func (e *testEnv) chunk(loc string, off int, b []byte) string {
	e.t.Helper()
	r := e.must(e.do("PATCH", loc, map[string]string{
		"Content-Type":  "application/octet-stream",
		"Content-Range": fmt.Sprintf("%d-%d", off, off+len(b)-1),
	}, b), http.StatusAccepted)
	if want := fmt.Sprintf("0-%d", off+len(b)-1); r.header.Get("Range") != want {
		e.t.Fatalf("Range %q, want %q", r.header.Get("Range"), want)
	}
	return r.header.Get("Location")
}

// TestChunkedUploadSurvivesRestart starts a chunked upload, replaces the
// registry by a new instance over the same stores (as a restart or another
// replica would), and finishes the upload there — once with the digest
// algorithm the session hashed with and once with another one.
func TestChunkedUploadSurvivesRestart(t *testing.T) {
	for _, alg := range []string{"sha256", "sha512"} {
		t.Run(alg, func(t *testing.T) {
			forEachStore(t, Config{}, func(t *testing.T, env *testEnv) {
				data := bytes.Repeat([]byte("0123456789abcdef"), 10000)
				want := digestOf(alg, data)
				loc := env.must(env.do("POST", "/v2/x/y/blobs/uploads/", nil, nil), http.StatusAccepted).header.Get("Location")
				loc = env.chunk(loc, 0, data[:70000])

				env.start(Config{}) // restart

				st := env.must(env.do("GET", loc, nil, nil), http.StatusNoContent)
				if st.header.Get("Range") != "0-69999" {
					t.Fatalf("after restart Range = %q", st.header.Get("Range"))
				}
				// A retried chunk that overlaps what is stored is refused.
				env.must(env.do("PATCH", loc, map[string]string{"Content-Range": "60000-69999"}, data[60000:70000]), http.StatusRequestedRangeNotSatisfiable)
				loc = env.chunk(loc, 70000, data[70000:150000])
				r := env.must(env.do("PUT", loc+"?digest="+want.String(), map[string]string{
					"Content-Range": fmt.Sprintf("%d-%d", 150000, len(data)-1),
				}, data[150000:]), http.StatusCreated)
				if r.header.Get("Docker-Content-Digest") != want.String() {
					t.Fatalf("Docker-Content-Digest %q", r.header.Get("Docker-Content-Digest"))
				}
				got := env.must(env.do("GET", "/v2/x/y/blobs/"+want.String(), nil, nil), http.StatusOK)
				if !bytes.Equal(got.body, data) {
					t.Fatalf("blob differs: %d bytes", len(got.body))
				}
				if keys := env.keys("u/"); len(keys) != 0 {
					t.Fatalf("upload records left: %v", keys)
				}
				env.must(env.do("GET", loc, nil, nil), http.StatusNotFound)
			})
		})
	}
}

func TestStreamedUploadAndCancel(t *testing.T) {
	env := newTestEnv(t, Config{})
	loc := env.must(env.do("POST", "/v2/s/blobs/uploads/", nil, nil), http.StatusAccepted).header.Get("Location")
	// Streamed PATCHes carry no Content-Range.
	loc = env.must(env.do("PATCH", loc, nil, []byte("hello ")), http.StatusAccepted).header.Get("Location")
	loc = env.must(env.do("PATCH", loc, nil, []byte("world")), http.StatusAccepted).header.Get("Location")
	d := sha([]byte("hello world"))
	env.must(env.do("PUT", loc+"?digest="+d, nil, nil), http.StatusCreated)
	r := env.must(env.do("HEAD", "/v2/s/blobs/"+d, nil, nil), http.StatusOK)
	if r.header.Get("Content-Length") != "11" || r.header.Get("Docker-Content-Digest") != d {
		t.Fatalf("HEAD headers %v", r.header)
	}

	loc = env.must(env.do("POST", "/v2/s/blobs/uploads/", nil, nil), http.StatusAccepted).header.Get("Location")
	env.must(env.do("PATCH", loc, nil, []byte("abandoned")), http.StatusAccepted)
	env.must(env.do("DELETE", loc, nil, nil), http.StatusNoContent)
	env.must(env.do("GET", loc, nil, nil), http.StatusNotFound)
	n := 0
	if err := env.blobs.WalkUploads(context.Background(), func(string, time.Time) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Fatalf("%d upload files left after cancel", n)
	}
}

func TestCrossRepositoryMount(t *testing.T) {
	env := newTestEnv(t, Config{})
	d := env.pushBlob("src/repo", []byte("shared layer"))
	// With from: linked without an upload.
	r := env.must(env.do("POST", "/v2/dst/blobs/uploads/?mount="+d+"&from=src/repo", nil, nil), http.StatusCreated)
	if r.header.Get("Location") != "/v2/dst/blobs/"+d {
		t.Fatalf("Location %q", r.header.Get("Location"))
	}
	env.must(env.do("GET", "/v2/dst/blobs/"+d, nil, nil), http.StatusOK)
	// Without from: any repository holding the blob will do.
	env.must(env.do("POST", "/v2/anon/blobs/uploads/?mount="+d, nil, nil), http.StatusCreated)
	// From a repository that lacks it: falls back to an upload session.
	env.must(env.do("POST", "/v2/dst2/blobs/uploads/?mount="+d+"&from=nobody", nil, nil), http.StatusAccepted)
	// Unknown blob: upload session too.
	env.must(env.do("POST", "/v2/dst2/blobs/uploads/?mount=sha256:"+strings.Repeat("1", 64), nil, nil), http.StatusAccepted)
	// Stored once, linked thrice.
	b, ok, err := env.reg.rec.blob(context.Background(), mustDigest(t, d))
	if err != nil || !ok || b.Links != 3 {
		t.Fatalf("blob record %+v %v %v", b, ok, err)
	}
	// Deleting from one repository leaves the others intact.
	env.must(env.do("DELETE", "/v2/dst/blobs/"+d, nil, nil), http.StatusAccepted)
	env.must(env.do("GET", "/v2/dst/blobs/"+d, nil, nil), http.StatusNotFound)
	env.must(env.do("GET", "/v2/src/repo/blobs/"+d, nil, nil), http.StatusOK)
}

func mustDigest(t *testing.T, s string) Digest {
	t.Helper()
	d, err := ParseDigest(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestManifestsTagsAndPaging(t *testing.T) {
	var mu sync.Mutex
	var hooked []string
	env := newTestEnv(t, Config{OnManifestPut: func(_ context.Context, repo, digest, mediaType string, body []byte) {
		mu.Lock()
		hooked = append(hooked, repo+"@"+digest+" "+mediaType)
		mu.Unlock()
	}})
	m1, _ := env.pushImage("p/q", "b", []byte("layer one"))
	for _, tag := range []string{"a", "c", "d"} {
		got, _ := env.pushImage("p/q", tag, []byte("layer one"))
		if got != m1 {
			t.Fatalf("same manifest, digest %s != %s", got, m1)
		}
	}
	// A manifest is served on the blob endpoint too.
	if b := env.must(env.do("GET", "/v2/p/q/blobs/"+m1, nil, nil), http.StatusOK); sha(b.body) != m1 {
		t.Fatalf("manifest as blob: %s", b.body)
	}
	r := env.must(env.do("GET", "/v2/p/q/manifests/c", nil, nil), http.StatusOK)
	if r.header.Get("Content-Type") != MediaTypeOCIManifest || r.header.Get("Docker-Content-Digest") != m1 || sha(r.body) != m1 {
		t.Fatalf("GET by tag: %v", r.header)
	}
	page := env.must(env.do("GET", "/v2/p/q/tags/list?n=2", nil, nil), http.StatusOK)
	var tl struct {
		Name string
		Tags []string
	}
	json.Unmarshal(page.body, &tl)
	if strings.Join(tl.Tags, ",") != "a,b" || !strings.Contains(page.header.Get("Link"), "last=b") {
		t.Fatalf("page 1: %s Link %q", page.body, page.header.Get("Link"))
	}
	page = env.must(env.do("GET", "/v2/p/q/tags/list?n=2&last=b", nil, nil), http.StatusOK)
	json.Unmarshal(page.body, &tl)
	if strings.Join(tl.Tags, ",") != "c,d" || page.header.Get("Link") != "" {
		t.Fatalf("page 2: %s Link %q", page.body, page.header.Get("Link"))
	}
	// Deleting a tag keeps the manifest; deleting the manifest drops its tags.
	env.must(env.do("DELETE", "/v2/p/q/manifests/a", nil, nil), http.StatusAccepted)
	env.must(env.do("GET", "/v2/p/q/manifests/a", nil, nil), http.StatusNotFound)
	env.must(env.do("GET", "/v2/p/q/manifests/b", nil, nil), http.StatusOK)
	env.must(env.do("DELETE", "/v2/p/q/manifests/"+m1, nil, nil), http.StatusAccepted)
	page = env.must(env.do("GET", "/v2/p/q/tags/list", nil, nil), http.StatusOK)
	if !bytes.Contains(page.body, []byte(`"tags":[]`)) {
		t.Fatalf("tags after delete: %s", page.body)
	}

	env.pushImage("p/r", "x", []byte("l"))
	env.pushImage("z", "x", []byte("l"))
	cat := env.must(env.do("GET", "/v2/_catalog?n=2", nil, nil), http.StatusOK)
	if !bytes.Contains(cat.body, []byte(`["p/q","p/r"]`)) || !strings.Contains(cat.header.Get("Link"), "last=p%2Fr") {
		t.Fatalf("catalog: %s %q", cat.body, cat.header.Get("Link"))
	}
	cat = env.must(env.do("GET", "/v2/_catalog?last=p/r", nil, nil), http.StatusOK)
	if !bytes.Contains(cat.body, []byte(`["z"]`)) {
		t.Fatalf("catalog page 2: %s", cat.body)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(hooked) != 6 || hooked[0] != "p/q@"+m1+" "+MediaTypeOCIManifest {
		t.Fatalf("OnManifestPut calls: %v", hooked)
	}
}

func TestReferrers(t *testing.T) {
	env := newTestEnv(t, Config{})
	subject, _ := env.pushImage("r", "v1", []byte("base"))
	empty := env.pushBlob("r", []byte("{}"))
	sig := imageManifest(empty, 2, nil, map[string]any{
		"artifactType": "application/example.sig",
		"subject":      map[string]any{"mediaType": MediaTypeOCIManifest, "digest": subject, "size": 1},
		"annotations":  map[string]string{"k": "v"},
	})
	r := env.must(env.do("PUT", "/v2/r/manifests/"+sha(sig), map[string]string{"Content-Type": MediaTypeOCIManifest}, sig), http.StatusCreated)
	if r.header.Get("OCI-Subject") != subject {
		t.Fatalf("OCI-Subject %q", r.header.Get("OCI-Subject"))
	}
	// A referrer whose type comes from its config.
	sbomCfg := env.pushBlob("r", []byte(`{"sbom":true}`))
	sbom := []byte(`{"schemaVersion":2,"mediaType":"` + MediaTypeOCIManifest + `","config":{"mediaType":"application/example.sbom","digest":"` + sbomCfg + `","size":13},"layers":[],"subject":{"mediaType":"` + MediaTypeOCIManifest + `","digest":"` + subject + `","size":1}}`)
	env.must(env.do("PUT", "/v2/r/manifests/sbom", map[string]string{"Content-Type": MediaTypeOCIManifest}, sbom), http.StatusCreated)

	var idx struct {
		MediaType string
		Manifests []Descriptor
	}
	r = env.must(env.do("GET", "/v2/r/referrers/"+subject, nil, nil), http.StatusOK)
	json.Unmarshal(r.body, &idx)
	if idx.MediaType != MediaTypeOCIIndex || len(idx.Manifests) != 2 {
		t.Fatalf("referrers: %s", r.body)
	}
	r = env.must(env.do("GET", "/v2/r/referrers/"+subject+"?artifactType=application/example.sbom", nil, nil), http.StatusOK)
	json.Unmarshal(r.body, &idx)
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != sha(sbom) || r.header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Fatalf("filtered referrers: %s %v", r.body, r.header)
	}
	// Deleting the referrer removes it from the index.
	env.must(env.do("DELETE", "/v2/r/manifests/"+sha(sig), nil, nil), http.StatusAccepted)
	r = env.must(env.do("GET", "/v2/r/referrers/"+subject, nil, nil), http.StatusOK)
	json.Unmarshal(r.body, &idx)
	if len(idx.Manifests) != 1 {
		t.Fatalf("after delete: %s", r.body)
	}
}

func TestDockerSchema2AndIndex(t *testing.T) {
	env := newTestEnv(t, Config{})
	cfg := env.pushBlob("d", []byte(`{"os":"linux"}`))
	layer := env.pushBlob("d", []byte("gzip layer"))
	m := []byte(`{"schemaVersion":2,"mediaType":"` + MediaTypeDockerManifest + `","config":{"mediaType":"application/vnd.docker.container.image.v1+json","digest":"` + cfg + `","size":14},"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"` + layer + `","size":10},{"mediaType":"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip","digest":"sha256:` + strings.Repeat("9", 64) + `","size":5,"urls":["https://example.com/l"]}]}`)
	env.must(env.do("PUT", "/v2/d/manifests/amd64", map[string]string{"Content-Type": MediaTypeDockerManifest}, m), http.StatusCreated)
	list := []byte(`{"schemaVersion":2,"mediaType":"` + MediaTypeDockerList + `","manifests":[{"mediaType":"` + MediaTypeDockerManifest + `","digest":"` + sha(m) + `","size":` + fmt.Sprint(len(m)) + `,"platform":{"architecture":"amd64","os":"linux"}}]}`)
	env.must(env.do("PUT", "/v2/d/manifests/latest", map[string]string{"Content-Type": MediaTypeDockerList}, list), http.StatusCreated)
	r := env.must(env.do("HEAD", "/v2/d/manifests/latest", nil, nil), http.StatusOK)
	if r.header.Get("Content-Type") != MediaTypeDockerList || r.header.Get("Content-Length") != fmt.Sprint(len(list)) {
		t.Fatalf("HEAD list: %v", r.header)
	}
	if len(r.body) != 0 {
		t.Fatal("HEAD returned a body")
	}
}

func TestMetricsEndpoint(t *testing.T) {
	env := newTestEnv(t, Config{})
	env.pushBlob("m", []byte("counted"))
	r := env.must(env.do("GET", "/metrics", nil, nil), http.StatusOK)
	for _, want := range []string{
		`dockyard_registry_requests_total{code="201",method="POST",route="upload"} 1`,
		`dockyard_registry_received_bytes_total{route="upload"} 7`,
		`dockyard_registry_request_duration_seconds_count{method="POST",route="upload"} 1`,
	} {
		if !bytes.Contains(r.body, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestUploadWriteLease: while one request holds a session's write lease, a
// second writer is refused; a lease whose holder died expires and is taken
// over, and the late holder can no longer store its state.
func TestUploadWriteLease(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	env := newTestEnv(t, Config{Now: clock.Now})
	ctx := context.Background()
	loc := env.must(env.do("POST", "/v2/l/blobs/uploads/", nil, nil), http.StatusAccepted).header.Get("Location")
	id := loc[strings.LastIndex(loc, "/")+1:]
	u, raw, err := env.reg.rec.upload(ctx, "l", id)
	if err != nil {
		t.Fatal(err)
	}
	lock, err := env.reg.rec.lockUpload(ctx, u, raw)
	if err != nil {
		t.Fatal(err)
	}
	r := env.do("PATCH", loc, nil, []byte("second writer"))
	if r.status != http.StatusBadRequest || r.code() != "BLOB_UPLOAD_INVALID" {
		t.Fatalf("concurrent PATCH: %d %s", r.status, r.body)
	}
	r = env.do("PUT", loc+"?digest="+sha([]byte("x")), nil, []byte("x"))
	if r.code() != "BLOB_UPLOAD_INVALID" {
		t.Fatalf("concurrent PUT: %d %s", r.status, r.body)
	}
	if err := lock.release(ctx, nil); err != nil {
		t.Fatal(err)
	}
	env.must(env.do("PATCH", loc, nil, []byte("abc")), http.StatusAccepted)

	// A holder that stalls past the lease loses the session.
	u, raw, _ = env.reg.rec.upload(ctx, "l", id)
	lock, err = env.reg.rec.lockUpload(ctx, u, raw)
	if err != nil {
		t.Fatal(err)
	}
	clock.Add(2 * uploadLease)
	env.must(env.do("PATCH", loc, map[string]string{"Content-Range": "3-5"}, []byte("def")), http.StatusAccepted)
	if err := lock.release(ctx, &u); !errors.Is(err, ErrBlobUploadInvalid.E()) {
		t.Fatalf("late release: %v", err)
	}
	env.must(env.do("PUT", loc+"?digest="+sha([]byte("abcdef")), nil, nil), http.StatusCreated)
}
