package image

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Image signatures in cosign's key-based format, so images signed with
// `cosign sign --key` verify here and signatures made here verify with
// `cosign verify --key`:
//
//   - the signature of the image with digest D is the manifest tagged
//     sha256-HEX.sig in the image's repository;
//   - each of its layers is a "simple signing" payload (JSON naming D) whose
//     signature, base64, is the layer's dev.cosignproject.cosign/signature
//     annotation;
//   - ECDSA and RSA (PKCS #1 v1.5) keys sign the payload's SHA-256, Ed25519
//     keys the payload itself;
//   - a signature manifest may also be attached through the referrers API:
//     artifactType SignatureArtifactType, subject the image, same layers.
const (
	// SignatureMediaType is the media type of a signature payload layer.
	SignatureMediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	// SignatureArtifactType marks a signature manifest attached to its
	// image through the referrers API (OCI 1.1; cosign's
	// --registry-referrers-mode oci-1-1) instead of the .sig tag.
	SignatureArtifactType = "application/vnd.dev.cosign.artifact.sig.v1+json"
	signatureAnnotation   = "dev.cosignproject.cosign/signature"
	signatureType         = "cosign container image signature"
)

// ErrNotSigned is returned by Verify when no signature made with the key
// covers the image.
var ErrNotSigned = errors.New("no valid signature")

// SignatureTag is the tag of the signature manifest of the image with
// digest d.
func SignatureTag(d digest.Digest) string { return d.Algorithm().String() + "-" + d.Encoded() + ".sig" }

// payload is cosign's simple signing document.
type payload struct {
	Critical struct {
		Identity struct {
			DockerReference string `json:"docker-reference"`
		} `json:"identity"`
		Image struct {
			DockerManifestDigest string `json:"docker-manifest-digest"`
		} `json:"image"`
		Type string `json:"type"`
	} `json:"critical"`
	Optional map[string]any `json:"optional"`
}

// LoadPublicKey parses a PEM public key (PKIX, as `cosign generate-key-pair`
// and `openssl ec -pubout` write it): ECDSA, RSA or Ed25519.
func LoadPublicKey(pemBytes []byte) (crypto.PublicKey, error) {
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		return nil, errors.New("public key: no PEM block")
	}
	k, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	switch k.(type) {
	case *ecdsa.PublicKey, *rsa.PublicKey, ed25519.PublicKey:
		return k, nil
	}
	return nil, fmt.Errorf("public key: %T keys are not supported", k)
}

// LoadPrivateKey parses an unencrypted PEM private key: PKCS #8 ("PRIVATE
// KEY"), SEC 1 ("EC PRIVATE KEY", as `openssl ecparam -genkey` writes) or
// PKCS #1 ("RSA PRIVATE KEY").
func LoadPrivateKey(pemBytes []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(pemBytes)
	if b == nil {
		return nil, errors.New("private key: no PEM block")
	}
	var k any
	var err error
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "ENCRYPTED COSIGN PRIVATE KEY", "ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		return nil, fmt.Errorf("private key: %s is encrypted; give an unencrypted PKCS #8 or EC key", b.Type)
	default:
		return nil, fmt.Errorf("private key: unknown PEM block %q", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	switch s := k.(type) {
	case *ecdsa.PrivateKey, *rsa.PrivateKey, ed25519.PrivateKey:
		return s.(crypto.Signer), nil
	}
	return nil, fmt.Errorf("private key: %T keys are not supported", k)
}

// signPayload signs p as cosign does for the key's type.
func signPayload(key crypto.Signer, p []byte) ([]byte, error) {
	if _, ok := key.Public().(ed25519.PublicKey); ok {
		return key.Sign(rand.Reader, p, crypto.Hash(0))
	}
	h := sha256.Sum256(p)
	return key.Sign(rand.Reader, h[:], crypto.SHA256)
}

// verifyPayload checks sig over p with pub.
func verifyPayload(pub crypto.PublicKey, p, sig []byte) bool {
	h := sha256.Sum256(p)
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return ecdsa.VerifyASN1(k, h[:], sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, h[:], sig) == nil
	case ed25519.PublicKey:
		return ed25519.Verify(k, p, sig)
	}
	return false
}

// Verify checks that a signature made with pub covers the image res: one
// on what its reference named (the index of a multi-platform image) or on
// the platform's manifest. It returns ErrNotSigned, with what it found, when
// none does.
func (r *Resolver) Verify(ctx context.Context, res *Resolved, pub crypto.PublicKey) error {
	key, checked, lastBad, err := r.signedBy(ctx, res, []crypto.PublicKey{pub})
	switch {
	case err != nil:
		return err
	case key >= 0:
		return nil
	case checked == 0:
		return fmt.Errorf("%s: %w: the image has no signatures (%s)", res.Ref, ErrNotSigned, SignatureTag(res.TopDigest))
	}
	return fmt.Errorf("%s: %w by this key among %d signatures (last: %v)", res.Ref, ErrNotSigned, checked, lastBad)
}

// signedBy looks for a signature covering res made with any of pubs: one on
// what its reference named or on the platform's manifest. It returns the
// index in pubs of the first key that verified one; otherwise -1, how many
// signatures it checked and why the last check failed (nil when there were
// none). err is a failure to read the signatures, not a bad signature.
func (r *Resolver) signedBy(ctx context.Context, res *Resolved, pubs []crypto.PublicKey) (key, checked int, lastBad, err error) {
	digests := []digest.Digest{res.TopDigest}
	if res.ManifestDigest != res.TopDigest {
		digests = append(digests, res.ManifestDigest)
	}
	for _, d := range digests {
		if d == "" {
			continue
		}
		ms, err := r.signatureManifests(ctx, res.Ref, d)
		if err != nil {
			return -1, checked, lastBad, err
		}
		for _, l := range layersOf(ms) {
			if l.MediaType != SignatureMediaType {
				continue
			}
			checked++
			for i, pub := range pubs {
				if err := r.checkSignature(ctx, res.Ref, d, l, pub); err != nil {
					lastBad = err
					continue
				}
				return i, checked, nil, nil
			}
		}
	}
	return -1, checked, lastBad, nil
}

// signatureManifests returns the signature manifests of the image with
// digest d: the one under its .sig tag, and those attached as referrers.
func (r *Resolver) signatureManifests(ctx context.Context, ref Ref, d digest.Digest) ([]*ocispec.Manifest, error) {
	var out []*ocispec.Manifest
	m, err := r.signatureManifest(ctx, ref, d)
	switch {
	case err == nil:
		out = append(out, m)
	case !errors.Is(err, ErrNotFound):
		return nil, err
	}
	refs, err := r.referrers(ctx, ref, d, SignatureArtifactType)
	if err != nil {
		return nil, err
	}
	for _, desc := range refs {
		body, _, _, err := r.get(ctx, ref, "manifests", desc.Digest.String(), ocispec.MediaTypeImageManifest, desc.Digest)
		if err != nil {
			return nil, err
		}
		var m ocispec.Manifest
		if err := json.Unmarshal(body, &m); err != nil || m.Subject == nil || m.Subject.Digest != d {
			continue // not a signature of d, whatever the index said
		}
		out = append(out, &m)
	}
	return out, nil
}

// referrers lists the manifests attached to d with the given artifact type.
// A registry without the referrers API has none to offer.
func (r *Resolver) referrers(ctx context.Context, ref Ref, d digest.Digest, artifactType string) ([]ocispec.Descriptor, error) {
	body, _, _, err := r.get(ctx, ref, "referrers", d.String()+"?artifactType="+url.QueryEscape(artifactType), ocispec.MediaTypeImageIndex, "")
	if errors.Is(err, ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var idx ocispec.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		return nil, fmt.Errorf("%s: referrers of %s: %v", ref, d, err)
	}
	var out []ocispec.Descriptor
	for _, m := range idx.Manifests {
		if m.ArtifactType == artifactType {
			out = append(out, m)
		}
	}
	return out, nil
}

// layersOf is every layer of ms, in order.
func layersOf(ms []*ocispec.Manifest) []ocispec.Descriptor {
	var out []ocispec.Descriptor
	for _, m := range ms {
		out = append(out, m.Layers...)
	}
	return out
}

func (r *Resolver) signatureManifest(ctx context.Context, ref Ref, d digest.Digest) (*ocispec.Manifest, error) {
	body, _, _, err := r.get(ctx, ref, "manifests", SignatureTag(d), ocispec.MediaTypeImageManifest, "")
	if err != nil {
		return nil, err
	}
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, fmt.Errorf("%s: signature manifest %s: %v", ref, SignatureTag(d), err)
	}
	return &m, nil
}

// checkSignature verifies one signature layer against the image digest d.
func (r *Resolver) checkSignature(ctx context.Context, ref Ref, d digest.Digest, l ocispec.Descriptor, pub crypto.PublicKey) error {
	sig, err := base64.StdEncoding.DecodeString(l.Annotations[signatureAnnotation])
	if err != nil || len(sig) == 0 {
		return fmt.Errorf("layer %s: no signature annotation", l.Digest)
	}
	body, _, _, err := r.get(ctx, ref, "blobs", l.Digest.String(), "*/*", l.Digest)
	if err != nil {
		return err
	}
	if !verifyPayload(pub, body, sig) {
		return fmt.Errorf("layer %s: signature does not verify with this key", l.Digest)
	}
	var p payload
	if err := json.Unmarshal(body, &p); err != nil {
		return fmt.Errorf("layer %s: signed payload is not JSON: %v", l.Digest, err)
	}
	if p.Critical.Type != signatureType {
		return fmt.Errorf("layer %s: signed payload of type %q", l.Digest, p.Critical.Type)
	}
	if p.Critical.Image.DockerManifestDigest != d.String() {
		return fmt.Errorf("layer %s: signs %s, not %s", l.Digest, p.Critical.Image.DockerManifestDigest, d)
	}
	return nil
}

// Sign signs the image with digest d in ref's repository with key and adds
// the signature to the image's signature manifest, which it creates if
// needed.
func (r *Resolver) Sign(ctx context.Context, ref Ref, d digest.Digest, key crypto.Signer) error {
	return r.sign(ctx, ref, d, key, false)
}

// SignReferrer signs as Sign does but attaches the signature to the image
// through the referrers API, in a manifest of its own whose subject is the
// image, as cosign's --registry-referrers-mode oci-1-1 does.
func (r *Resolver) SignReferrer(ctx context.Context, ref Ref, d digest.Digest, key crypto.Signer) error {
	return r.sign(ctx, ref, d, key, true)
}

func (r *Resolver) sign(ctx context.Context, ref Ref, d digest.Digest, key crypto.Signer, referrer bool) error {
	var p payload
	p.Critical.Identity.DockerReference = ref.Registry + "/" + ref.Repo
	p.Critical.Image.DockerManifestDigest = d.String()
	p.Critical.Type = signatureType
	body, err := json.Marshal(p)
	if err != nil {
		return err
	}
	sig, err := signPayload(key, body)
	if err != nil {
		return fmt.Errorf("signing: %w", err)
	}
	layer := ocispec.Descriptor{
		MediaType:   SignatureMediaType,
		Digest:      digest.FromBytes(body),
		Size:        int64(len(body)),
		Annotations: map[string]string{signatureAnnotation: base64.StdEncoding.EncodeToString(sig)},
	}
	var m *ocispec.Manifest
	if !referrer {
		m, err = r.signatureManifest(ctx, ref, d)
	}
	switch {
	case referrer || errors.Is(err, ErrNotFound):
		m = &ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest}
		m.SchemaVersion = 2
	case err != nil:
		return err
	}
	if referrer {
		subject, err := r.descriptor(ctx, ref, d)
		if err != nil {
			return err
		}
		m.ArtifactType = SignatureArtifactType
		m.Subject = &subject
	}
	m.Layers = append(m.Layers, layer)
	diffIDs := make([]digest.Digest, len(m.Layers))
	for i, l := range m.Layers {
		diffIDs[i] = l.Digest
	}
	cfg, err := json.Marshal(ocispec.Image{RootFS: ocispec.RootFS{Type: "layers", DiffIDs: diffIDs}})
	if err != nil {
		return err
	}
	m.Config = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	for _, blob := range [][]byte{body, cfg} {
		if err := r.putBlob(ctx, ref, blob); err != nil {
			return err
		}
	}
	mb, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if referrer {
		return r.put(ctx, ref, "manifests/"+digest.FromBytes(mb).String(), ocispec.MediaTypeImageManifest, mb)
	}
	return r.put(ctx, ref, "manifests/"+SignatureTag(d), ocispec.MediaTypeImageManifest, mb)
}

// descriptor describes the manifest with digest d: media type and size.
func (r *Resolver) descriptor(ctx context.Context, ref Ref, d digest.Digest) (ocispec.Descriptor, error) {
	body, mt, _, err := r.get(ctx, ref, "manifests", d.String(), acceptManifests, d)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(body))}, nil
}

// putBlob uploads b in one request (POST with the digest).
func (r *Resolver) putBlob(ctx context.Context, ref Ref, b []byte) error {
	return r.do(ctx, http.MethodPost, r.url(ref, "blobs/uploads/?digest="+digest.FromBytes(b).String()), "application/octet-stream", b, http.StatusCreated)
}

func (r *Resolver) put(ctx context.Context, ref Ref, path, contentType string, b []byte) error {
	return r.do(ctx, http.MethodPut, r.url(ref, path), contentType, b, http.StatusCreated)
}

func (r *Resolver) do(ctx context.Context, method, url, contentType string, body []byte, want int) error {
	resp, err := r.send(ctx, method, url, contentType, bytes.NewReader(body), int64(len(body)))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		return statusError(method, url, resp)
	}
	return nil
}
