package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dockyard/dockyard/converter"
)

// Docker's layer media types and their OCI equivalents: a committed image
// is an OCI manifest, and its base's layers are described in the same
// vocabulary.
var ociLayerType = map[string]string{
	"application/vnd.docker.image.rootfs.diff.tar.gzip": ocispec.MediaTypeImageLayerGzip,
	"application/vnd.docker.image.rootfs.diff.tar.zstd": ocispec.MediaTypeImageLayerZstd,
	"application/vnd.docker.image.rootfs.diff.tar":      ocispec.MediaTypeImageLayer,
}

// Commit is an image to push: the base it extends (nil for none), the new
// layer's blob and the new config.
type Commit struct {
	Base   *Resolved
	Layer  Layer
	Blob   io.ReadSeeker // the layer blob, Layer.Descriptor.Size bytes
	Config ocispec.Image
}

// Push uploads c to ref (a tag) as an OCI image manifest and returns the
// manifest's digest. The base's layers are mounted from its repository when
// the registry is the same (no bytes move), otherwise copied.
func (r *Resolver) Push(ctx context.Context, ref Ref, c Commit) (digest.Digest, error) {
	if ref.Digest != "" {
		return "", fmt.Errorf("%s: push to a tag, not a digest", ref)
	}
	var layers []ocispec.Descriptor
	if c.Base != nil {
		m, err := converter.ParseImageManifest(c.Base.Manifest, c.Base.MediaType)
		if err != nil {
			return "", fmt.Errorf("%s: %w", c.Base.Ref, err)
		}
		if len(m.Layers) != len(c.Config.RootFS.DiffIDs)-1 {
			return "", fmt.Errorf("%s: the manifest has %d layers, its config %d diff IDs", c.Base.Ref, len(m.Layers), len(c.Config.RootFS.DiffIDs)-1)
		}
		for _, l := range m.Layers {
			if err := r.ensureBlob(ctx, ref, c.Base.Ref, l); err != nil {
				return "", fmt.Errorf("layer %s of %s: %w", l.Digest, c.Base.Ref, err)
			}
			if t, ok := ociLayerType[l.MediaType]; ok {
				l.MediaType = t
			}
			layers = append(layers, l)
		}
	}
	if ok, err := r.hasBlob(ctx, ref, c.Layer.Descriptor.Digest); err != nil {
		return "", err
	} else if !ok {
		if _, err := c.Blob.Seek(0, io.SeekStart); err != nil {
			return "", err
		}
		if err := r.upload(ctx, ref, c.Layer.Descriptor.Digest, c.Layer.Descriptor.Size, c.Blob); err != nil {
			return "", fmt.Errorf("uploading the layer: %w", err)
		}
	}
	layers = append(layers, c.Layer.Descriptor)

	cfg, err := json.Marshal(c.Config)
	if err != nil {
		return "", err
	}
	cfgDesc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
	if ok, err := r.hasBlob(ctx, ref, cfgDesc.Digest); err != nil {
		return "", err
	} else if !ok {
		if err := r.upload(ctx, ref, cfgDesc.Digest, cfgDesc.Size, bytes.NewReader(cfg)); err != nil {
			return "", fmt.Errorf("uploading the config: %w", err)
		}
	}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest, Config: cfgDesc, Layers: layers}
	m.SchemaVersion = 2
	mb, err := json.Marshal(m)
	if err != nil {
		return "", err
	}
	if err := r.put(ctx, ref, "manifests/"+ref.Tag, ocispec.MediaTypeImageManifest, mb); err != nil {
		return "", err
	}
	return digest.FromBytes(mb), nil
}

// ensureBlob makes the blob l of from's repository present in ref's.
func (r *Resolver) ensureBlob(ctx context.Context, ref, from Ref, l ocispec.Descriptor) error {
	if ok, err := r.hasBlob(ctx, ref, l.Digest); err != nil || ok {
		return err
	}
	if from.Registry == ref.Registry {
		q := url.Values{"mount": {l.Digest.String()}, "from": {from.Repo}}
		resp, err := r.send(ctx, http.MethodPost, r.url(ref, "blobs/uploads/?"+q.Encode()), "", nil, 0)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusCreated {
			return nil
		}
		// 202: the registry opened an upload instead; copy the bytes.
	}
	resp, err := r.send(ctx, http.MethodGet, r.url(from, "blobs/"+l.Digest.String()), "", nil, 0)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(http.MethodGet, r.url(from, "blobs/"+l.Digest.String()), resp)
	}
	return r.upload(ctx, ref, l.Digest, l.Size, resp.Body)
}

func (r *Resolver) hasBlob(ctx context.Context, ref Ref, d digest.Digest) (bool, error) {
	u := r.url(ref, "blobs/"+d.String())
	resp, err := r.send(ctx, http.MethodHead, u, "", nil, 0)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		return true, nil
	case http.StatusNotFound:
		return false, nil
	}
	return false, statusError(http.MethodHead, u, resp)
}

// upload sends size bytes of body as blob d: a POST opens an upload, one
// PUT streams the bytes and closes it (the spec's monolithic upload in two
// requests, which every registry accepts).
func (r *Resolver) upload(ctx context.Context, ref Ref, d digest.Digest, size int64, body io.Reader) error {
	start := r.url(ref, "blobs/uploads/")
	resp, err := r.send(ctx, http.MethodPost, start, "", nil, 0)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return statusError(http.MethodPost, start, resp)
	}
	loc, err := resp.Request.URL.Parse(resp.Header.Get("Location"))
	if err != nil || resp.Header.Get("Location") == "" {
		return fmt.Errorf("POST %s: no usable Location in the reply", start)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	resp, err = r.send(ctx, http.MethodPut, loc.String(), "application/octet-stream", body, size)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		return statusError(http.MethodPut, loc.Redacted(), resp)
	}
	return nil
}

// send makes one request; a body is sent with its length (size) and
// content type.
func (r *Resolver) send(ctx context.Context, method, u, contentType string, body io.Reader, size int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = size
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := r.client().Do(req)
	if ae := authError(err); ae != nil {
		return nil, ae
	}
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("registry %s: %w", req.URL.Host, err)
	}
	return resp, nil
}

func statusError(method, u string, resp *http.Response) error {
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return fmt.Errorf("%s %s: %s: %s", method, u, resp.Status, strings.TrimSpace(string(msg)))
}

// Ping checks that ref's registry answers the API's base endpoint, so a
// commit fails before writing its layer when the registry is unreachable.
func (r *Resolver) Ping(ctx context.Context, ref Ref) error {
	u := strings.TrimSuffix(r.url(ref, ""), ref.Repo+"/")
	resp, err := r.send(ctx, http.MethodGet, u, "", nil, 0)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return statusError(http.MethodGet, u, resp)
	}
	return nil
}
