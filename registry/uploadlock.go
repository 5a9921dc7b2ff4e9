package registry

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/dockyard/dockyard/metaserver"
)

// uploadLease bounds how long an upload session stays locked by a request
// whose registry died; a live writer renews it every third of that.
const uploadLease = 15 * time.Second

// uploadLock is a write lease on an upload session, held in the session's
// record. Several registries may serve one cluster, and a client may retry a
// request while the first is still running; without the lease two requests
// could write the same bytes of the upload file while only one of them gets
// its hash state recorded, and a blob would be committed whose bytes were
// never hashed. With it, a session has one writer at a time from the first
// byte written to the commit.
type uploadLock struct {
	rec  *records
	mu   sync.Mutex
	u    uploadRecord // the record as locked (Writer, WriterUntil set)
	raw  []byte       // its stored value, for conditions
	lost bool
	stop chan struct{}
	done chan struct{}
}

// lockUpload takes the write lease on session u (stored as raw).
func (s *records) lockUpload(ctx context.Context, u uploadRecord, raw []byte) (*uploadLock, error) {
	now := s.now()
	if u.Writer != "" && now.UnixNano() < u.WriterUntil {
		return nil, ErrBlobUploadInvalid.With("upload %s is being written by another request", u.ID)
	}
	u.Writer = newID()
	u.WriterUntil = now.Add(uploadLease).UnixNano()
	locked := mustJSON(u)
	err := s.kv.KVTxn(ctx, []metaserver.KVCond{is(uploadKey(u.ID), raw)}, []metaserver.KVOp{{Bucket: bucket, Key: uploadKey(u.ID), Value: locked}})
	if errors.Is(err, metaserver.ErrConflict) {
		return nil, ErrBlobUploadInvalid.With("upload %s was changed concurrently", u.ID)
	} else if err != nil {
		return nil, kvErr(err, "locking upload "+u.ID)
	}
	l := &uploadLock{rec: s, u: u, raw: locked, stop: make(chan struct{}), done: make(chan struct{})}
	go l.renew()
	return l, nil
}

func (l *uploadLock) renew() {
	defer close(l.done)
	t := time.NewTicker(uploadLease / 3)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
		l.mu.Lock()
		next := l.u
		next.WriterUntil = l.rec.now().Add(uploadLease).UnixNano()
		nraw := mustJSON(next)
		err := l.rec.kv.KVTxn(context.Background(), []metaserver.KVCond{is(uploadKey(next.ID), l.raw)},
			[]metaserver.KVOp{{Bucket: bucket, Key: uploadKey(next.ID), Value: nraw}})
		if err == nil {
			l.u, l.raw = next, nraw
		} else if errors.Is(err, metaserver.ErrConflict) {
			l.lost = true // cancelled, or taken over after we stalled
		}
		// Other errors (no leader for a moment): try again next tick.
		l.mu.Unlock()
		if l.lost {
			return
		}
	}
}

// hold stops renewing and returns the record as locked, for a final
// transaction conditioned on it; ok is false if the lease was lost.
func (l *uploadLock) hold() (raw []byte, ok bool) {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw, !l.lost
}

// release stores next (unlocked) in place of the locked record, or restores
// the session as it was before the lock when next is nil.
func (l *uploadLock) release(ctx context.Context, next *uploadRecord) error {
	raw, ok := l.hold()
	if !ok {
		return ErrBlobUploadInvalid.With("upload %s was cancelled or taken over while being written", l.u.ID)
	}
	u := l.u
	if next != nil {
		u = *next
	}
	u.Writer, u.WriterUntil = "", 0
	err := l.rec.kv.KVTxn(context.WithoutCancel(ctx), []metaserver.KVCond{is(uploadKey(u.ID), raw)},
		[]metaserver.KVOp{{Bucket: bucket, Key: uploadKey(u.ID), Value: mustJSON(u)}})
	if errors.Is(err, metaserver.ErrConflict) {
		return ErrBlobUploadInvalid.With("upload %s was cancelled or taken over while being written", u.ID)
	}
	return kvErr(err, "saving upload "+u.ID)
}
