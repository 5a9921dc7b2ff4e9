package registry

import (
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// Manifest media types the registry accepts.
const (
	MediaTypeOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeOCIIndex       = "application/vnd.oci.image.index.v1+json"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// schema1Types are refused: the format is deprecated, signed with keys the
// registry would have to manage, and no current client needs it.
var schema1Types = map[string]bool{
	"application/vnd.docker.distribution.manifest.v1+json":      true,
	"application/vnd.docker.distribution.manifest.v1+prettyjws": true,
}

type descriptorDoc struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	URLs         []string          `json:"urls,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// manifestDoc is the union of the fields of image manifests and indexes that
// the registry looks at.
type manifestDoc struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType"`
	Config        *descriptorDoc    `json:"config"`
	Layers        []descriptorDoc   `json:"layers"`
	Manifests     []descriptorDoc   `json:"manifests"`
	Subject       *descriptorDoc    `json:"subject"`
	Annotations   map[string]string `json:"annotations"`
	FSLayers      json.RawMessage   `json:"fsLayers"` // schema1 only
}

// resolveRef turns a tag or digest reference into a digest.
func (r *Registry) resolveRef(ctx context.Context, name, ref string) (Digest, error) {
	if strings.Contains(ref, ":") {
		return ParseDigest(ref)
	}
	if !ValidTag(ref) {
		return Digest{}, ErrTagInvalid.With("%q", ref)
	}
	return r.rec.tag(ctx, name, ref)
}

// getManifest serves GET and HEAD by tag or digest.
func (r *Registry) getManifest(c echo.Context, name, ref string) error {
	ctx := c.Request().Context()
	d, err := r.resolveRef(ctx, name, ref)
	if errors.Is(err, ErrTagInvalid.E()) || errors.Is(err, ErrDigestInvalid.E()) {
		return ErrManifestUnknown.Wrap(err, "")
	} else if err != nil {
		return err
	}
	m, err := r.rec.manifest(ctx, name, d)
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set("Docker-Content-Digest", d.String())
	h.Set("ETag", `"`+d.String()+`"`)
	h.Set("Content-Length", strconv.Itoa(len(m.Body)))
	if c.Request().Method == http.MethodHead {
		h.Set(echo.HeaderContentType, m.MediaType)
		return c.NoContent(http.StatusOK)
	}
	return c.Blob(http.StatusOK, m.MediaType, m.Body)
}

// nondistributable reports whether a layer need not be in the registry:
// foreign layers that clients fetch from their URLs.
func nondistributable(l descriptorDoc) bool {
	return len(l.URLs) > 0 || strings.Contains(l.MediaType, "nondistributable") || strings.Contains(l.MediaType, "foreign")
}

// putManifest validates and stores a manifest, its tags and its referrer
// entry, then tells the converter.
func (r *Registry) putManifest(c echo.Context, name, ref string) error {
	req := c.Request()
	ctx := req.Context()
	body, err := readLimited(req.Body, r.cfg.MaxManifestSize, "manifest")
	if err != nil {
		return err
	}
	ct := req.Header.Get(echo.HeaderContentType)
	if ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err == nil {
			ct = mt
		}
	}
	if schema1Types[ct] {
		return ErrManifestInvalid.With("Docker schema1 manifests are not supported; push a schema2 or OCI manifest")
	}
	var doc manifestDoc
	if err := json.Unmarshal(body, &doc); err != nil {
		return ErrManifestInvalid.With("not JSON: %v", err)
	}
	if doc.SchemaVersion == 1 || len(doc.FSLayers) > 0 {
		return ErrManifestInvalid.With("Docker schema1 manifests are not supported; push a schema2 or OCI manifest")
	}
	if doc.SchemaVersion != 2 {
		return ErrManifestInvalid.With("schemaVersion must be 2")
	}
	mt := ct
	if doc.MediaType != "" {
		if ct != "" && doc.MediaType != ct {
			return ErrManifestInvalid.With("mediaType %q does not match Content-Type %q", doc.MediaType, ct)
		}
		mt = doc.MediaType
	}
	if mt == "" {
		switch {
		case doc.Config != nil:
			mt = MediaTypeOCIManifest
		case doc.Manifests != nil:
			mt = MediaTypeOCIIndex
		}
	}
	p := manifestPut{repo: name, rec: manifestRecord{MediaType: mt, Body: body}}
	addBlob := func(dd descriptorDoc, what string) error {
		d, err := ParseDigest(dd.Digest)
		if err != nil {
			return ErrManifestInvalid.Wrap(err, "%s", what)
		}
		p.rec.Blobs = append(p.rec.Blobs, d.String())
		return nil
	}
	switch mt {
	case MediaTypeOCIManifest, MediaTypeDockerManifest:
		if doc.Config == nil {
			return ErrManifestInvalid.With("image manifest without config")
		}
		if err := addBlob(*doc.Config, "config"); err != nil {
			return err
		}
		for i, l := range doc.Layers {
			if nondistributable(l) {
				if _, err := ParseDigest(l.Digest); err != nil {
					return ErrManifestInvalid.Wrap(err, "layer %d", i)
				}
				continue
			}
			if err := addBlob(l, "layer "+strconv.Itoa(i)); err != nil {
				return err
			}
		}
	case MediaTypeOCIIndex, MediaTypeDockerList:
		for i, m := range doc.Manifests {
			d, err := ParseDigest(m.Digest)
			if err != nil {
				return ErrManifestInvalid.Wrap(err, "manifest %d", i)
			}
			p.children = append(p.children, d)
		}
	default:
		return ErrManifestInvalid.With("unsupported manifest media type %q", mt)
	}

	// The digest: the one in the URL (any supported algorithm, verified) or
	// sha256 of the body for a push by tag.
	if strings.Contains(ref, ":") {
		d, err := ParseDigest(ref)
		if err != nil {
			return err
		}
		if got := digestOf(d.Alg, body); got != d {
			return ErrDigestInvalid.With("manifest digest is %s, not %s", got, d)
		}
		p.digest = d
	} else {
		if !ValidTag(ref) {
			return ErrTagInvalid.With("%q", ref)
		}
		p.tags = append(p.tags, ref)
		p.digest = digestOf("sha256", body)
	}
	for _, t := range c.QueryParams()["tag"] {
		if !ValidTag(t) {
			return ErrTagInvalid.With("%q", t)
		}
		p.tags = append(p.tags, t)
	}

	if doc.Subject != nil {
		sd, err := ParseDigest(doc.Subject.Digest)
		if err != nil {
			return ErrManifestInvalid.Wrap(err, "subject")
		}
		p.subject = sd
		at := doc.ArtifactType
		if at == "" && doc.Config != nil {
			at = doc.Config.MediaType
		}
		p.rec.Subject = sd.String()
		p.referrer = &Descriptor{MediaType: mt, Digest: p.digest.String(), Size: int64(len(body)),
			ArtifactType: at, Annotations: doc.Annotations}
	}
	if err := r.rec.putManifest(ctx, p); err != nil {
		return err
	}
	if r.cfg.OnManifestPut != nil {
		r.cfg.OnManifestPut(context.WithoutCancel(ctx), name, p.digest.String(), mt, body)
	}
	h := c.Response().Header()
	h.Set(echo.HeaderLocation, "/v2/"+name+"/manifests/"+p.digest.String())
	h.Set("Docker-Content-Digest", p.digest.String())
	if !p.subject.IsZero() {
		h.Set("OCI-Subject", p.subject.String())
	}
	for _, t := range c.QueryParams()["tag"] {
		h.Add("OCI-Tag", t)
	}
	h.Set("Content-Length", "0")
	return c.NoContent(http.StatusCreated)
}

// deleteManifest deletes a manifest by digest (with its tags), or only a tag.
func (r *Registry) deleteManifest(c echo.Context, name, ref string) error {
	ctx := c.Request().Context()
	var err error
	if strings.Contains(ref, ":") {
		var d Digest
		if d, err = ParseDigest(ref); err != nil {
			return err
		}
		err = r.rec.deleteManifest(ctx, name, d)
	} else {
		if !ValidTag(ref) {
			return ErrTagInvalid.With("%q", ref)
		}
		err = r.rec.deleteTag(ctx, name, ref)
	}
	if err != nil {
		return err
	}
	return c.NoContent(http.StatusAccepted)
}
