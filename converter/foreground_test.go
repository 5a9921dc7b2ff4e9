package converter

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dockyard/dockyard/internal/testwait"
	"github.com/dockyard/dockyard/metaserver"
)

// waitFor polls cond until it holds or the deadline passes.
var waitFor = testwait.Within

func TestForegroundWaitIdle(t *testing.T) {
	ctx := context.Background()
	const quiet = 40 * time.Millisecond
	f := NewForeground(quiet)
	if err := f.WaitIdle(ctx, time.Time{}); err != nil {
		t.Fatalf("no transfer ever: %v", err)
	}

	end := f.Begin()
	returned := make(chan time.Time, 1)
	go func() {
		if err := f.WaitIdle(ctx, time.Time{}); err != nil {
			t.Error(err)
		}
		returned <- time.Now()
	}()
	// While the transfer runs, WaitIdle must not return; give it several
	// quiet periods to get it wrong.
	select {
	case <-returned:
		t.Fatal("WaitIdle returned while a transfer was in flight")
	case <-time.After(4 * quiet):
	}
	ended := time.Now()
	end()
	end() // a second call is harmless
	if n := f.Active(); n != 0 {
		t.Fatalf("active after end: %d", n)
	}
	select {
	case at := <-returned:
		if at.Sub(ended) < quiet {
			t.Errorf("WaitIdle returned %v after the transfer ended, before the quiet period of %v", at.Sub(ended), quiet)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitIdle did not return after the transfer ended")
	}

	// A registry that is never idle: the deadline still lets work through.
	end = f.Begin()
	defer end()
	start := time.Now()
	if err := f.WaitIdle(ctx, start.Add(quiet)); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < quiet || d > 5*time.Second {
		t.Errorf("WaitIdle with a deadline %v ahead returned after %v", quiet, d)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := f.WaitIdle(cctx, time.Time{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled wait: %v", err)
	}
}

// gatedStore is a memStore whose blob reads call before(): tests use it to
// hold indexing in the middle of a layer and to timestamp reads.
type gatedStore struct {
	*memStore
	before func()
}

type gatedBlob struct {
	Blob
	before func()
}

func (g gatedBlob) ReadAt(p []byte, off int64) (int, error) {
	g.before()
	return g.Blob.ReadAt(p, off)
}

func (s gatedStore) OpenBlob(ctx context.Context, d digest.Digest) (Blob, error) {
	b, err := s.memStore.OpenBlob(ctx, d)
	if err != nil {
		return b, err
	}
	b.ReaderAt = gatedBlob{Blob: b, before: s.before}
	return b, nil
}

// bigLayer is a gzip layer of n random bytes in one file: many 256 KiB reads
// for the indexer.
func bigLayer(t *testing.T, n int) []byte {
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	return gzipBytes(t, buildTar(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "big", Mode: 0o644}, data: data}}), 0)
}

// A conversion queued while a pull is in flight starts only after the pull
// ends and the quiet period passes, and then completes.
func TestQueueWaitsForTransfers(t *testing.T) {
	const quiet = 50 * time.Millisecond
	var reads atomic.Int64
	var firstRead atomic.Int64 // unix nanos
	s := gatedStore{memStore: newMemStore(), before: func() {
		firstRead.CompareAndSwap(0, time.Now().UnixNano())
		reads.Add(1)
	}}
	m := manifestFor(t, s.memStore, []byte(`{"os":"linux","architecture":"amd64"}`), bigLayer(t, 1<<20))
	fg := NewForeground(quiet)
	q := NewQueue(NewIndexer(s, IndexerOptions{Logger: quietLog}), 1, 8, WithForeground(fg, time.Minute))
	defer q.Close(context.Background())

	endPull := fg.Begin()
	q.OnManifestPut(context.Background(), "r", digest.FromBytes(m).String(), ocispec.MediaTypeImageManifest, m)
	// The pull goes on for a while; nothing of the layer may be read.
	time.Sleep(5 * quiet)
	if st := q.Stats(); st.Started != 0 || reads.Load() != 0 {
		t.Fatalf("conversion ran during the pull: %+v, %d blob reads", st, reads.Load())
	}
	ended := time.Now()
	endPull()
	waitFor(t, 10*time.Second, "the conversion to complete", func() bool { return q.Stats().Done == 1 })
	if at := time.Unix(0, firstRead.Load()); at.Sub(ended) < quiet {
		t.Errorf("conversion read the layer %v after the pull ended, within the quiet period %v", at.Sub(ended), quiet)
	}
	if ok, _ := s.HasImageTree(context.Background(), digest.FromBytes(m)); !ok {
		t.Error("image tree not created")
	}
}

// A transfer that starts while a layer is being indexed pauses the indexing
// at its next read until the transfer is over.
func TestQueuePausesMidLayer(t *testing.T) {
	const quiet = 20 * time.Millisecond
	entered := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	var mu sync.Mutex
	var readTimes []time.Time
	s := gatedStore{memStore: newMemStore(), before: func() {
		mu.Lock()
		readTimes = append(readTimes, time.Now())
		mu.Unlock()
		once.Do(func() { close(entered); <-release })
	}}
	m := manifestFor(t, s.memStore, []byte(`{"os":"linux","architecture":"amd64"}`), bigLayer(t, 2<<20))
	fg := NewForeground(quiet)
	q := NewQueue(NewIndexer(s, IndexerOptions{Logger: quietLog}), 1, 8, WithForeground(fg, time.Minute))
	defer q.Close(context.Background())
	q.OnManifestPut(context.Background(), "r", digest.FromBytes(m).String(), ocispec.MediaTypeImageManifest, m)

	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("indexing never read the layer")
	}
	endPull := fg.Begin()
	close(release)
	time.Sleep(10 * quiet)
	mu.Lock()
	during := len(readTimes)
	mu.Unlock()
	if during != 1 {
		t.Fatalf("%d blob reads while a transfer ran, want only the one already under way", during)
	}
	ended := time.Now()
	endPull()
	waitFor(t, 10*time.Second, "the conversion to complete", func() bool { return q.Stats().Done == 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(readTimes) < 4 {
		t.Fatalf("only %d reads of a 2 MiB layer; the test no longer pauses mid-layer", len(readTimes))
	}
	if readTimes[1].Sub(ended) < quiet {
		t.Errorf("indexing resumed %v after the transfer ended, within the quiet period %v", readTimes[1].Sub(ended), quiet)
	}
}

// A registry that never stops transferring still converts, after maxDefer.
func TestQueueMaxDefer(t *testing.T) {
	s := newMemStore()
	m := manifestFor(t, s, []byte(`{"os":"linux","architecture":"amd64"}`), bigLayer(t, 512<<10))
	fg := NewForeground(time.Hour)
	defer fg.Begin()()
	const maxDefer = 100 * time.Millisecond
	q := NewQueue(NewIndexer(s, IndexerOptions{Logger: quietLog}), 1, 8, WithForeground(fg, maxDefer))
	defer q.Close(context.Background())
	queued := time.Now()
	q.OnManifestPut(context.Background(), "r", digest.FromBytes(m).String(), ocispec.MediaTypeImageManifest, m)
	waitFor(t, 10*time.Second, "the conversion to complete despite traffic", func() bool { return q.Stats().Done == 1 })
	if d := time.Since(queued); d < maxDefer {
		t.Errorf("converted after %v, before maxDefer %v while a transfer ran", d, maxDefer)
	}
}

// memKV is an in-memory metaserver.KV: puts, deletes and prefix listing,
// which is what the journal uses.
type memKV struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (k *memKV) KVGet(_ context.Context, bucket, key string) ([]byte, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[bucket+"\x00"+key]
	return v, ok, nil
}

func (k *memKV) KVList(_ context.Context, bucket, prefix, after string, limit int) ([]metaserver.KVPair, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	var out []metaserver.KVPair
	for bk, v := range k.m {
		b, key, _ := strings.Cut(bk, "\x00")
		if b == bucket && strings.HasPrefix(key, prefix) && key > after {
			out = append(out, metaserver.KVPair{Key: key, Value: v})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (k *memKV) KVTxn(_ context.Context, conds []metaserver.KVCond, ops []metaserver.KVOp) error {
	if len(conds) > 0 {
		return errors.New("memKV: conditions not supported")
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, op := range ops {
		if op.Delete {
			delete(k.m, op.Bucket+"\x00"+op.Key)
		} else {
			k.m[op.Bucket+"\x00"+op.Key] = op.Value
		}
	}
	return nil
}

func (k *memKV) len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.m)
}

// A registry stopped with a conversion pending (here: held back by a pull)
// leaves it in the journal; the next registry resumes and finishes it.
func TestQueueJournalSurvivesRestart(t *testing.T) {
	kv := &memKV{m: map[string][]byte{}}
	s := newMemStore()
	m := manifestFor(t, s, []byte(`{"os":"linux","architecture":"amd64"}`), bigLayer(t, 256<<10))
	md := digest.FromBytes(m)

	fg := NewForeground(time.Hour)
	endPull := fg.Begin()
	q := NewQueue(NewIndexer(s, IndexerOptions{Logger: quietLog}), 1, 8, WithForeground(fg, time.Hour), WithJournal(kv))
	q.OnManifestPut(context.Background(), "r", md.String(), ocispec.MediaTypeImageManifest, m)
	q.OnManifestPut(context.Background(), "r", "sha256:idx", ocispec.MediaTypeImageIndex, []byte(`{"schemaVersion":2,"manifests":[]}`))
	if n := kv.len(); n != 1 {
		t.Fatalf("journal holds %d records after one image and one index, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := q.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("close with a conversion held back: %v", err)
	}
	endPull()
	if st := q.Stats(); st.Done != 0 || st.Failed != 0 {
		t.Fatalf("stopped queue: %+v", st)
	}
	if n := kv.len(); n != 1 {
		t.Fatalf("journal lost the pending conversion on stop: %d records", n)
	}

	q2 := NewQueue(NewIndexer(s, IndexerOptions{Logger: quietLog}), 1, 8, WithJournal(kv))
	n, err := q2.Resume(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("Resume = %d, %v; want 1", n, err)
	}
	if err := q2.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := q2.Stats(); st.Done != 1 {
		t.Fatalf("resumed queue: %+v", st)
	}
	if ok, _ := s.HasImageTree(context.Background(), md); !ok {
		t.Error("image tree not created after resume")
	}
	if n := kv.len(); n != 0 {
		t.Errorf("journal keeps %d records after the conversion finished", n)
	}
}

// A journal record nobody can run (damaged, or filed under another digest)
// is dropped at Resume instead of failing the start or being retried at
// every start; the readable records next to it still run.
func TestQueueResumeDropsUnreadableRecords(t *testing.T) {
	kv := &memKV{m: map[string][]byte{}}
	s := newMemStore()
	m := manifestFor(t, s, []byte(`{"os":"linux","architecture":"amd64"}`), bigLayer(t, 64<<10))
	md := digest.FromBytes(m)
	good, err := json.Marshal(queueJob{Repo: "r", Digest: md.String(), MediaType: ocispec.MediaTypeImageManifest, Body: m})
	if err != nil {
		t.Fatal(err)
	}
	put := func(key string, v []byte) {
		if err := kv.KVTxn(context.Background(), nil, []metaserver.KVOp{{Bucket: JournalBucket, Key: key, Value: v}}); err != nil {
			t.Fatal(err)
		}
	}
	put(journalKey(md.String()), good)
	put(journalKey("sha256:broken"), []byte("{not json"))
	put(journalKey("sha256:elsewhere"), good) // a record filed under another digest

	q := NewQueue(NewIndexer(s, IndexerOptions{Logger: quietLog}), 1, 8, WithJournal(kv))
	n, err := q.Resume(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("Resume = %d, %v; want the one readable record queued", n, err)
	}
	if err := q.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := q.Stats(); st.Done != 1 {
		t.Fatalf("queue after resume: %+v, want the readable record converted", st)
	}
	if n := kv.len(); n != 0 {
		t.Errorf("journal keeps %d records; the unreadable ones should be dropped and the finished one removed", n)
	}
}
