package metaserver

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// acceptStream takes over a request's connection and answers the stream
// upgrade, as a metaserver does, for fake nodes that then misbehave.
func acceptStream(t *testing.T, w http.ResponseWriter) (net.Conn, *bufio.ReadWriter, bool) {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		t.Error(err)
		return nil, nil, false
	}
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + StreamProtocol + "\r\n\r\n")
	_ = brw.Flush()
	return conn, brw, true
}

// A node that takes the stream upgrade and then never answers costs one
// attempt per call, and the client's next call starts elsewhere.
func TestClientSkipsASilentStream(t *testing.T) {
	silent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, up := acceptStream(t, w)
		if !up {
			return
		}
		defer conn.Close()
		for {
			if _, err := ReadStreamFrame(brw.Reader, 1<<20); err != nil {
				return // read, never answer, until the client goes
			}
		}
	}))
	defer silent.Close()
	good := newFake(t)
	good.replies = append(good.replies, ok(Attr{Ino: 1}), ok(Attr{Ino: 1}))
	c, _ := NewClient([]string{silent.URL, good.URL}, WithAttemptTimeout(300*time.Millisecond))
	defer c.Close()
	start := time.Now()
	if a, err := c.GetAttr(context.Background(), 1); err != nil || a.Ino != 1 {
		t.Fatalf("getattr = %+v, %v", a, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
	start = time.Now()
	if _, err := c.GetAttr(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("second call took %v: it tried the silent node again", d)
	}
}

// A stream that breaks mid-call (the node died) is a retryable failure: the
// call completes on the next address, carrying the same request id.
func TestClientRetriesWhenTheStreamBreaks(t *testing.T) {
	dying := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, brw, up := acceptStream(t, w)
		if !up {
			return
		}
		_, _ = ReadStreamFrame(bufio.NewReader(brw.Reader), 1<<20)
		conn.Close() // took the request, died before answering
	}))
	defer dying.Close()
	good := newFake(t)
	good.replies = append(good.replies, ok(Attr{Ino: 5}))
	c, _ := NewClient([]string{dying.URL, good.URL}, WithRetryTimeout(5*time.Second))
	defer c.Close()
	a, err := c.Create(context.Background(), CreateIn{Parent: 1, Name: "x"})
	if err != nil || a.Ino != 5 {
		t.Fatalf("create = %+v, %v", a, err)
	}
	if len(good.ids) != 1 || good.ids[0] == "" {
		t.Fatalf("request ids at the second node: %q", good.ids)
	}
}

// A node that takes the upgrade and then stops reading blocks the client's
// write once the socket buffers are full; the call still moves on when its
// attempt times out, because the stuck stream is closed.
func TestClientLeavesAStreamThatStoppedReading(t *testing.T) {
	release := make(chan struct{})
	deaf := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, up := acceptStream(t, w)
		if !up {
			return
		}
		defer conn.Close()
		<-release // never reads
	}))
	defer deaf.Close()
	defer close(release)
	good := newFake(t)
	good.replies = append(good.replies, ok(nil))
	c, _ := NewClient([]string{deaf.URL, good.URL}, WithAttemptTimeout(300*time.Millisecond))
	defer c.Close()
	big := make([]byte, 24<<20) // more than loopback socket buffers hold
	start := time.Now()
	if err := c.KVTxn(context.Background(), nil, []KVOp{{Bucket: "b", Key: "k", Value: big}}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("took %v", d)
	}
}
