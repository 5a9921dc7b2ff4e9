package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/metaserver"
)

// TestEndpointErrors runs every endpoint's failure cases against the real
// handler: one table of request -> status and OCI error code.
func TestEndpointErrors(t *testing.T) {
	env := newTestEnv(t, Config{MaxBlobSize: 64, MaxManifestSize: 2048})
	mdig, ldig := env.pushImage("a/b", "v1", []byte("layer bytes"))
	up := env.must(env.do("POST", "/v2/a/b/blobs/uploads/", nil, nil), http.StatusAccepted)
	uploadPath := up.header.Get("Location")
	otherUp := env.must(env.do("POST", "/v2/other/blobs/uploads/", nil, nil), http.StatusAccepted).header.Get("Location")
	otherID := otherUp[strings.LastIndex(otherUp, "/")+1:]
	zero := "sha256:" + strings.Repeat("0", 64)
	body17 := []byte("seventeen bytes!!")
	big := bytes.Repeat([]byte("x"), 65)
	missingBlob := imageManifest(zero, 2, nil, nil)
	cfgDigest := env.pushBlob("a/b", []byte("{}"))
	index := []byte(`{"schemaVersion":2,"mediaType":"` + MediaTypeOCIIndex + `","manifests":[{"mediaType":"` + MediaTypeOCIManifest + `","digest":"` + zero + `","size":3}]}`)
	huge := imageManifest(cfgDigest, 2, nil, map[string]any{"annotations": map[string]string{"pad": strings.Repeat("p", 3000)}})
	oci := map[string]string{"Content-Type": MediaTypeOCIManifest}

	cases := []struct {
		name   string
		method string
		path   string
		hdr    map[string]string
		body   []byte
		status int
		code   string
	}{
		{"base", "GET", "/v2/", nil, nil, 200, ""},
		{"unknown endpoint", "GET", "/v2/a/b/nothing", nil, nil, 404, "NOT_FOUND"},
		{"upper-case name", "GET", "/v2/A/b/tags/list", nil, nil, 400, "NAME_INVALID"},
		{"empty name component", "GET", "/v2/a//b/manifests/v1", nil, nil, 400, "NAME_INVALID"},
		{"name starting with separator", "GET", "/v2/-a/blobs/" + ldig, nil, nil, 400, "NAME_INVALID"},
		{"name too long", "GET", "/v2/" + strings.Repeat("a", 256) + "/tags/list", nil, nil, 400, "NAME_INVALID"},
		{"method not allowed", "POST", "/v2/a/b/manifests/v1", nil, nil, 405, "UNSUPPORTED"},

		{"blob digest malformed", "GET", "/v2/a/b/blobs/sha256:xyz", nil, nil, 400, "DIGEST_INVALID"},
		{"blob digest algorithm", "GET", "/v2/a/b/blobs/md5:" + strings.Repeat("0", 32), nil, nil, 400, "DIGEST_INVALID"},
		{"blob digest upper-case hex", "GET", "/v2/a/b/blobs/sha256:" + strings.Repeat("A", 64), nil, nil, 400, "DIGEST_INVALID"},
		{"blob unknown", "GET", "/v2/a/b/blobs/" + zero, nil, nil, 404, "BLOB_UNKNOWN"},
		{"blob unknown HEAD", "HEAD", "/v2/a/b/blobs/" + zero, nil, nil, 404, ""},
		{"blob of another repository", "GET", "/v2/other/blobs/" + ldig, nil, nil, 404, "BLOB_UNKNOWN"},
		{"blob range", "GET", "/v2/a/b/blobs/" + ldig, map[string]string{"Range": "bytes=1-3"}, nil, 206, ""},
		{"blob range past end", "GET", "/v2/a/b/blobs/" + ldig, map[string]string{"Range": "bytes=100-200"}, nil, 416, ""},
		{"blob delete unknown", "DELETE", "/v2/a/b/blobs/" + zero, nil, nil, 404, "BLOB_UNKNOWN"},

		{"monolithic bad digest", "POST", "/v2/a/b/blobs/uploads/?digest=sha256:12", nil, []byte("x"), 400, "DIGEST_INVALID"},
		{"monolithic digest mismatch", "POST", "/v2/a/b/blobs/uploads/?digest=" + zero, nil, []byte("x"), 400, "DIGEST_INVALID"},
		{"monolithic oversize", "POST", "/v2/a/b/blobs/uploads/?digest=" + sha(big), nil, big, 413, "SIZE_EXCEEDED"},
		{"upload bad name", "POST", "/v2/a/B/blobs/uploads/", nil, nil, 400, "NAME_INVALID"},
		{"patch unknown upload", "PATCH", "/v2/a/b/blobs/uploads/" + strings.Repeat("f", 32), nil, []byte("x"), 404, "BLOB_UPLOAD_UNKNOWN"},
		{"patch malformed upload id", "PATCH", "/v2/a/b/blobs/uploads/..x", nil, []byte("x"), 404, "BLOB_UPLOAD_UNKNOWN"},
		{"patch upload of another repository", "PATCH", "/v2/a/b/blobs/uploads/" + otherID, nil, []byte("x"), 404, "BLOB_UPLOAD_UNKNOWN"},
		{"patch range gap", "PATCH", uploadPath, map[string]string{"Content-Range": "5-9"}, []byte("12345"), 416, "RANGE_INVALID"},
		{"patch range malformed", "PATCH", uploadPath, map[string]string{"Content-Range": "9-5"}, []byte("12345"), 416, "RANGE_INVALID"},
		{"patch range length mismatch", "PATCH", uploadPath, map[string]string{"Content-Range": "0-9"}, []byte("12345"), 416, "RANGE_INVALID"},
		{"patch oversize", "PATCH", uploadPath, nil, big, 413, "SIZE_EXCEEDED"},
		{"put upload without digest", "PUT", uploadPath, nil, nil, 400, "DIGEST_INVALID"},
		{"put upload bad digest", "PUT", uploadPath + "?digest=sha256:nothex", nil, nil, 400, "DIGEST_INVALID"},
		{"put upload digest mismatch", "PUT", uploadPath + "?digest=" + zero, nil, body17, 400, "DIGEST_INVALID"},
		{"put unknown upload", "PUT", "/v2/a/b/blobs/uploads/" + strings.Repeat("e", 32) + "?digest=" + zero, nil, nil, 404, "BLOB_UPLOAD_UNKNOWN"},
		{"status of unknown upload", "GET", "/v2/a/b/blobs/uploads/" + strings.Repeat("e", 32), nil, nil, 404, "BLOB_UPLOAD_UNKNOWN"},
		{"cancel unknown upload", "DELETE", "/v2/a/b/blobs/uploads/" + strings.Repeat("e", 32), nil, nil, 404, "BLOB_UPLOAD_UNKNOWN"},

		{"manifest unknown tag", "GET", "/v2/a/b/manifests/nope", nil, nil, 404, "MANIFEST_UNKNOWN"},
		{"manifest unknown digest", "GET", "/v2/a/b/manifests/" + zero, nil, nil, 404, "MANIFEST_UNKNOWN"},
		{"manifest unknown repository", "GET", "/v2/c/manifests/v1", nil, nil, 404, "MANIFEST_UNKNOWN"},
		{"manifest invalid reference", "GET", "/v2/a/b/manifests/-bad", nil, nil, 404, "MANIFEST_UNKNOWN"},
		{"manifest referencing a missing blob", "PUT", "/v2/a/b/manifests/x", oci, missingBlob, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"index referencing a missing manifest", "PUT", "/v2/a/b/manifests/x", map[string]string{"Content-Type": MediaTypeOCIIndex}, index, 400, "MANIFEST_BLOB_UNKNOWN"},
		{"manifest not JSON", "PUT", "/v2/a/b/manifests/x", oci, []byte("{"), 400, "MANIFEST_INVALID"},
		{"manifest schema1 by type", "PUT", "/v2/a/b/manifests/x", map[string]string{"Content-Type": "application/vnd.docker.distribution.manifest.v1+prettyjws"}, []byte(`{"schemaVersion":1}`), 400, "MANIFEST_INVALID"},
		{"manifest schema1 by body", "PUT", "/v2/a/b/manifests/x", nil, []byte(`{"schemaVersion":1,"fsLayers":[]}`), 400, "MANIFEST_INVALID"},
		{"manifest type mismatch", "PUT", "/v2/a/b/manifests/x", map[string]string{"Content-Type": MediaTypeOCIIndex}, imageManifest(cfgDigest, 2, nil, nil), 400, "MANIFEST_INVALID"},
		{"manifest digest mismatch", "PUT", "/v2/a/b/manifests/" + zero, oci, imageManifest(cfgDigest, 2, nil, nil), 400, "DIGEST_INVALID"},
		{"manifest bad tag", "PUT", "/v2/a/b/manifests/.bad", oci, imageManifest(cfgDigest, 2, nil, nil), 400, "TAG_INVALID"},
		{"manifest oversize", "PUT", "/v2/a/b/manifests/x", oci, huge, 413, "SIZE_EXCEEDED"},
		{"manifest layer digest invalid", "PUT", "/v2/a/b/manifests/x", oci, imageManifest(cfgDigest, 2, map[string]int{"sha256:1": 1}, nil), 400, "MANIFEST_INVALID"},
		{"manifest delete unknown", "DELETE", "/v2/a/b/manifests/" + zero, nil, nil, 404, "MANIFEST_UNKNOWN"},
		{"tag delete unknown", "DELETE", "/v2/a/b/manifests/nope", nil, nil, 404, "MANIFEST_UNKNOWN"},
		{"manifest by digest", "GET", "/v2/a/b/manifests/" + mdig, nil, nil, 200, ""},

		{"tags of unknown repository", "GET", "/v2/c/d/tags/list", nil, nil, 404, "NAME_UNKNOWN"},
		{"tags negative n", "GET", "/v2/a/b/tags/list?n=-1", nil, nil, 400, "PAGINATION_NUMBER_INVALID"},
		{"catalog bad n", "GET", "/v2/_catalog?n=x", nil, nil, 400, "PAGINATION_NUMBER_INVALID"},
		{"referrers bad digest", "GET", "/v2/a/b/referrers/sha256:1", nil, nil, 400, "DIGEST_INVALID"},
		{"referrers none", "GET", "/v2/a/b/referrers/" + zero, nil, nil, 200, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env.t = t
			r := env.do(tc.method, tc.path, tc.hdr, tc.body)
			if r.status != tc.status {
				t.Fatalf("status %d, want %d; body %s", r.status, tc.status, r.body)
			}
			if got := r.code(); got != tc.code {
				t.Fatalf("error code %q, want %q; body %s", got, tc.code, r.body)
			}
			if r.status >= 400 && tc.method != "HEAD" && r.header.Get("Content-Type") != "application/json; charset=utf-8" && r.status != 416 {
				t.Fatalf("error Content-Type %q", r.header.Get("Content-Type"))
			}
		})
	}
	env.t = t
	// Failed monolithic uploads leave no session behind: the two sessions
	// opened above are all that remain.
	if keys := env.keys("u/"); len(keys) != 2 {
		t.Errorf("upload sessions left: %v", keys)
	}
}

// TestErrorsMatch checks that handler errors can be matched by code.
func TestErrorsMatch(t *testing.T) {
	_, err := ParseDigest("sha256:zz")
	if !errors.Is(err, ErrDigestInvalid.E()) {
		t.Fatalf("errors.Is(%v, DIGEST_INVALID) = false", err)
	}
	if errors.Is(err, ErrBlobUnknown.E()) {
		t.Fatal("DIGEST_INVALID matched BLOB_UNKNOWN")
	}
	var re *Error
	if !errors.As(err, &re) || re.Code.Status != http.StatusBadRequest {
		t.Fatalf("errors.As: %v", err)
	}
}

// noLeaderKV fails every call the way a metaserver cluster without a leader
// does.
type noLeaderKV struct{ metaserver.KV }

func (noLeaderKV) KVGet(context.Context, string, string) ([]byte, bool, error) {
	return nil, false, &metaserver.ErrNotLeader{}
}

// TestStoreUnavailableIs503: a metaserver without a leader is a retryable
// 503, not a 500 or a 404.
func TestStoreUnavailableIs503(t *testing.T) {
	blobs, err := NewLocalBlobStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	env := &testEnv{t: t, kv: noLeaderKV{newMemKV()}, blobs: blobs}
	env.start(Config{})
	r := env.do("GET", "/v2/x/manifests/v1", nil, nil)
	if r.status != http.StatusServiceUnavailable || r.code() != "UNAVAILABLE" {
		t.Fatalf("%d %s", r.status, r.body)
	}
}

// TestStoreFullIs507: a cluster with no room left answers 507 and says so,
// instead of a 503 a client would retry forever without knowing why.
func TestStoreFullIs507(t *testing.T) {
	s := newDFSStoreCap(t, fs.Options{ChunkSize: 256 << 10, ReplicateBelow: 16 << 10, WriteAttempts: 2,
		RetryBackoff: 10 * time.Millisecond}, 64<<10)
	env := &testEnv{t: t, kv: s.c.Meta(), blobs: s}
	env.start(Config{})
	blob := bytes.Repeat([]byte("full"), 1<<20)
	r := env.do("POST", "/v2/x/blobs/uploads/?digest="+sha(blob), nil, blob)
	if r.status != http.StatusInsufficientStorage || r.code() != "UNAVAILABLE" || !strings.Contains(string(r.body), "storage full") {
		t.Fatalf("%d %s", r.status, r.body)
	}
	if errors.Is(dfsErr(fmt.Errorf("x: %w", metaserver.ErrNoSpace)), ErrStoreUnavailable) {
		t.Fatal("no space must not look like a transient outage")
	}
}
