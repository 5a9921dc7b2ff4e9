package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/dockyard/dockyard/metaserver"
)

// GCStats says what one collection removed.
type GCStats struct {
	Uploads    int   // upload sessions idle longer than UploadTTL
	Links      int   // repository links to blobs no manifest of the repository references
	Blobs      int   // blobs no repository links any more
	BytesFreed int64 // size of the removed blobs
}

// The collector runs online, alongside pushes, on any number of registry
// instances at once. It never removes a blob a push is about to reference:
//
//   - A link is removed only if no manifest of its repository references the
//     blob and it was last touched more than GCGrace ago — so a push has
//     GCGrace between uploading a blob and putting its manifest. The removal
//     is conditioned on the link being unchanged; a manifest PUT touches the
//     links it references in its own transaction, so of the two racing
//     transactions exactly one wins.
//   - A blob's bytes are removed only when its record counts no links and was
//     last touched more than GCGrace ago. The collector first marks the
//     record deleting (conditioned on it being unchanged), removes the bytes,
//     then the record. An upload refreshes the record before renaming its
//     bytes into place and waits while a deleting mark is set, so a blob that
//     was just re-uploaded is never removed under it.

// pageSize bounds each KV listing the collector makes. Manifest records
// carry their bodies (up to MaxManifestSize each), so they are listed in
// smaller pages to bound the memory of one listing.
const (
	pageSize         = 500
	manifestPageSize = 32
)

// scan calls fn for every pair under prefix, a page at a time.
func (s *records) scan(ctx context.Context, prefix string, fn func(metaserver.KVPair) error) error {
	page := pageSize
	if prefix == "m/" {
		page = manifestPageSize
	}
	after := ""
	for {
		pairs, err := s.kv.KVList(ctx, bucket, prefix, after, page)
		if err != nil {
			return kvErr(err, "listing "+prefix)
		}
		for _, p := range pairs {
			if err := fn(p); err != nil {
				return err
			}
		}
		if len(pairs) < page {
			return nil
		}
		after = pairs[len(pairs)-1].Key
	}
}

// CollectGarbage runs one collection: stale uploads, unreferenced links,
// then unlinked blobs.
func (r *Registry) CollectGarbage(ctx context.Context) (GCStats, error) {
	var st GCStats
	if err := r.collectUploads(ctx, &st); err != nil {
		return st, err
	}
	if err := r.collectLinks(ctx, &st); err != nil {
		return st, err
	}
	if err := r.collectBlobs(ctx, &st); err != nil {
		return st, err
	}
	return st, nil
}

// RunGC collects garbage every interval until ctx ends. Failures are logged
// and retried at the next round.
func (r *Registry) RunGC(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		st, err := r.CollectGarbage(ctx)
		if err != nil && ctx.Err() == nil {
			r.log.Error("registry garbage collection", "err", err)
			continue
		}
		if st != (GCStats{}) {
			r.log.Info("registry garbage collection", "uploads", st.Uploads, "links", st.Links,
				"blobs", st.Blobs, "bytesFreed", st.BytesFreed)
		}
	}
}

func (r *Registry) older(ts int64, d time.Duration) bool {
	return r.cfg.Now().Sub(time.Unix(0, ts)) > d
}

func (r *Registry) collectUploads(ctx context.Context, st *GCStats) error {
	known := map[string]bool{}
	err := r.rec.scan(ctx, "u/", func(p metaserver.KVPair) error {
		var u uploadRecord
		if err := json.Unmarshal(p.Value, &u); err != nil {
			return fmt.Errorf("decoding %s: %w", p.Key, err)
		}
		known[u.ID] = true
		if !r.older(u.Updated, r.cfg.UploadTTL) {
			return nil
		}
		err := r.rec.kv.KVTxn(ctx, []metaserver.KVCond{is(p.Key, p.Value)}, []metaserver.KVOp{del(p.Key)})
		if errors.Is(err, metaserver.ErrConflict) {
			return nil // written meanwhile: alive
		} else if err != nil {
			return kvErr(err, "deleting upload "+u.ID)
		}
		st.Uploads++
		return r.blobs.DeleteUpload(ctx, u.ID)
	})
	if err != nil {
		return err
	}
	// Files whose record never got written (a crash between the two steps
	// of starting an upload).
	return r.blobs.WalkUploads(ctx, func(id string, mod time.Time) error {
		if known[id] || r.cfg.Now().Sub(mod) <= r.cfg.UploadTTL {
			return nil
		}
		if _, ok, err := r.rec.get(ctx, uploadKey(id), nil); err != nil || ok {
			return err
		}
		st.Uploads++
		return r.blobs.DeleteUpload(ctx, id)
	})
}

func (r *Registry) collectLinks(ctx context.Context, st *GCStats) error {
	// Mark: every blob a manifest references, per repository. A manifest
	// put after this scan touches its links, which fails the sweep's
	// conditional delete below.
	used := map[string]bool{}
	err := r.rec.scan(ctx, "m/", func(p metaserver.KVPair) error {
		repo, _, _ := strings.Cut(strings.TrimPrefix(p.Key, "m/"), "@")
		var m manifestRecord
		if err := json.Unmarshal(p.Value, &m); err != nil {
			return fmt.Errorf("decoding %s: %w", p.Key, err)
		}
		for _, b := range m.Blobs {
			used[repo+"@"+b] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	return r.rec.scan(ctx, "l/", func(p metaserver.KVPair) error {
		k := strings.TrimPrefix(p.Key, "l/")
		if used[k] {
			return nil
		}
		var l linkRecord
		if err := json.Unmarshal(p.Value, &l); err != nil {
			return fmt.Errorf("decoding %s: %w", p.Key, err)
		}
		if !r.older(l.Touched, r.cfg.GCGrace) {
			return nil
		}
		i := strings.LastIndex(k, "@")
		d, err := ParseDigest(k[i+1:])
		if err != nil {
			return fmt.Errorf("bad link key %s: %w", p.Key, err)
		}
		conds, ops, err := r.rec.unlinkTxn(ctx, k[:i], d, p.Value)
		if err != nil {
			return err
		}
		err = r.rec.kv.KVTxn(ctx, conds, ops)
		if errors.Is(err, metaserver.ErrConflict) {
			return nil // touched or changed meanwhile; next round decides
		} else if err != nil {
			return kvErr(err, "removing link "+p.Key)
		}
		st.Links++
		return nil
	})
}

func (r *Registry) collectBlobs(ctx context.Context, st *GCStats) error {
	known := map[Digest]bool{}
	err := r.rec.scan(ctx, "b/", func(p metaserver.KVPair) error {
		d, err := ParseDigest(strings.TrimPrefix(p.Key, "b/"))
		if err != nil {
			return fmt.Errorf("bad blob key %s: %w", p.Key, err)
		}
		known[d] = true
		var b blobRecord
		if err := json.Unmarshal(p.Value, &b); err != nil {
			return fmt.Errorf("decoding %s: %w", p.Key, err)
		}
		switch {
		case b.Links > 0:
			return nil
		case b.Deleting && !r.older(b.Touched, deletingWait):
			return nil // another collector is at it
		case !b.Deleting && !r.older(b.Touched, r.cfg.GCGrace):
			return nil
		}
		b.Deleting = true
		b.Touched = r.cfg.Now().UnixNano()
		marked := mustJSON(b)
		err = r.rec.kv.KVTxn(ctx, []metaserver.KVCond{is(p.Key, p.Value)},
			[]metaserver.KVOp{{Bucket: bucket, Key: p.Key, Value: marked}})
		if errors.Is(err, metaserver.ErrConflict) {
			return nil
		} else if err != nil {
			return kvErr(err, "marking blob "+d.String())
		}
		if err := r.blobs.Delete(ctx, d); err != nil {
			return err
		}
		err = r.rec.kv.KVTxn(ctx, []metaserver.KVCond{is(p.Key, marked)}, []metaserver.KVOp{del(p.Key)})
		if err != nil && !errors.Is(err, metaserver.ErrConflict) {
			return kvErr(err, "removing blob record "+d.String())
		}
		st.Blobs++
		st.BytesFreed += b.Size
		return nil
	})
	if err != nil {
		return err
	}
	// Bytes with no record at all. Uploads write the record before renaming
	// bytes into place, so these were put there behind the registry's back
	// (or by a collector that took over a stale mark). Reclaim them after the
	// grace period, re-checking the record right before.
	return r.blobs.WalkBlobs(ctx, func(d Digest, size int64, mod time.Time) error {
		if known[d] || r.cfg.Now().Sub(mod) <= r.cfg.GCGrace {
			return nil
		}
		if _, ok, err := r.rec.get(ctx, blobKey(d), nil); err != nil || ok {
			return err
		}
		st.Blobs++
		st.BytesFreed += size
		return r.blobs.Delete(ctx, d)
	})
}
