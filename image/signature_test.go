package image

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fakeRegistry is the part of the distribution API signing uses: manifests
// by tag or digest, blobs, and monolithic uploads.
type fakeRegistry struct {
	mu        sync.Mutex
	blobs     map[digest.Digest][]byte
	manifests map[string][]byte // repo@reference
	types     map[string]string
	referrers map[string][]ocispec.Descriptor // repo@subject digest
}

func newFakeRegistry(t *testing.T) (*fakeRegistry, string) {
	f := &fakeRegistry{blobs: map[digest.Digest][]byte{}, manifests: map[string][]byte{}, types: map[string]string{},
		referrers: map[string][]ocispec.Descriptor{}}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, strings.TrimPrefix(srv.URL, "http://")
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := strings.TrimPrefix(r.URL.Path, "/v2/")
	switch {
	case strings.Contains(p, "/referrers/"):
		repo, d, _ := strings.Cut(p, "/referrers/")
		idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{}}
		for _, desc := range f.referrers[repo+"@"+d] {
			if at := r.URL.Query().Get("artifactType"); at == "" || at == desc.ArtifactType {
				idx.Manifests = append(idx.Manifests, desc)
			}
		}
		idx.SchemaVersion = 2
		w.Header().Set("Content-Type", ocispec.MediaTypeImageIndex)
		json.NewEncoder(w).Encode(idx)
	case strings.Contains(p, "/manifests/"):
		repo, ref, _ := strings.Cut(p, "/manifests/")
		if r.Method == http.MethodPut {
			b, _ := io.ReadAll(r.Body)
			d := digest.FromBytes(b)
			for _, k := range []string{repo + "@" + ref, repo + "@" + d.String()} {
				f.manifests[k], f.types[k] = b, r.Header.Get("Content-Type")
			}
			var m ocispec.Manifest
			if json.Unmarshal(b, &m) == nil && m.Subject != nil {
				k := repo + "@" + m.Subject.Digest.String()
				f.referrers[k] = append(f.referrers[k], ocispec.Descriptor{MediaType: m.MediaType, Digest: d, Size: int64(len(b)), ArtifactType: m.ArtifactType})
			}
			w.WriteHeader(http.StatusCreated)
			return
		}
		b, ok := f.manifests[repo+"@"+ref]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", f.types[repo+"@"+ref])
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(b).String())
		w.Write(b)
	case strings.Contains(p, "/blobs/uploads/"):
		b, _ := io.ReadAll(r.Body)
		if d := digest.Digest(r.URL.Query().Get("digest")); d != digest.FromBytes(b) {
			http.Error(w, "digest mismatch", http.StatusBadRequest)
			return
		}
		f.blobs[digest.FromBytes(b)] = b
		w.WriteHeader(http.StatusCreated)
	case strings.Contains(p, "/blobs/"):
		_, d, _ := strings.Cut(p, "/blobs/")
		b, ok := f.blobs[digest.Digest(d)]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	default:
		http.NotFound(w, r)
	}
}

// image stores a one-platform image, and an index over it, in repo.
func (f *fakeRegistry) image(t *testing.T, repo string) (manifest, index digest.Digest) {
	t.Helper()
	// The author makes each repository's image a different one.
	cfg := []byte(`{"author":"` + repo + `","architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	f.blobs[digest.FromBytes(cfg)] = cfg
	m, _ := json.Marshal(ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest,
		Config: ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}})
	manifest = digest.FromBytes(m)
	idx, _ := json.Marshal(ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: []ocispec.Descriptor{{
		MediaType: ocispec.MediaTypeImageManifest, Digest: manifest, Size: int64(len(m)),
		Platform: &ocispec.Platform{OS: "linux", Architecture: "amd64"}}}})
	index = digest.FromBytes(idx)
	for ref, b := range map[string][]byte{"single": m, manifest.String(): m, "multi": idx, index.String(): idx} {
		f.manifests[repo+"@"+ref] = b
		f.types[repo+"@"+ref] = ocispec.MediaTypeImageManifest
		if string(b) == string(idx) {
			f.types[repo+"@"+ref] = ocispec.MediaTypeImageIndex
		}
	}
	return manifest, index
}

func ecKey(t *testing.T) crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSignAndVerify(t *testing.T) {
	ctx := context.Background()
	f, addr := newFakeRegistry(t)
	manifest, index := f.image(t, "app")
	r := &Resolver{}
	single := Ref{Registry: addr, Repo: "app", Tag: "single"}
	multi := Ref{Registry: addr, Repo: "app", Tag: "multi"}
	resolve := func(ref Ref) *Resolved {
		res, err := r.Resolve(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	alice, bob := ecKey(t), ecKey(t)

	err := r.Verify(ctx, resolve(single), alice.Public())
	if !errors.Is(err, ErrNotSigned) || !strings.Contains(err.Error(), "no signatures") {
		t.Fatalf("unsigned image: %v", err)
	}
	if err := r.Sign(ctx, single, manifest, alice); err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(ctx, resolve(single), alice.Public()); err != nil {
		t.Errorf("signed by alice, verified with alice's key: %v", err)
	}
	err = r.Verify(ctx, resolve(single), bob.Public())
	if !errors.Is(err, ErrNotSigned) || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("signed by alice, verified with bob's key: %v", err)
	}
	// A second signature joins the first.
	if err := r.Sign(ctx, single, manifest, bob); err != nil {
		t.Fatal(err)
	}
	for _, k := range []crypto.Signer{alice, bob} {
		if err := r.Verify(ctx, resolve(single), k.Public()); err != nil {
			t.Errorf("two signatures: %v", err)
		}
	}
	// The platform's manifest is signed, so the index resolving to it
	// verifies; a signature on the index alone does too.
	if err := r.Verify(ctx, resolve(multi), alice.Public()); err != nil {
		t.Errorf("index whose platform manifest is signed: %v", err)
	}
	carol := ecKey(t)
	if err := r.Sign(ctx, multi, index, carol); err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(ctx, resolve(multi), carol.Public()); err != nil {
		t.Errorf("signed index: %v", err)
	}
	if err := r.Verify(ctx, resolve(single), carol.Public()); !errors.Is(err, ErrNotSigned) {
		t.Errorf("the index's signature verified the manifest on its own: %v", err)
	}
	// A valid signature of another image, copied over, is refused.
	other, _ := f.image(t, "other")
	if err := r.Sign(ctx, Ref{Registry: addr, Repo: "other", Tag: "single"}, other, carol); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	f.manifests["app@"+SignatureTag(manifest)] = f.manifests["other@"+SignatureTag(other)]
	f.mu.Unlock()
	if err := r.Verify(ctx, resolve(single), carol.Public()); !errors.Is(err, ErrNotSigned) || !strings.Contains(err.Error(), "not "+manifest.String()) {
		t.Errorf("another image's signature: %v", err)
	}
}

func TestKeyTypes(t *testing.T) {
	ctx := context.Background()
	f, addr := newFakeRegistry(t)
	r := &Resolver{}
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{"ecdsa": ecKey(t), "ed25519": edPriv, "rsa": rsaKey} {
		manifest, _ := f.image(t, name)
		ref := Ref{Registry: addr, Repo: name, Tag: "single"}
		// Through PEM, as the command line reads keys.
		pkcs8, _ := x509.MarshalPKCS8PrivateKey(key)
		signer, err := LoadPrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		pkix, _ := x509.MarshalPKIXPublicKey(key.Public())
		pub, err := LoadPublicKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := r.Sign(ctx, ref, manifest, signer); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		res, err := r.Resolve(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Verify(ctx, res, pub); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestLoadKeys(t *testing.T) {
	ec := ecKey(t).(*ecdsa.PrivateKey)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	if _, err := LoadPrivateKey(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1})); err != nil {
		t.Errorf("SEC 1 key: %v", err)
	}
	for _, c := range []struct{ pem, want string }{
		{"not a key", "no PEM block"},
		{string(pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED COSIGN PRIVATE KEY", Bytes: []byte("x")})), "encrypted"},
		{string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("x")})), "unknown PEM block"},
		{string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("x")})), "private key"},
	} {
		if _, err := LoadPrivateKey([]byte(c.pem)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("LoadPrivateKey(%.30q) = %v, want %q", c.pem, err, c.want)
		}
	}
	if _, err := LoadPublicKey([]byte("nope")); err == nil {
		t.Error("LoadPublicKey accepted garbage")
	}
	if _, err := LoadPublicKey(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte("x")})); err == nil {
		t.Error("LoadPublicKey accepted a bad key")
	}
}

func TestReferrerSignatures(t *testing.T) {
	ctx := context.Background()
	f, addr := newFakeRegistry(t)
	manifest, _ := f.image(t, "app")
	r := &Resolver{}
	ref := Ref{Registry: addr, Repo: "app", Tag: "single"}
	alice, bob := ecKey(t), ecKey(t)
	if err := r.SignReferrer(ctx, ref, manifest, alice); err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	_, tagged := f.manifests["app@"+SignatureTag(manifest)]
	refs := f.referrers["app@"+manifest.String()]
	f.mu.Unlock()
	if tagged || len(refs) != 1 || refs[0].ArtifactType != SignatureArtifactType {
		t.Fatalf("a referrer signature made a .sig tag (%v) or %d referrers %+v", tagged, len(refs), refs)
	}
	res, err := r.Resolve(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Verify(ctx, res, alice.Public()); err != nil {
		t.Errorf("signature attached as a referrer: %v", err)
	}
	if err := r.Verify(ctx, res, bob.Public()); !errors.Is(err, ErrNotSigned) {
		t.Errorf("another key: %v", err)
	}
	// Both kinds count: bob signs under the tag.
	if err := r.Sign(ctx, ref, manifest, bob); err != nil {
		t.Fatal(err)
	}
	for _, k := range []crypto.Signer{alice, bob} {
		if err := r.Verify(ctx, res, k.Public()); err != nil {
			t.Errorf("a tag signature and a referrer: %v", err)
		}
	}
}
