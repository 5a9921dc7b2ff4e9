package converter

import (
	"context"
	"errors"
	"sync"
)

// Queue indexes pushed manifests in the background, so the registry's
// manifest PUT returns at once. Its OnManifestPut method has the signature of
// registry.Config.OnManifestPut. A full queue drops work rather than
// blocking a push: an image that was not indexed is indexed on first use.
type Queue struct {
	ix   *Indexer
	jobs chan queueJob
	wg   sync.WaitGroup
	ctx  context.Context
	stop context.CancelFunc

	mu      sync.Mutex
	closed  bool
	dropped int64
	failed  int64
	done    int64
}

type queueJob struct {
	repo, digest, mediaType string
	body                    []byte
}

// QueueStats counts what the queue did.
type QueueStats struct{ Done, Failed, Dropped int64 }

// NewQueue starts workers (<= 0: 2) indexing up to depth (<= 0: 256)
// queued manifests.
func NewQueue(ix *Indexer, workers, depth int) *Queue {
	if workers <= 0 {
		workers = 2
	}
	if depth <= 0 {
		depth = 256
	}
	ctx, stop := context.WithCancel(context.Background())
	q := &Queue{ix: ix, jobs: make(chan queueJob, depth), ctx: ctx, stop: stop}
	for range workers {
		q.wg.Add(1)
		go q.work()
	}
	return q
}

// OnManifestPut queues a pushed manifest for indexing. Manifests that are
// not images (indexes, artifacts) are skipped by the worker.
func (q *Queue) OnManifestPut(_ context.Context, repo, digest, mediaType string, body []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		q.dropped++
		return
	}
	select {
	case q.jobs <- queueJob{repo, digest, mediaType, append([]byte(nil), body...)}:
	default:
		q.dropped++
		q.ix.opts.Logger.Warn("indexing queue full; image will be indexed on first use", "repo", repo, "manifest", digest)
	}
}

func (q *Queue) work() {
	defer q.wg.Done()
	for j := range q.jobs {
		_, err := q.ix.IndexManifest(q.ctx, j.repo, j.body, j.mediaType)
		q.mu.Lock()
		switch {
		case err == nil:
			q.done++
		case errors.Is(err, ErrNotImage):
			// Indexes and artifacts have nothing to index.
		default:
			q.failed++
		}
		q.mu.Unlock()
		if err != nil && !errors.Is(err, ErrNotImage) {
			q.ix.opts.Logger.Error("indexing image failed", "repo", j.repo, "manifest", j.digest, "err", err)
		}
	}
}

// Stats returns the counters.
func (q *Queue) Stats() QueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return QueueStats{Done: q.done, Failed: q.failed, Dropped: q.dropped}
}

// Close stops taking work, lets queued jobs finish unless ctx ends first
// (then in-progress indexing is cancelled), and waits for the workers.
func (q *Queue) Close(ctx context.Context) error {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.jobs)
	}
	q.mu.Unlock()
	done := make(chan struct{})
	go func() { q.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		q.stop()
		<-done
		return ctx.Err()
	}
}
