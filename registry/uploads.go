package registry

import (
	"context"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

func uploadURL(name, id string) string { return "/v2/" + name + "/blobs/uploads/" + id }

// uploadHeaders sets what every upload response carries: where to continue
// and how many bytes the registry holds.
func uploadHeaders(c echo.Context, u uploadRecord) {
	h := c.Response().Header()
	h.Set(echo.HeaderLocation, uploadURL(u.Repo, u.ID))
	h.Set("Docker-Upload-UUID", u.ID)
	end := u.Size - 1
	if end < 0 {
		end = 0
	}
	h.Set("Range", fmt.Sprintf("0-%d", end))
}

// startUpload handles POST /v2/<name>/blobs/uploads/: a cross-repository
// mount, a monolithic upload (?digest=) or a new session.
func (r *Registry) startUpload(c echo.Context, name string) error {
	q := c.Request().URL.Query()
	ctx := c.Request().Context()
	if m := q.Get("mount"); m != "" {
		done, err := r.mount(c, name, m, q.Get("from"))
		if done || err != nil {
			return err
		}
		// Not mountable: the spec says to fall back to a new upload session.
	}
	var want Digest
	if ds := q.Get("digest"); ds != "" {
		d, err := ParseDigest(ds)
		if err != nil {
			return err
		}
		want = d
	}
	alg := "sha256"
	if !want.IsZero() {
		alg = want.Alg
	}
	now := r.cfg.Now().UnixNano()
	u := uploadRecord{ID: newID(), Repo: name, Alg: alg, Started: now, Updated: now}
	if err := r.blobs.CreateUpload(ctx, u.ID); err != nil {
		return fmt.Errorf("starting upload: %w", err)
	}
	if err := r.rec.createUpload(ctx, u); err != nil {
		_ = r.blobs.DeleteUpload(context.WithoutCancel(ctx), u.ID)
		return err
	}
	if want.IsZero() {
		uploadHeaders(c, u)
		c.Response().Header().Set("Content-Length", "0")
		return c.NoContent(http.StatusAccepted)
	}
	// Monolithic: the body is the whole blob. The client never learns this
	// session's location, so a failure discards it rather than leaving it to
	// the collector.
	err := r.complete(c, u, mustJSON(u), want)
	if err != nil {
		bg := context.WithoutCancel(ctx)
		if derr := r.rec.deleteUpload(bg, u.ID); derr != nil {
			r.log.Warn("discarding failed upload", "upload", u.ID, "err", derr)
		} else if derr := r.blobs.DeleteUpload(bg, u.ID); derr != nil {
			r.log.Warn("discarding failed upload", "upload", u.ID, "err", derr)
		}
	}
	return err
}

// mount links blob m into name if from (or, with no from, any repository)
// holds it. It reports false when the blob cannot be mounted.
func (r *Registry) mount(c echo.Context, name, m, from string) (bool, error) {
	ctx := c.Request().Context()
	d, err := ParseDigest(m)
	if err != nil {
		return false, nil
	}
	var size int64
	if from != "" {
		if !ValidName(from) {
			return false, nil
		}
		if ok, err := r.mayPull(c, from); err != nil || !ok {
			return false, err
		}
		l, _, err := r.rec.link(ctx, from, d)
		if errors.Is(err, ErrBlobUnknown.E()) {
			return false, nil
		} else if err != nil {
			return false, err
		}
		size = l.Size
	} else if r.auth != nil {
		// With access control a digest is no proof of a right to read
		// it: the client uploads the blob, or names a source it may pull.
		return false, nil
	} else {
		// Anonymous mount: without access control every blob in the
		// registry is readable, so any repository holding it will do.
		b, ok, err := r.rec.blob(ctx, d)
		if err != nil {
			return false, err
		}
		if !ok || b.Links == 0 || b.Deleting {
			return false, nil
		}
		size = b.Size
	}
	if _, err := r.blobs.Stat(ctx, d); errors.Is(err, ErrBlobNotFound) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	if err := r.rec.linkBlob(ctx, name, d, size, "", nil); err != nil {
		if errors.Is(err, ErrBlobUnknown.E()) {
			return false, nil
		}
		return false, err
	}
	h := c.Response().Header()
	h.Set(echo.HeaderLocation, blobURL(name, d))
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Length", "0")
	return true, c.NoContent(http.StatusCreated)
}

// parseContentRange parses a chunk's "start-end" (inclusive) Content-Range.
func parseContentRange(s string) (start, end int64, err error) {
	s = strings.TrimPrefix(strings.TrimSpace(s), "bytes ")
	s = strings.TrimPrefix(s, "bytes=")
	a, b, ok := strings.Cut(s, "-")
	if ok {
		start, err = strconv.ParseInt(a, 10, 64)
	}
	if ok && err == nil {
		end, err = strconv.ParseInt(b, 10, 64)
	}
	if !ok || err != nil || start < 0 || end < start {
		return 0, 0, ErrRangeInvalid.With("Content-Range %q", s)
	}
	return start, end, nil
}

// restoreHash rebuilds the running hash of an upload from its saved state.
func restoreHash(u uploadRecord) (hash.Hash, error) {
	h := newHash(u.Alg)
	if len(u.State) > 0 {
		if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(u.State); err != nil {
			return nil, fmt.Errorf("restoring hash state of upload %s: %w", u.ID, err)
		}
	}
	return h, nil
}

// checkRange validates a chunk's Content-Range against the session and
// returns the number of bytes it announces (-1: streamed, no range).
func checkRange(c echo.Context, u uploadRecord) (int64, error) {
	req := c.Request()
	cr := req.Header.Get("Content-Range")
	if cr == "" {
		return -1, nil
	}
	start, end, err := parseContentRange(cr)
	if err != nil {
		uploadHeaders(c, u)
		return 0, err
	}
	if start != u.Size {
		uploadHeaders(c, u)
		return 0, ErrRangeInvalid.With("chunk starts at %d, upload holds %d bytes", start, u.Size)
	}
	want := end - start + 1
	if req.ContentLength >= 0 && req.ContentLength != want {
		uploadHeaders(c, u)
		return 0, ErrRangeInvalid.With("Content-Range covers %d bytes, Content-Length is %d", want, req.ContentLength)
	}
	return want, nil
}

// appendBody streams the request body into the upload at its current end,
// hashing as it goes, and advances u's size and hash state. The caller holds
// the session's write lease and stores u.
func (r *Registry) appendBody(c echo.Context, u *uploadRecord, want int64) error {
	req := c.Request()
	if req.ContentLength == 0 && want <= 0 {
		return nil
	}
	h, err := restoreHash(*u)
	if err != nil {
		return err
	}
	w, err := r.blobs.WriteUpload(req.Context(), u.ID, u.Size)
	if errors.Is(err, ErrBlobNotFound) {
		return ErrBlobUploadUnknown.Wrap(err, "")
	} else if err != nil {
		return err
	}
	limit := r.cfg.MaxBlobSize - u.Size
	n, err := copyHashed(w, h, io.LimitReader(req.Body, limit+1))
	if cerr := w.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("storing upload %s: %w", u.ID, cerr)
	}
	if err != nil {
		return fmt.Errorf("receiving upload %s: %w", u.ID, err)
	}
	if n > limit {
		return ErrTooLarge.With("blob is larger than %d bytes", r.cfg.MaxBlobSize)
	}
	if want >= 0 && n != want {
		return ErrSizeInvalid.With("received %d bytes, Content-Range announced %d", n, want)
	}
	state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return fmt.Errorf("saving hash state: %w", err)
	}
	u.Size += n
	u.State = state
	u.Updated = r.cfg.Now().UnixNano()
	return nil
}

// patchUpload handles PATCH: a streamed or chunked part of the blob.
func (r *Registry) patchUpload(c echo.Context, name, id string) error {
	if !uploadIDRe.MatchString(id) {
		return ErrBlobUploadUnknown.With("%q", id)
	}
	ctx := c.Request().Context()
	u, raw, err := r.rec.upload(ctx, name, id)
	if err != nil {
		return err
	}
	want, err := checkRange(c, u)
	if err != nil {
		return err
	}
	l, err := r.rec.lockUpload(ctx, u, raw)
	if err != nil {
		return err
	}
	if err := r.appendBody(c, &u, want); err != nil {
		// The session stays as it was; what this request wrote past its end
		// is overwritten by the next one.
		if rerr := l.release(ctx, nil); rerr != nil {
			r.log.Warn("releasing upload", "upload", id, "err", rerr)
		}
		return err
	}
	if err := l.release(ctx, &u); err != nil {
		return err
	}
	uploadHeaders(c, u)
	c.Response().Header().Set("Content-Length", "0")
	return c.NoContent(http.StatusAccepted)
}

// finishUpload handles PUT ?digest=: an optional last chunk, then commit.
func (r *Registry) finishUpload(c echo.Context, name, id string) error {
	if !uploadIDRe.MatchString(id) {
		return ErrBlobUploadUnknown.With("%q", id)
	}
	ds := c.QueryParam("digest")
	if ds == "" {
		return ErrDigestInvalid.With("the digest query parameter is required")
	}
	want, err := ParseDigest(ds)
	if err != nil {
		return err
	}
	u, raw, err := r.rec.upload(c.Request().Context(), name, id)
	if err != nil {
		return err
	}
	return r.complete(c, u, raw, want)
}

// complete appends the request body, verifies the digest and makes the blob
// visible in the repository, holding the session's write lease throughout so
// the bytes committed are the bytes hashed.
func (r *Registry) complete(c echo.Context, u uploadRecord, raw []byte, want Digest) error {
	ctx := c.Request().Context()
	n, err := checkRange(c, u)
	if err != nil {
		return err
	}
	l, err := r.rec.lockUpload(ctx, u, raw)
	if err != nil {
		return err
	}
	before := u
	if err := r.appendBody(c, &u, n); err != nil {
		if rerr := l.release(ctx, nil); rerr != nil {
			r.log.Warn("releasing upload", "upload", u.ID, "err", rerr)
		}
		return err
	}
	if err := r.commitLocked(ctx, u, want, l); err != nil {
		// Keep what this request appended: the client may retry the PUT
		// with the right digest.
		next := &u
		if errors.Is(err, ErrBlobUploadInvalid.E()) {
			next = &before
		}
		if rerr := l.release(ctx, next); rerr != nil && !errors.Is(rerr, ErrBlobUploadInvalid.E()) {
			r.log.Warn("releasing upload", "upload", u.ID, "err", rerr)
		}
		return err
	}
	h := c.Response().Header()
	h.Set(echo.HeaderLocation, blobURL(u.Repo, want))
	h.Set("Docker-Content-Digest", want.String())
	h.Set("Content-Length", "0")
	return c.NoContent(http.StatusCreated)
}

// uploadStatus handles GET of an upload: 204 with the Range held.
func (r *Registry) uploadStatus(c echo.Context, name, id string) error {
	if !uploadIDRe.MatchString(id) {
		return ErrBlobUploadUnknown.With("%q", id)
	}
	u, _, err := r.rec.upload(c.Request().Context(), name, id)
	if err != nil {
		return err
	}
	uploadHeaders(c, u)
	c.Response().Header().Set("Content-Length", "0")
	return c.NoContent(http.StatusNoContent)
}

// cancelUpload handles DELETE of an upload.
func (r *Registry) cancelUpload(c echo.Context, name, id string) error {
	if !uploadIDRe.MatchString(id) {
		return ErrBlobUploadUnknown.With("%q", id)
	}
	ctx := c.Request().Context()
	if _, _, err := r.rec.upload(ctx, name, id); err != nil {
		return err
	}
	if err := r.rec.deleteUpload(ctx, id); err != nil {
		return err
	}
	if err := r.blobs.DeleteUpload(ctx, id); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// commitLocked verifies the digest of a locked session and commits it.
func (r *Registry) commitLocked(ctx context.Context, u uploadRecord, want Digest, l *uploadLock) error {
	var sum []byte
	if want.Alg == u.Alg {
		h, err := restoreHash(u)
		if err != nil {
			return err
		}
		sum = h.Sum(nil)
	} else {
		// The session hashed with another algorithm than the client's final
		// digest uses: hash the stored bytes once more.
		br, err := r.blobs.ReadUpload(ctx, u.ID)
		if err != nil {
			return fmt.Errorf("re-reading upload %s: %w", u.ID, err)
		}
		h := newHash(want.Alg)
		_, err = copyBig(h, io.NewSectionReader(br, 0, u.Size))
		br.Close()
		if err != nil {
			return fmt.Errorf("re-hashing upload %s: %w", u.ID, err)
		}
		sum = h.Sum(nil)
	}
	if got := hex.EncodeToString(sum); got != want.Hex {
		return ErrDigestInvalid.With("content digest is %s:%s, not %s", want.Alg, got, want)
	}
	if err := r.rec.reserveBlob(ctx, want, u.Size); err != nil {
		return err
	}
	if err := r.blobs.CommitUpload(ctx, u.ID, u.Size, want); err != nil {
		if errors.Is(err, ErrBlobNotFound) {
			return ErrBlobUploadUnknown.Wrap(err, "")
		}
		return err
	}
	raw, ok := l.hold()
	if !ok {
		return ErrBlobUploadInvalid.With("upload %s was cancelled or taken over while being committed", u.ID)
	}
	return r.rec.linkBlob(ctx, u.Repo, want, u.Size, u.ID, raw)
}
