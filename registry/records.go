package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dockyard/dockyard/metaserver"
)

// bucket is the KV namespace of all registry records.
const bucket = "registry"

// Key layout. '@' separates parts because it occurs in no repository name,
// tag or digest, so a prefix scan of one repository never matches another
// whose name merely starts the same way.
//
//	r/<repo>                    repository (for _catalog)
//	l/<repo>@<digest>           blob link: the repository may use the blob
//	b/<digest>                  global blob record: link count, last touch, deleting mark
//	m/<repo>@<digest>           manifest with its body
//	t/<repo>@<tag>              tag -> digest
//	f/<repo>@<subject>@<digest> referrer descriptor
//	u/<id>                      upload session with its hash state
func repoKey(repo string) string               { return "r/" + repo }
func linkKey(repo string, d Digest) string     { return "l/" + repo + "@" + d.String() }
func blobKey(d Digest) string                  { return "b/" + d.String() }
func manifestKey(repo string, d Digest) string { return "m/" + repo + "@" + d.String() }
func tagKey(repo, tag string) string           { return "t/" + repo + "@" + tag }
func referrerKey(repo string, subject, d Digest) string {
	return "f/" + repo + "@" + subject.String() + "@" + d.String()
}
func uploadKey(id string) string { return "u/" + id }

// linkRecord grants a repository access to a blob. Touched changes on every
// manifest PUT that references the blob, so a garbage collector that decided
// the link was unused fails its conditional delete.
type linkRecord struct {
	Size    int64 `json:"size"`
	Touched int64 `json:"touched"` // unix nanos
}

// blobRecord counts a blob's links. Touched is refreshed before an upload is
// renamed into place, so the collector leaves a blob alone for the grace
// period after anyone last showed interest in it. Deleting is set by the
// collector before it removes the file; writers wait for it to clear.
type blobRecord struct {
	Size     int64 `json:"size"`
	Links    int   `json:"links"`
	Touched  int64 `json:"touched"`
	Deleting bool  `json:"deleting,omitempty"`
}

// manifestRecord is a stored manifest.
type manifestRecord struct {
	MediaType string `json:"mediaType"`
	Body      []byte `json:"body"`
	// Blobs are the blob digests the manifest references (config, layers),
	// kept parsed for the garbage collector.
	Blobs   []string `json:"blobs,omitempty"`
	Subject string   `json:"subject,omitempty"`
	Created int64    `json:"created"`
}

// uploadRecord is an upload session: how many bytes are stored and the
// marshalled hash state after them, so any registry instance can continue it.
type uploadRecord struct {
	ID      string `json:"id"`
	Repo    string `json:"repo"`
	Size    int64  `json:"size"`
	Alg     string `json:"alg"`
	State   []byte `json:"state,omitempty"`
	Started int64  `json:"started"`
	Updated int64  `json:"updated"`
	// Writer and WriterUntil are the write lease (see uploadLock).
	Writer      string `json:"writer,omitempty"`
	WriterUntil int64  `json:"writerUntil,omitempty"`
}

// Descriptor is an OCI content descriptor, as listed by the referrers API.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// records is the registry's record layer over a metaserver.KV. Every change
// that must be consistent with another is one KVTxn with conditions.
//
// It is a concrete type, not a second interface: its correctness (the
// collector's races, the upload lease, link counting) rests entirely on
// conditional transactions, so the seam worth abstracting is the small
// transactional KV beneath it, which the metaserver client, its in-process
// node and the tests' in-memory map all implement.
type records struct {
	kv  metaserver.KV
	now func() time.Time
}

func kvErr(err error, what string) error {
	if err == nil {
		return nil
	}
	var nl *metaserver.ErrNotLeader
	if errors.As(err, &nl) {
		return fmt.Errorf("%s: %w: %w", what, ErrStoreUnavailable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (s *records) get(ctx context.Context, key string, v any) ([]byte, bool, error) {
	b, ok, err := s.kv.KVGet(ctx, bucket, key)
	if err != nil || !ok {
		return nil, ok, kvErr(err, "reading "+key)
	}
	if v != nil {
		if err := json.Unmarshal(b, v); err != nil {
			return nil, false, fmt.Errorf("decoding %s: %w", key, err)
		}
	}
	return b, true, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("encoding record: %v", err)) // only plain structs are encoded
	}
	return b
}

func put(key string, v any) metaserver.KVOp {
	return metaserver.KVOp{Bucket: bucket, Key: key, Value: mustJSON(v)}
}

func del(key string) metaserver.KVOp { return metaserver.KVOp{Bucket: bucket, Key: key, Delete: true} }

// is conditions a transaction on key holding exactly old (or being absent
// when old is nil).
func is(key string, old []byte) metaserver.KVCond {
	if old == nil {
		return metaserver.KVCond{Bucket: bucket, Key: key, Exists: false}
	}
	return metaserver.KVCond{Bucket: bucket, Key: key, Exists: true, Value: old}
}

// retryTxn runs build+KVTxn until it commits without a condition conflict.
// build reads the current state and returns the transaction; it may return
// an error to stop.
func (s *records) retryTxn(ctx context.Context, what string, build func() ([]metaserver.KVCond, []metaserver.KVOp, error)) error {
	for attempt := 0; ; attempt++ {
		conds, ops, err := build()
		if err != nil {
			return err
		}
		if len(ops) == 0 {
			return nil
		}
		err = s.kv.KVTxn(ctx, conds, ops)
		if err == nil {
			return nil
		}
		if !errors.Is(err, metaserver.ErrConflict) || attempt >= 50 {
			return kvErr(err, what)
		}
		if err := sleepCtx(ctx, time.Duration(attempt+1)*5*time.Millisecond); err != nil {
			return err
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// deletingWait bounds how long a writer waits for a collector's deleting mark;
// a mark older than this is from a collector that died and is taken over.
const deletingWait = 30 * time.Second

// reserveBlob refreshes the global blob record before an upload is renamed
// into place, so the collector cannot remove the file in the window between
// the rename and the link. If the collector is deleting the blob right now,
// it waits for that to finish (or takes over a stale mark).
func (s *records) reserveBlob(ctx context.Context, d Digest, size int64) error {
	deadline := time.Now().Add(deletingWait)
	return s.retryTxn(ctx, "reserving blob "+d.String(), func() ([]metaserver.KVCond, []metaserver.KVOp, error) {
		for {
			var rec blobRecord
			old, _, err := s.get(ctx, blobKey(d), &rec)
			if err != nil {
				return nil, nil, err
			}
			if rec.Deleting && time.Now().Before(deadline) && s.now().Sub(time.Unix(0, rec.Touched)) < deletingWait {
				if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
					return nil, nil, err
				}
				continue
			}
			rec.Deleting = false
			rec.Size = size
			rec.Touched = s.now().UnixNano()
			return []metaserver.KVCond{is(blobKey(d), old)}, []metaserver.KVOp{put(blobKey(d), rec)}, nil
		}
	})
}

// linkBlob gives repo access to blob d (already in the store), counting the
// link in the blob record, registering the repository and, when uploadID is
// set, ending that upload session, which must still hold uploadRaw (the
// committing request's lease) — all in one transaction.
func (s *records) linkBlob(ctx context.Context, repo string, d Digest, size int64, uploadID string, uploadRaw []byte) error {
	return s.retryTxn(ctx, "linking blob "+d.String(), func() ([]metaserver.KVCond, []metaserver.KVOp, error) {
		var brec blobRecord
		bold, _, err := s.get(ctx, blobKey(d), &brec)
		if err != nil {
			return nil, nil, err
		}
		if brec.Deleting {
			return nil, nil, ErrBlobUnknown.With("blob %s is being garbage collected", d)
		}
		lold, _, err := s.get(ctx, linkKey(repo, d), nil)
		if err != nil {
			return nil, nil, err
		}
		now := s.now().UnixNano()
		if lold == nil {
			brec.Links++
		}
		brec.Size, brec.Touched = size, now
		conds := []metaserver.KVCond{is(blobKey(d), bold), is(linkKey(repo, d), lold)}
		ops := []metaserver.KVOp{
			put(blobKey(d), brec),
			put(linkKey(repo, d), linkRecord{Size: size, Touched: now}),
		}
		if ok, err := s.repoExists(ctx, repo); err != nil {
			return nil, nil, err
		} else if !ok {
			ops = append(ops, put(repoKey(repo), struct {
				Created int64 `json:"created"`
			}{now}))
		}
		if uploadID != "" {
			cur, _, err := s.get(ctx, uploadKey(uploadID), nil)
			if err != nil {
				return nil, nil, err
			}
			if !bytes.Equal(cur, uploadRaw) {
				return nil, nil, ErrBlobUploadInvalid.With("upload %s was cancelled or taken over while being committed", uploadID)
			}
			conds = append(conds, is(uploadKey(uploadID), uploadRaw))
			ops = append(ops, del(uploadKey(uploadID)))
		}
		return conds, ops, nil
	})
}

// unlinkBlob removes repo's access to d. The bytes stay until the collector
// finds the blob without links.
func (s *records) unlinkBlob(ctx context.Context, repo string, d Digest) error {
	return s.retryTxn(ctx, "unlinking blob "+d.String(), func() ([]metaserver.KVCond, []metaserver.KVOp, error) {
		lold, ok, err := s.get(ctx, linkKey(repo, d), nil)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			return nil, nil, ErrBlobUnknown.With("%s in %s", d, repo)
		}
		return s.unlinkTxn(ctx, repo, d, lold)
	})
}

// unlinkTxn builds the transaction removing link (repo, d) provided it still
// holds lold.
func (s *records) unlinkTxn(ctx context.Context, repo string, d Digest, lold []byte) ([]metaserver.KVCond, []metaserver.KVOp, error) {
	var brec blobRecord
	bold, _, err := s.get(ctx, blobKey(d), &brec)
	if err != nil {
		return nil, nil, err
	}
	conds := []metaserver.KVCond{is(linkKey(repo, d), lold), is(blobKey(d), bold)}
	ops := []metaserver.KVOp{del(linkKey(repo, d))}
	if bold != nil {
		if brec.Links > 0 {
			brec.Links--
		}
		ops = append(ops, put(blobKey(d), brec))
	}
	return conds, ops, nil
}

// link returns repo's link to d, or BLOB_UNKNOWN.
func (s *records) link(ctx context.Context, repo string, d Digest) (linkRecord, []byte, error) {
	var l linkRecord
	raw, ok, err := s.get(ctx, linkKey(repo, d), &l)
	if err != nil {
		return l, nil, err
	}
	if !ok {
		return l, nil, ErrBlobUnknown.With("%s in %s", d, repo)
	}
	return l, raw, nil
}

// blob returns the global record of d; ok is false when no repository has
// ever linked it (or it was collected).
func (s *records) blob(ctx context.Context, d Digest) (blobRecord, bool, error) {
	var b blobRecord
	_, ok, err := s.get(ctx, blobKey(d), &b)
	return b, ok, err
}

func (s *records) repoExists(ctx context.Context, repo string) (bool, error) {
	_, ok, err := s.get(ctx, repoKey(repo), nil)
	return ok, err
}

// manifest returns a stored manifest or MANIFEST_UNKNOWN.
func (s *records) manifest(ctx context.Context, repo string, d Digest) (manifestRecord, error) {
	var m manifestRecord
	_, ok, err := s.get(ctx, manifestKey(repo, d), &m)
	if err != nil {
		return m, err
	}
	if !ok {
		return m, ErrManifestUnknown.With("%s in %s", d, repo)
	}
	return m, nil
}

// tag resolves a tag or returns MANIFEST_UNKNOWN.
func (s *records) tag(ctx context.Context, repo, tag string) (Digest, error) {
	b, ok, err := s.get(ctx, tagKey(repo, tag), nil)
	if err != nil {
		return Digest{}, err
	}
	if !ok {
		return Digest{}, ErrManifestUnknown.With("tag %q in %s", tag, repo)
	}
	var ds string
	if err := json.Unmarshal(b, &ds); err != nil {
		return Digest{}, fmt.Errorf("decoding tag %s: %w", tag, err)
	}
	return ParseDigest(ds)
}

// manifestPut is everything a manifest PUT stores.
type manifestPut struct {
	repo     string
	digest   Digest
	rec      manifestRecord
	tags     []string
	children []Digest // manifests an index references; must exist in repo
	referrer *Descriptor
	subject  Digest
}

// putManifest stores a manifest, its tags and its referrer entry in one
// transaction. Every referenced blob link is required to exist unchanged and
// is touched, and every referenced child manifest must exist; so a collector
// that concurrently decided a link was unused fails its conditional delete,
// and this PUT fails (then reports MANIFEST_BLOB_UNKNOWN) if the collector
// won the race.
func (s *records) putManifest(ctx context.Context, p manifestPut) error {
	return s.retryTxn(ctx, "storing manifest "+p.digest.String(), func() ([]metaserver.KVCond, []metaserver.KVOp, error) {
		now := s.now().UnixNano()
		var conds []metaserver.KVCond
		var ops []metaserver.KVOp
		seen := map[string]bool{}
		for _, bs := range p.rec.Blobs {
			if seen[bs] {
				continue
			}
			seen[bs] = true
			d, err := ParseDigest(bs)
			if err != nil {
				return nil, nil, ErrManifestInvalid.Wrap(err, "")
			}
			l, raw, err := s.link(ctx, p.repo, d)
			if errors.Is(err, ErrBlobUnknown.E()) {
				return nil, nil, ErrManifestBlobUnknown.With("blob %s", d)
			} else if err != nil {
				return nil, nil, err
			}
			conds = append(conds, is(linkKey(p.repo, d), raw))
			l.Touched = now
			ops = append(ops, put(linkKey(p.repo, d), l))
		}
		for _, c := range p.children {
			if c == p.digest {
				return nil, nil, ErrManifestInvalid.With("index references itself")
			}
			raw, ok, err := s.get(ctx, manifestKey(p.repo, c), nil)
			if err != nil {
				return nil, nil, err
			}
			if !ok {
				return nil, nil, ErrManifestBlobUnknown.With("manifest %s", c)
			}
			conds = append(conds, is(manifestKey(p.repo, c), raw))
		}
		rec := p.rec
		rec.Created = now
		mold, exists, err := s.get(ctx, manifestKey(p.repo, p.digest), nil)
		if err != nil {
			return nil, nil, err
		}
		if exists {
			// Same digest, same bytes: keep the first record so its creation
			// time stays, but still apply the tags.
			conds = append(conds, is(manifestKey(p.repo, p.digest), mold))
		} else {
			conds = append(conds, is(manifestKey(p.repo, p.digest), nil))
			ops = append(ops, put(manifestKey(p.repo, p.digest), rec))
		}
		for _, t := range p.tags {
			ops = append(ops, put(tagKey(p.repo, t), p.digest.String()))
		}
		if p.referrer != nil {
			ops = append(ops, put(referrerKey(p.repo, p.subject, p.digest), p.referrer))
		}
		if ok, err := s.repoExists(ctx, p.repo); err != nil {
			return nil, nil, err
		} else if !ok {
			ops = append(ops, put(repoKey(p.repo), struct {
				Created int64 `json:"created"`
			}{now}))
		}
		return conds, ops, nil
	})
}

// deleteManifest removes a manifest, every tag pointing at it and its
// referrer entry.
func (s *records) deleteManifest(ctx context.Context, repo string, d Digest) error {
	return s.retryTxn(ctx, "deleting manifest "+d.String(), func() ([]metaserver.KVCond, []metaserver.KVOp, error) {
		var m manifestRecord
		raw, ok, err := s.get(ctx, manifestKey(repo, d), &m)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			return nil, nil, ErrManifestUnknown.With("%s in %s", d, repo)
		}
		conds := []metaserver.KVCond{is(manifestKey(repo, d), raw)}
		ops := []metaserver.KVOp{del(manifestKey(repo, d))}
		tags, err := s.kv.KVList(ctx, bucket, tagKey(repo, ""), "", 0)
		if err != nil {
			return nil, nil, kvErr(err, "listing tags")
		}
		for _, t := range tags {
			var ds string
			if json.Unmarshal(t.Value, &ds) == nil && ds == d.String() {
				conds = append(conds, is(t.Key, t.Value))
				ops = append(ops, del(t.Key))
			}
		}
		if m.Subject != "" {
			if sd, err := ParseDigest(m.Subject); err == nil {
				ops = append(ops, del(referrerKey(repo, sd, d)))
			}
		}
		return conds, ops, nil
	})
}

// deleteTag removes one tag (the manifest stays).
func (s *records) deleteTag(ctx context.Context, repo, tag string) error {
	return s.retryTxn(ctx, "deleting tag "+tag, func() ([]metaserver.KVCond, []metaserver.KVOp, error) {
		raw, ok, err := s.get(ctx, tagKey(repo, tag), nil)
		if err != nil {
			return nil, nil, err
		}
		if !ok {
			return nil, nil, ErrManifestUnknown.With("tag %q in %s", tag, repo)
		}
		return []metaserver.KVCond{is(tagKey(repo, tag), raw)}, []metaserver.KVOp{del(tagKey(repo, tag))}, nil
	})
}

// listSuffixes lists the key suffixes under prefix, sorted, strictly after
// last, at most n (n < 0: all). more reports whether more exist.
func (s *records) listSuffixes(ctx context.Context, prefix, last string, n int) (names []string, more bool, err error) {
	after := ""
	if last != "" {
		after = prefix + last
	}
	limit := 0
	if n >= 0 {
		limit = n + 1
	}
	if n == 0 {
		return nil, false, nil
	}
	pairs, err := s.kv.KVList(ctx, bucket, prefix, after, limit)
	if err != nil {
		return nil, false, kvErr(err, "listing "+prefix)
	}
	for _, p := range pairs {
		names = append(names, strings.TrimPrefix(p.Key, prefix))
	}
	if n > 0 && len(names) > n {
		return names[:n], true, nil
	}
	return names, false, nil
}

// referrers lists the descriptors of manifests whose subject is subject.
func (s *records) referrers(ctx context.Context, repo string, subject Digest) ([]Descriptor, error) {
	prefix := "f/" + repo + "@" + subject.String() + "@"
	pairs, err := s.kv.KVList(ctx, bucket, prefix, "", 0)
	if err != nil {
		return nil, kvErr(err, "listing referrers")
	}
	out := make([]Descriptor, 0, len(pairs))
	for _, p := range pairs {
		var d Descriptor
		if err := json.Unmarshal(p.Value, &d); err != nil {
			return nil, fmt.Errorf("decoding referrer %s: %w", p.Key, err)
		}
		out = append(out, d)
	}
	return out, nil
}

// createUpload records a new upload session.
func (s *records) createUpload(ctx context.Context, u uploadRecord) error {
	err := s.kv.KVTxn(ctx, []metaserver.KVCond{is(uploadKey(u.ID), nil)}, []metaserver.KVOp{put(uploadKey(u.ID), u)})
	return kvErr(err, "creating upload "+u.ID)
}

// upload returns an upload session (with its raw value for a later
// conditional update) or BLOB_UPLOAD_UNKNOWN.
func (s *records) upload(ctx context.Context, repo, id string) (uploadRecord, []byte, error) {
	var u uploadRecord
	raw, ok, err := s.get(ctx, uploadKey(id), &u)
	if err != nil {
		return u, nil, err
	}
	if !ok || u.Repo != repo {
		return u, nil, ErrBlobUploadUnknown.With("upload %s in %s", id, repo)
	}
	return u, raw, nil
}

func (s *records) deleteUpload(ctx context.Context, id string) error {
	return kvErr(s.kv.KVTxn(ctx, nil, []metaserver.KVOp{del(uploadKey(id))}), "deleting upload "+id)
}
