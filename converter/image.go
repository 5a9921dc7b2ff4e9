package converter

import (
	"encoding/json"
	"fmt"
	"sort"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Docker's media types, still what `docker push` sends.
const (
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerConfig       = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayer        = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerForeignLayer = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
)

// ErrNotImage: a manifest that is not a runnable image (an artifact, a
// signature, an index). The registry hook skips these.
var ErrNotImage = fmt.Errorf("%w: not an image manifest", ErrMediaType)

// Platform names an image's target, as in an image index.
type Platform struct {
	OS, Architecture, Variant string
}

// DefaultPlatform is what Dockyard runs unless told otherwise.
var DefaultPlatform = Platform{OS: "linux", Architecture: "amd64"}

func (p Platform) String() string {
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

// manifestProbe reads the fields that tell manifests and indexes apart.
type manifestProbe struct {
	MediaType string               `json:"mediaType"`
	Config    *ocispec.Descriptor  `json:"config"`
	Layers    []ocispec.Descriptor `json:"layers"`
	Manifests []ocispec.Descriptor `json:"manifests"`
}

// IsIndex reports whether manifest bytes are an image index or a Docker
// manifest list. mediaType is the Content-Type it was pushed with ("" =
// trust the document).
func IsIndex(manifest []byte, mediaType string) bool {
	var p manifestProbe
	if json.Unmarshal(manifest, &p) != nil {
		return false
	}
	if mediaType == "" {
		mediaType = p.MediaType
	}
	switch mediaType {
	case ocispec.MediaTypeImageIndex, MediaTypeDockerManifestList:
		return true
	case "":
		return p.Manifests != nil && p.Config == nil
	}
	return false
}

// ParseImageManifest parses an image manifest (OCI or Docker v2 schema 2)
// and checks that it describes a runnable image: an image config and tar
// layers. Other manifests (artifacts, indexes) give ErrNotImage.
func ParseImageManifest(manifest []byte, mediaType string) (*ocispec.Manifest, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		return nil, fmt.Errorf("%w: manifest: %v", ErrMediaType, err)
	}
	if mediaType == "" {
		mediaType = m.MediaType
	}
	switch mediaType {
	case ocispec.MediaTypeImageManifest, MediaTypeDockerManifest, "":
	default:
		return nil, fmt.Errorf("%w (%s)", ErrNotImage, mediaType)
	}
	switch m.Config.MediaType {
	case ocispec.MediaTypeImageConfig, MediaTypeDockerConfig:
	default:
		return nil, fmt.Errorf("%w (config %s)", ErrNotImage, m.Config.MediaType)
	}
	for _, l := range m.Layers {
		if !IsLayerMediaType(l.MediaType) {
			return nil, fmt.Errorf("%w: layer %s has media type %s", ErrMediaType, l.Digest, l.MediaType)
		}
		if err := l.Digest.Validate(); err != nil {
			return nil, fmt.Errorf("%w: layer digest %q: %v", ErrMediaType, l.Digest, err)
		}
	}
	return &m, nil
}

// IsLayerMediaType reports whether a layer media type is a tar the converter
// indexes (the compression itself is detected from the bytes).
func IsLayerMediaType(mt string) bool {
	switch mt {
	case ocispec.MediaTypeImageLayer, ocispec.MediaTypeImageLayerGzip, ocispec.MediaTypeImageLayerZstd,
		ocispec.MediaTypeImageLayerNonDistributable, ocispec.MediaTypeImageLayerNonDistributableGzip, //nolint:staticcheck // still pushed by old tools
		ocispec.MediaTypeImageLayerNonDistributableZstd, //nolint:staticcheck
		MediaTypeDockerLayer, MediaTypeDockerForeignLayer:
		return true
	}
	return false
}

// SelectPlatform picks the manifest for want from an image index or Docker
// manifest list. An entry with no variant matches any wanted variant, and an
// exact variant match is preferred.
func SelectPlatform(index []byte, want Platform) (ocispec.Descriptor, error) {
	var idx ocispec.Index
	if err := json.Unmarshal(index, &idx); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%w: index: %v", ErrMediaType, err)
	}
	var loose *ocispec.Descriptor
	for i := range idx.Manifests {
		d := &idx.Manifests[i]
		if d.Platform == nil || d.Platform.OS != want.OS || d.Platform.Architecture != want.Architecture {
			continue
		}
		if d.Platform.Variant == want.Variant {
			return *d, nil
		}
		if loose == nil && (want.Variant == "" || d.Platform.Variant == "") {
			loose = d
		}
	}
	if loose != nil {
		return *loose, nil
	}
	return ocispec.Descriptor{}, fmt.Errorf("%w %s", ErrNoPlatform, want)
}

// ImageConfig is what running an image needs from its config blob; the
// run command turns it into an OCI runtime spec.
type ImageConfig struct {
	Platform     Platform
	User         string
	Env          []string
	Entrypoint   []string
	Cmd          []string
	WorkingDir   string
	Labels       map[string]string
	StopSignal   string
	ExposedPorts []string
	Volumes      []string
	// DiffIDs are the digests of the uncompressed layers, bottom first.
	DiffIDs []digest.Digest
}

// ParseImageConfig parses an OCI or Docker image config blob.
func ParseImageConfig(b []byte) (*ImageConfig, error) {
	var c ocispec.Image
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%w: image config: %v", ErrMediaType, err)
	}
	out := &ImageConfig{
		Platform:   Platform{OS: c.OS, Architecture: c.Architecture, Variant: c.Variant},
		User:       c.Config.User,
		Env:        c.Config.Env,
		Entrypoint: c.Config.Entrypoint,
		Cmd:        c.Config.Cmd,
		WorkingDir: c.Config.WorkingDir,
		Labels:     c.Config.Labels,
		StopSignal: c.Config.StopSignal,
		DiffIDs:    c.RootFS.DiffIDs,
	}
	for p := range c.Config.ExposedPorts {
		out.ExposedPorts = append(out.ExposedPorts, p)
	}
	for v := range c.Config.Volumes {
		out.Volumes = append(out.Volumes, v)
	}
	sort.Strings(out.ExposedPorts)
	sort.Strings(out.Volumes)
	return out, nil
}

// Args is the process argv the image runs: Entrypoint followed by Cmd, with
// override (the user's command) replacing Cmd when given, as docker run does.
func (c *ImageConfig) Args(override []string) []string {
	cmd := c.Cmd
	if len(override) > 0 {
		cmd = override
	}
	return append(append([]string(nil), c.Entrypoint...), cmd...)
}
