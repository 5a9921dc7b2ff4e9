package converter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/dockyard/dockyard/metaserver"
)

// Queue indexes pushed manifests in the background, so the registry's
// manifest PUT returns at once. Its OnManifestPut method has the signature of
// registry.Config.OnManifestPut.
//
// With WithForeground, conversion is background work in the strict sense: a
// job starts only once the registry has served no blob upload or download for
// a quiet second, and a job under way pauses between reads while transfers
// run, up to a bound per job after which it goes on regardless (so a registry
// that is never idle still converts). With WithJournal, every queued image is
// recorded in the metaserver until it is indexed, and Resume queues what a
// stopped registry left undone. A full queue drops work rather than blocking
// a push; a dropped image stays in the journal (when there is one) and is, in
// any case, indexed by `dockyard run` on first use.
type Queue struct {
	ix       *Indexer
	depth    int
	fg       *Foreground
	maxDefer time.Duration
	kv       metaserver.KV
	ctx      context.Context
	stop     context.CancelFunc
	wg       sync.WaitGroup
	now      func() time.Time

	mu      sync.Mutex
	jobs    []queueJob
	wake    chan struct{} // one token: jobs were added
	quit    chan struct{} // closed by Close
	closed  bool
	dropped int64
	failed  int64
	done    int64
	started int64
}

type queueJob struct {
	Repo      string    `json:"repo"`
	Digest    string    `json:"digest"`
	MediaType string    `json:"mediaType"`
	Body      []byte    `json:"body"`
	queued    time.Time // when it entered this process's queue: the yield bound counts from here
}

// QueueStats counts what the queue did. Started counts jobs whose indexing
// began (after any wait for foreground traffic).
type QueueStats struct{ Done, Failed, Dropped, Started int64 }

// QueueOption configures a Queue.
type QueueOption func(*Queue)

// DefaultMaxDefer bounds how long one conversion yields to foreground
// transfers in total: long enough to let a burst of pushes and pulls finish,
// short enough that an image pushed to a busy registry is still mountable in
// minutes.
const DefaultMaxDefer = 2 * time.Minute

// WithForeground makes conversion wait for f to be idle before it starts and
// pause while f has transfers in flight, for at most maxDefer (<= 0:
// DefaultMaxDefer) after the job was queued.
func WithForeground(f *Foreground, maxDefer time.Duration) QueueOption {
	if maxDefer <= 0 {
		maxDefer = DefaultMaxDefer
	}
	return func(q *Queue) { q.fg, q.maxDefer = f, maxDefer }
}

// WithJournal records queued images in kv (bucket JournalBucket) until they
// are indexed, so a restart loses none; call Resume after NewQueue.
func WithJournal(kv metaserver.KV) QueueOption { return func(q *Queue) { q.kv = kv } }

// JournalBucket and journalPrefix name where pending conversions are kept
// in the metaserver's KV: one key per manifest digest.
const (
	JournalBucket = "converter"
	journalPrefix = "pending/"
)

// NewQueue starts workers (<= 0: 2) indexing up to depth (<= 0: 256)
// queued manifests.
func NewQueue(ix *Indexer, workers, depth int, opts ...QueueOption) *Queue {
	if workers <= 0 {
		workers = 2
	}
	if depth <= 0 {
		depth = 256
	}
	ctx, stop := context.WithCancel(context.Background())
	q := &Queue{ix: ix, depth: depth, ctx: ctx, stop: stop, now: time.Now, wake: make(chan struct{}, 1), quit: make(chan struct{})}
	for _, o := range opts {
		o(q)
	}
	for range workers {
		q.wg.Add(1)
		go q.work()
	}
	return q
}

// OnManifestPut queues a pushed manifest for indexing. Manifests that are
// not images (indexes, artifacts) are skipped here: they have nothing to
// index (an index's platform manifests are queued when they are pushed).
func (q *Queue) OnManifestPut(ctx context.Context, repo, dgst, mediaType string, body []byte) {
	if _, err := ParseImageManifest(body, mediaType); err != nil {
		if !errors.Is(err, ErrNotImage) {
			q.ix.opts.Logger.Warn("not indexing a manifest the converter cannot read", "repo", repo, "manifest", dgst, "err", err)
		}
		return
	}
	j := queueJob{Repo: repo, Digest: dgst, MediaType: mediaType, Body: append([]byte(nil), body...)}
	q.mu.Lock()
	closed := q.closed
	if closed {
		q.dropped++
	}
	q.mu.Unlock()
	if closed {
		return
	}
	if q.kv != nil {
		// Recorded before it is queued: once the push has returned, a
		// restart finds the job even if no worker picked it up.
		if err := q.journal(ctx, j); err != nil {
			q.ix.opts.Logger.Warn("recording a pending conversion failed; it is lost if the registry stops before it runs",
				"repo", repo, "manifest", dgst, "err", err)
		}
	}
	if !q.add(j, true) {
		q.ix.opts.Logger.Warn("indexing queue full; image will be indexed after a restart or on first use", "repo", repo, "manifest", dgst)
	}
}

// add queues j; bounded adds fail (and count as dropped) when depth jobs wait.
func (q *Queue) add(j queueJob, bounded bool) bool {
	j.queued = q.now()
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed || (bounded && len(q.jobs) >= q.depth) {
		q.dropped++
		return false
	}
	q.jobs = append(q.jobs, j)
	q.signal()
	return true
}

// signal wakes one idle worker; a token already waiting covers it.
func (q *Queue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func journalKey(d string) string { return journalPrefix + d }

func (q *Queue) journal(ctx context.Context, j queueJob) error {
	v, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return q.kv.KVTxn(ctx, nil, []metaserver.KVOp{{Bucket: JournalBucket, Key: journalKey(j.Digest), Value: v}})
}

// Resume queues every conversion the journal holds: those a stopped
// registry queued and did not finish, or dropped. It returns how many it
// queued. Without a journal it does nothing.
func (q *Queue) Resume(ctx context.Context) (int, error) {
	if q.kv == nil {
		return 0, nil
	}
	pairs, err := q.kv.KVList(ctx, JournalBucket, journalPrefix, "", 0)
	if err != nil {
		return 0, fmt.Errorf("listing pending conversions: %w", err)
	}
	n := 0
	for _, p := range pairs {
		var j queueJob
		if err := json.Unmarshal(p.Value, &j); err != nil || j.Digest != strings.TrimPrefix(p.Key, journalPrefix) {
			// A record nobody can run would be retried on every start.
			q.ix.opts.Logger.Warn("dropping an unreadable pending conversion", "key", p.Key, "err", err)
			q.forget(ctx, strings.TrimPrefix(p.Key, journalPrefix))
			continue
		}
		if q.add(j, false) {
			n++
		}
	}
	return n, nil
}

// forget removes a job from the journal.
func (q *Queue) forget(ctx context.Context, d string) {
	if q.kv == nil {
		return
	}
	err := q.kv.KVTxn(ctx, nil, []metaserver.KVOp{{Bucket: JournalBucket, Key: journalKey(d), Delete: true}})
	if err != nil {
		q.ix.opts.Logger.Warn("removing a finished conversion from the journal failed; it runs again after a restart (harmless)",
			"manifest", d, "err", err)
	}
}

// next blocks for a job; ok is false once the queue is closed and empty.
func (q *Queue) next() (queueJob, bool) {
	for {
		if q.ctx.Err() != nil {
			return queueJob{}, false // Close gave up waiting: leave the rest to the journal
		}
		q.mu.Lock()
		if len(q.jobs) > 0 {
			j := q.jobs[0]
			q.jobs[0] = queueJob{}
			q.jobs = q.jobs[1:]
			if len(q.jobs) > 0 { // let another worker take the next one
				q.signal()
			}
			q.mu.Unlock()
			return j, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return queueJob{}, false
		}
		select {
		case <-q.wake:
		case <-q.quit:
		}
	}
}

func (q *Queue) work() {
	defer q.wg.Done()
	for {
		j, ok := q.next()
		if !ok {
			return
		}
		err := q.run(j)
		if q.ctx.Err() != nil {
			// Cancelled by Close: the job stays in the journal for the
			// next start.
			return
		}
		q.mu.Lock()
		switch {
		case err == nil:
			q.done++
		case errors.Is(err, ErrNotImage):
			// Nothing to index.
		default:
			q.failed++
		}
		q.mu.Unlock()
		if err != nil && !errors.Is(err, ErrNotImage) {
			q.ix.opts.Logger.Error("indexing image failed", "repo", j.Repo, "manifest", j.Digest, "err", err)
		}
		// One that failed on its own would fail again on every start;
		// `dockyard run` still indexes on first use (and says why it cannot).
		q.forget(q.ctx, j.Digest)
	}
}

// run waits for the registry to be idle (when a Foreground is set), then
// indexes j, pausing while transfers run, within j's yield bound.
func (q *Queue) run(j queueJob) error {
	ctx := q.ctx
	if q.fg != nil {
		deadline := j.queued.Add(q.maxDefer)
		if err := q.fg.WaitIdle(ctx, deadline); err != nil {
			return err
		}
		fg := q.fg
		ctx = withYield(ctx, func(ctx context.Context) error { return fg.WaitIdle(ctx, deadline) })
	}
	q.mu.Lock()
	q.started++
	q.mu.Unlock()
	_, err := q.ix.IndexManifest(ctx, j.Repo, j.Body, j.MediaType)
	return err
}

// Stats returns the counters.
func (q *Queue) Stats() QueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return QueueStats{Done: q.done, Failed: q.failed, Dropped: q.dropped, Started: q.started}
}

// Pending returns the jobs waiting for a worker (not those under way).
func (q *Queue) Pending() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.jobs)
}

// Close stops taking work, lets queued jobs finish unless ctx ends first
// (then in-progress indexing is cancelled, and with a journal the unfinished
// jobs stay recorded for Resume), and waits for the workers.
func (q *Queue) Close(ctx context.Context) error {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.quit)
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
