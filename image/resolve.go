package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dockyard/dockyard/converter"
)

// Media types a run accepts for the top-level manifest.
var acceptManifests = strings.Join([]string{
	ocispec.MediaTypeImageManifest,
	ocispec.MediaTypeImageIndex,
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
}, ", ")

// maxDocument bounds a manifest or config fetched for a run.
const maxDocument = 8 << 20

// Resolved is an image ready to be indexed: its manifest (for the chosen
// platform) and its config.
type Resolved struct {
	Ref Ref
	// TopDigest is the digest of what Ref names: the index of a
	// multi-platform image, or else the manifest itself.
	TopDigest      digest.Digest
	ManifestDigest digest.Digest
	MediaType      string
	Manifest       []byte
	Config         ocispec.Image
}

// Resolver fetches manifests and configs from registries.
type Resolver struct {
	HTTP *http.Client // default http.DefaultClient
	// Scheme is "http" (default: Dockyard registries serve plain HTTP on
	// loopback) or "https".
	// Scheme set to "http" explicitly, rather than left empty, also lets
	// credentials go over plain HTTP to hosts that are not loopback.
	Scheme   string
	Platform converter.Platform // default linux/amd64
	// Keychain finds credentials for registries that ask for them
	// (default DefaultKeychain: docker's and podman's logins); see auth.go.
	Keychain Keychain

	authOnce sync.Once
	authed   *http.Client
}

// Resolve fetches ref's manifest, picks the platform from an index, and
// fetches the image config, verifying every digest it was given.
func (r *Resolver) Resolve(ctx context.Context, ref Ref) (*Resolved, error) {
	plat := r.Platform
	if plat.OS == "" {
		plat = converter.Platform{OS: "linux", Architecture: "amd64"}
	}
	body, mt, d, err := r.get(ctx, ref, "manifests", ref.Reference(), acceptManifests, ref.Digest)
	if err != nil {
		return nil, err
	}
	top := d
	if converter.IsIndex(body, mt) {
		desc, err := converter.SelectPlatform(body, plat)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ref, err)
		}
		body, mt, d, err = r.get(ctx, ref, "manifests", desc.Digest.String(), acceptManifests, desc.Digest)
		if err != nil {
			return nil, err
		}
	}
	m, err := converter.ParseImageManifest(body, mt)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	cfg, _, _, err := r.get(ctx, ref, "blobs", m.Config.Digest.String(), "*/*", m.Config.Digest)
	if err != nil {
		return nil, fmt.Errorf("%s: config: %w", ref, err)
	}
	out := &Resolved{Ref: ref, TopDigest: top, ManifestDigest: d, MediaType: mt, Manifest: body}
	if err := json.Unmarshal(cfg, &out.Config); err != nil {
		return nil, fmt.Errorf("%s: config %s is not an image config: %v", ref, m.Config.Digest, err)
	}
	return out, nil
}

// Digest returns the digest of what ref names (an index or a manifest),
// fetched and checked, without choosing a platform.
func (r *Resolver) Digest(ctx context.Context, ref Ref) (digest.Digest, error) {
	_, _, d, err := r.get(ctx, ref, "manifests", ref.Reference(), acceptManifests, ref.Digest)
	return d, err
}

// ErrNotFound is returned when the registry does not know the image.
var ErrNotFound = errors.New("image not found")

// get fetches /v2/REPO/KIND/REF and checks its digest against want (when
// set) or the registry's Docker-Content-Digest header.
func (r *Resolver) get(ctx context.Context, ref Ref, kind, reference, accept string, want digest.Digest) ([]byte, string, digest.Digest, error) {
	url := r.url(ref, kind+"/"+reference)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, "", "", err
	}
	req.Header.Set("Accept", accept)
	resp, err := r.client().Do(req)
	if ae := authError(err); ae != nil {
		return nil, "", "", ae
	}
	if err != nil {
		return nil, "", "", fmt.Errorf("fetching %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return nil, "", "", fmt.Errorf("%s/%s:%s: %w", ref.Registry, ref.Repo, reference, ErrNotFound)
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, "", "", fmt.Errorf("fetching %s: %s: %s", url, resp.Status, strings.TrimSpace(string(msg)))
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxDocument+1))
	if err != nil {
		return nil, "", "", fmt.Errorf("fetching %s: %w", url, err)
	}
	if len(body) > maxDocument {
		return nil, "", "", fmt.Errorf("fetching %s: larger than %d bytes", url, maxDocument)
	}
	if want == "" {
		if h := resp.Header.Get("Docker-Content-Digest"); h != "" {
			if want, err = digest.Parse(h); err != nil {
				return nil, "", "", fmt.Errorf("fetching %s: bad Docker-Content-Digest %q", url, h)
			}
		}
	}
	got := digest.FromBytes(body)
	if want != "" {
		if err := want.Validate(); err != nil {
			return nil, "", "", err
		}
		got = want.Algorithm().FromBytes(body)
		if got != want {
			return nil, "", "", fmt.Errorf("fetching %s: content is %s, want %s", url, got, want)
		}
	}
	mt, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	return body, strings.TrimSpace(mt), got, nil
}

// url is the registry API URL of path under ref's repository.
func (r *Resolver) url(ref Ref, path string) string {
	scheme := r.Scheme
	if scheme == "" {
		scheme = "http"
	}
	return fmt.Sprintf("%s://%s/v2/%s/%s", scheme, ref.Registry, ref.Repo, path)
}
