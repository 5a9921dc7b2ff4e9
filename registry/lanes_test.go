package registry

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/dockyard/dockyard/internal/testwait"
)

// waitFor polls cond until it holds or the deadline passes.
var waitFor = testwait.For

// testLanes returns lanes whose valves do not open during a test unless it
// asks for that.
func testLanes(perClient int) *downloadLanes {
	l := newDownloadLanes(perClient)
	l.stall, l.maxWait = time.Hour, time.Hour
	return l
}

// enterAsync queues a download and reports its turn on the channel.
func enterAsync(l *downloadLanes, ctx context.Context, key string) chan *laneTurn {
	ch := make(chan *laneTurn, 1)
	go func() {
		t, err := l.enter(ctx, key)
		if err != nil {
			t = nil
		}
		ch <- t
	}()
	return ch
}

func admitted(ch chan *laneTurn) (*laneTurn, bool) {
	select {
	case t := <-ch:
		return t, true
	default:
		return nil, false
	}
}

func (l *downloadLanes) waitingFor(key string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	if q := l.clients[key]; q != nil {
		return len(q.waiting)
	}
	return 0
}

// A client's downloads flow perClient at a time, in the order they came;
// another client's are not held back by them; the queues are forgotten once
// empty.
func TestLanesOrderDownloads(t *testing.T) {
	l := testLanes(2)
	ctx := context.Background()
	var turns []*laneTurn
	for range 2 {
		tn, err := l.enter(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		turns = append(turns, tn)
	}
	var waiting []chan *laneTurn
	for i := range 3 {
		waiting = append(waiting, enterAsync(l, ctx, "a"))
		waitFor(t, "download to queue", func() bool { return l.waitingFor("a") == i+1 })
	}
	if other, err := l.enter(ctx, "b"); err != nil {
		t.Fatal(err)
	} else {
		other.done()
	}
	for i, ch := range waiting {
		if _, ok := admitted(ch); ok {
			t.Fatalf("download %d flows while two before it still do", i+3)
		}
	}
	// Each end lets the oldest waiting download flow, and only that one.
	for i, ch := range waiting {
		turns[0].done()
		turns = turns[1:]
		var tn *laneTurn
		waitFor(t, "the next download to flow", func() bool {
			var ok bool
			tn, ok = admitted(ch)
			return ok
		})
		turns = append(turns, tn)
		for j, later := range waiting[i+1:] {
			if _, ok := admitted(later); ok {
				t.Fatalf("download %d flows before download %d's turn", i+j+4, i+3)
			}
		}
	}
	for _, tn := range turns {
		tn.done()
	}
	if len(l.clients) != 0 {
		t.Errorf("%d client queues left after every download ended", len(l.clients))
	}
}

// A waiting download flows anyway when the flowing ones stop moving (a
// client reading its responses in another order must not wait forever) or
// when it has waited laneMaxWait; a flowing download that keeps writing holds
// the next one back until then.
func TestLanesValves(t *testing.T) {
	ctx := context.Background()

	l := testLanes(1)
	l.stall = 20 * time.Millisecond
	first, err := l.enter(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	second, err := l.enter(ctx, "a") // first never writes
	if err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < l.stall {
		t.Errorf("second download flowed after %v, before the first stalled for %v", waited, l.stall)
	}
	first.done()
	second.done()

	l = testLanes(1)
	l.stall, l.maxWait = 50*time.Millisecond, 300*time.Millisecond
	first, err = l.enter(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // a download that keeps moving
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
				first.wrote()
			}
		}
	}()
	start = time.Now()
	second, err = l.enter(ctx, "a")
	waited := time.Since(start)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if waited < l.maxWait {
		t.Errorf("second download flowed after %v while the first kept moving; want it to wait %v", waited, l.maxWait)
	}
	first.done()
	second.done()
	if len(l.clients) != 0 {
		t.Errorf("%d client queues left", len(l.clients))
	}
}

// A client that goes away while its download waits leaves the queue; the
// downloads after it keep their order.
func TestLanesCancelWhileWaiting(t *testing.T) {
	l := testLanes(1)
	first, err := l.enter(context.Background(), "a")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gone := enterAsync(l, ctx, "a")
	waitFor(t, "download to queue", func() bool { return l.waitingFor("a") == 1 })
	next := enterAsync(l, context.Background(), "a")
	waitFor(t, "download to queue", func() bool { return l.waitingFor("a") == 2 })
	cancel()
	if tn := <-gone; tn != nil {
		t.Fatal("a cancelled download got a turn")
	}
	first.done()
	tn := <-next
	if tn == nil {
		t.Fatal("the download after a cancelled one never flowed")
	}
	tn.done()
	if len(l.clients) != 0 {
		t.Errorf("%d client queues left", len(l.clients))
	}
}

func TestClientKey(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1:5000": "127.0.0.1",
		"[::1]:5000":     "::1",
		"10.1.2.3:5000":  "",
		"bogus":          "",
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = addr
		if got := clientKey(r); got != want {
			t.Errorf("clientKey(%q) = %q, want %q", addr, got, want)
		}
	}
}

// gatedStore holds reads of one blob until the gate opens.
type gatedStore struct {
	BlobStore
	blob Digest
	gate chan struct{}
}

type gatedReader struct {
	BlobReader
	gate chan struct{}
}

func (r gatedReader) ReadAt(p []byte, off int64) (int, error) {
	<-r.gate
	return r.BlobReader.ReadAt(p, off)
}

func (s *gatedStore) Open(ctx context.Context, d Digest) (BlobReader, error) {
	br, err := s.BlobStore.Open(ctx, d)
	if err != nil || d != s.blob {
		return br, err
	}
	return gatedReader{BlobReader: br, gate: s.gate}, nil
}

// Through the real handler with one download per client: while the first
// download flows, a second GET gets its status and headers at once and its
// body waits; both bodies are whole.
func TestLocalDownloadsThroughHandler(t *testing.T) {
	local, err := NewLocalBlobStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	store := &gatedStore{BlobStore: local, gate: make(chan struct{})}
	env := &testEnv{t: t, kv: newMemKV(), blobs: store}
	env.start(Config{LocalDownloads: 1})
	lanes := env.reg.lanes
	lanes.stall = time.Hour // this client reads every body it asked for
	big := func(seed byte) []byte {
		b := make([]byte, 3*laneMinSize/2)
		for i := range b {
			b[i] = byte(i*13) + seed
		}
		return b
	}
	b1, b2 := big(1), big(2)
	d1, d2 := env.pushBlob("a/b", b1), env.pushBlob("a/b", b2)
	if store.blob, err = ParseDigest(d1); err != nil {
		t.Fatal(err)
	}
	get := func(d string) *http.Response {
		res, err := env.srv.Client().Get(env.srv.URL + "/v2/a/b/blobs/" + d)
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", d, res.StatusCode)
		}
		return res
	}
	r1 := get(d1) // its body's reads wait at the gate
	defer r1.Body.Close()
	// The headers are sent before the download takes its turn: wait for
	// the turn, or the second GET could take it first and, its body
	// fitting in the socket's buffers, be done before the first one asks.
	waitFor(t, "the first download to flow", func() bool {
		lanes.mu.Lock()
		defer lanes.mu.Unlock()
		q := lanes.clients["127.0.0.1"]
		return q != nil && q.flowing == 1
	})
	r2 := get(d2) // headers arrive although its body must wait
	defer r2.Body.Close()
	if r2.ContentLength != int64(len(b2)) {
		t.Errorf("second GET: Content-Length %d, want %d", r2.ContentLength, len(b2))
	}
	var once sync.Once
	openGate := func() { once.Do(func() { close(store.gate) }) }
	t.Cleanup(openGate) // before the server's cleanup, which waits for the handlers
	waitFor(t, "the second download to queue", func() bool { return lanes.waitingFor("127.0.0.1") == 1 })
	openGate()
	got1, err := io.ReadAll(r1.Body)
	if err != nil || !bytes.Equal(got1, b1) {
		t.Fatalf("first body: %d bytes, %v", len(got1), err)
	}
	got2, err := io.ReadAll(r2.Body)
	if err != nil || !bytes.Equal(got2, b2) {
		t.Fatalf("second body: %d bytes, %v", len(got2), err)
	}
	waitFor(t, "the client's queue to empty", func() bool {
		lanes.mu.Lock()
		defer lanes.mu.Unlock()
		return len(lanes.clients) == 0
	})
}

// By default a local client gets at least minLocalDownloads flowing; a
// negative setting turns ordering off.
func TestLocalDownloadsDefault(t *testing.T) {
	env := newTestEnv(t, Config{})
	if got, want := env.reg.lanes.perClient, max(runtime.NumCPU(), minLocalDownloads); got != want {
		t.Errorf("default downloads per local client %d, want %d", got, want)
	}
	env = newTestEnv(t, Config{LocalDownloads: -1})
	if env.reg.lanes != nil {
		t.Error("LocalDownloads -1 still orders downloads")
	}
}
