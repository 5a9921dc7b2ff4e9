package metaserver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// fakeServer answers from a script of replies and records the request ids it
// saw.
type fakeServer struct {
	*httptest.Server
	mu      sync.Mutex
	ids     []string
	replies []func(w http.ResponseWriter)
}

func newFake(t *testing.T) *fakeServer {
	f := &fakeServer{}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == StreamPath {
			http.NotFound(w, r) // a server without the stream: the client falls back to plain requests
			return
		}
		f.mu.Lock()
		f.ids = append(f.ids, r.Header.Get(RequestIDHeader))
		var reply func(http.ResponseWriter)
		if len(f.replies) > 0 {
			reply, f.replies = f.replies[0], f.replies[1:]
		}
		f.mu.Unlock()
		if reply == nil {
			t.Errorf("unexpected request %s", r.URL.Path)
			w.WriteHeader(http.StatusTeapot)
			return
		}
		reply(w)
	}))
	t.Cleanup(f.Close)
	return f
}

func wireErr(status int, we WireError) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": we})
	}
}

func ok(v any) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) { _ = json.NewEncoder(w).Encode(v) }
}

func TestClientFollowsLeaderAndKeepsRequestID(t *testing.T) {
	leader := newFake(t)
	follower := newFake(t)
	host := strings.TrimPrefix(leader.URL, "http://")
	follower.replies = append(follower.replies,
		wireErr(503, WireError{Kind: KindUnavailable, Msg: "electing"}),
		wireErr(421, WireError{Kind: KindNotLeader, Leader: host}),
	)
	leader.replies = append(leader.replies, ok(Attr{Ino: 7}), ok(Attr{Ino: 8}))
	c, err := NewClient([]string{follower.URL}, WithRetryTimeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.Create(context.Background(), CreateIn{Parent: 1, Name: "x"})
	if err != nil || a.Ino != 7 {
		t.Fatalf("create = %+v, %v", a, err)
	}
	ids := append(append([]string{}, follower.ids...), leader.ids...)
	if len(ids) != 3 || ids[0] == "" || ids[0] != ids[1] || ids[1] != ids[2] {
		t.Fatalf("request ids across retries: %q", ids)
	}
	// The next call goes straight to the leader, with a new id; reads carry none.
	if _, err := c.Create(context.Background(), CreateIn{Parent: 1, Name: "y"}); err != nil {
		t.Fatal(err)
	}
	if got := leader.ids[1]; got == "" || got == ids[0] {
		t.Fatalf("second mutation id %q (first %q)", got, ids[0])
	}
	leader.replies = append(leader.replies, ok(Attr{Ino: 1}))
	if _, err := c.GetAttr(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if leader.ids[2] != "" {
		t.Fatalf("a read carried request id %q", leader.ids[2])
	}
}

func TestClientErrorsAreTyped(t *testing.T) {
	s := newFake(t)
	s.replies = append(s.replies,
		wireErr(404, WireError{Kind: KindErrno, Op: "lookup", Errno: syscall.ENOENT, Msg: `"x"`}),
		wireErr(409, WireError{Kind: KindConflict, Msg: "b/k"}),
		wireErr(507, WireError{Kind: KindNoSpace, Msg: "need 6"}),
	)
	c, _ := NewClient([]string{s.URL})
	_, err := c.Lookup(context.Background(), 1, "x")
	var e *Error
	if !errors.Is(err, syscall.ENOENT) || !errors.As(err, &e) || e.Op != "lookup" {
		t.Fatalf("errno error: %v", err)
	}
	if err := c.KVTxn(context.Background(), nil, nil); !errors.Is(err, ErrConflict) {
		t.Fatalf("conflict: %v", err)
	}
	if _, err := c.AllocChunk(context.Background(), 4, 2, 1, 1, false); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("nospace: %v", err)
	}
	if len(s.ids) != 3 {
		t.Fatalf("non-retryable errors were retried: %d requests", len(s.ids))
	}
}

func TestClientGivesUpAtDeadline(t *testing.T) {
	s := newFake(t)
	for range 1000 {
		s.replies = append(s.replies, wireErr(503, WireError{Kind: KindUnavailable, Msg: "no leader"}))
	}
	c, _ := NewClient([]string{s.URL}, WithRetryTimeout(300*time.Millisecond))
	start := time.Now()
	_, err := c.GetAttr(context.Background(), 1)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("after retries: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("gave up after %v", d)
	}
}

func TestClientBacksOffOnRedirectLoop(t *testing.T) {
	a, b := newFake(t), newFake(t)
	for range 10000 {
		a.replies = append(a.replies, wireErr(421, WireError{Kind: KindNotLeader, Leader: strings.TrimPrefix(b.URL, "http://")}))
		b.replies = append(b.replies, wireErr(421, WireError{Kind: KindNotLeader, Leader: strings.TrimPrefix(a.URL, "http://")}))
	}
	c, _ := NewClient([]string{a.URL, b.URL}, WithRetryTimeout(400*time.Millisecond))
	_, err := c.GetAttr(context.Background(), 1)
	var nl *ErrNotLeader
	if !errors.As(err, &nl) {
		t.Fatalf("after a redirect loop: %v", err)
	}
	a.mu.Lock()
	b.mu.Lock()
	n := len(a.ids) + len(b.ids)
	b.mu.Unlock()
	a.mu.Unlock()
	if n > 100 {
		t.Fatalf("%d requests in 400ms: no backoff between redirect rounds", n)
	}
}

// A node that accepts a request and never answers (a leader cut off with its
// connections still open) costs one attempt, not the whole call.
func TestClientSkipsAHangingNode(t *testing.T) {
	release := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer hang.Close()
	defer close(release)
	good := newFake(t)
	good.replies = append(good.replies, ok(Attr{Ino: 1}), ok(Attr{Ino: 1}))
	c, _ := NewClient([]string{hang.URL, good.URL}, WithAttemptTimeout(time.Second))
	start := time.Now()
	if _, err := c.GetAttr(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("took %v", d)
	}
	// The next call starts at the node that answered.
	start = time.Now()
	if _, err := c.GetAttr(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("second call took %v: it tried the hanging node again", d)
	}
}

func TestCancelledCallKeepsTheLeader(t *testing.T) {
	s := newFake(t)
	s.replies = append(s.replies, ok(Attr{Ino: 1}))
	other := newFake(t) // must never be asked
	c, _ := NewClient([]string{s.URL, other.URL})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.GetAttr(ctx, 1); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	if _, err := c.GetAttr(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if len(other.ids) != 0 || len(s.ids) != 1 {
		t.Fatalf("requests: first node %d, second node %d", len(s.ids), len(other.ids))
	}
}
