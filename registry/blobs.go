package registry

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
)

func blobURL(name string, d Digest) string { return "/v2/" + name + "/blobs/" + d.String() }

// getBlob serves GET and HEAD of a blob, with Range support.
func (r *Registry) getBlob(c echo.Context, name, ref string) error {
	d, err := ParseDigest(ref)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	if _, _, err := r.rec.link(ctx, name, d); errors.Is(err, ErrBlobUnknown.E()) {
		// Manifests are content too: like distribution, serve them on the
		// blob endpoint, which some tools use to fetch by digest alone.
		m, merr := r.rec.manifest(ctx, name, d)
		if merr != nil {
			return err
		}
		return serveBytes(c, d, "application/octet-stream", m.Body)
	} else if err != nil {
		return err
	}
	if c.Request().Method == http.MethodHead && c.Request().Header.Get("Range") == "" {
		// Clients HEAD every layer before pushing it; a Stat is one lookup,
		// an Open also fetches the file's extents.
		size, err := r.blobs.Stat(ctx, d)
		if errors.Is(err, ErrBlobNotFound) {
			return ErrBlobUnknown.With("%s: linked but missing from storage", d)
		} else if err != nil {
			return err
		}
		h := c.Response().Header()
		h.Set("Docker-Content-Digest", d.String())
		h.Set(echo.HeaderContentType, "application/octet-stream")
		h.Set("ETag", `"`+d.String()+`"`)
		h.Set("Accept-Ranges", "bytes")
		h.Set("Content-Length", strconv.FormatInt(size, 10))
		return c.NoContent(http.StatusOK)
	}
	br, err := r.blobs.Open(ctx, d)
	if errors.Is(err, ErrBlobNotFound) {
		return ErrBlobUnknown.With("%s: linked but missing from storage", d)
	} else if err != nil {
		return err
	}
	defer br.Close()
	h := c.Response().Header()
	h.Set("Docker-Content-Digest", d.String())
	h.Set(echo.HeaderContentType, "application/octet-stream")
	h.Set("ETag", `"`+d.String()+`"`)
	// Blobs are immutable: a client may cache them for good.
	h.Set("Cache-Control", "max-age=31536000")
	if plainGet(c.Request()) {
		// Said on every GET, as ServeContent does, so a client whose
		// download breaks knows it can resume with a Range request.
		h.Set("Accept-Ranges", "bytes")
		return r.sendBlob(c, br)
	}
	// ServeContent handles Range, If-Range, If-None-Match, HEAD and 416.
	http.ServeContent(bigWriter{c.Response()}, c.Request(), "", time.Time{}, io.NewSectionReader(br, 0, br.Size()))
	return nil
}

// deleteBlob removes the blob from this repository; the bytes are collected
// later, once no repository links them.
func (r *Registry) deleteBlob(c echo.Context, name, ref string) error {
	d, err := ParseDigest(ref)
	if err != nil {
		return err
	}
	if err := r.rec.unlinkBlob(c.Request().Context(), name, d); err != nil {
		return err
	}
	return c.NoContent(http.StatusAccepted)
}

// serveBytes serves a small in-memory body with blob semantics (Range, HEAD).
func serveBytes(c echo.Context, d Digest, contentType string, body []byte) error {
	h := c.Response().Header()
	h.Set("Docker-Content-Digest", d.String())
	h.Set(echo.HeaderContentType, contentType)
	h.Set("ETag", `"`+d.String()+`"`)
	http.ServeContent(c.Response(), c.Request(), "", time.Time{}, bytes.NewReader(body))
	return nil
}
