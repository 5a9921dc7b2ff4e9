package registry

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// transferCounter is an OnTransfer hook that counts calls and transfers in
// flight.
type transferCounter struct {
	mu            sync.Mutex
	begun, active int
}

func (c *transferCounter) begin() func() {
	c.mu.Lock()
	c.begun++
	c.active++
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		c.active--
		c.mu.Unlock()
	}
}

func (c *transferCounter) get() (begun, active int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.begun, c.active
}

// OnTransfer brackets the requests that move blob bytes, and only those: the
// converter defers to exactly these.
func TestOnTransfer(t *testing.T) {
	var tc transferCounter
	env := newTestEnv(t, Config{OnTransfer: tc.begin})
	layer := bytes.Repeat([]byte("x"), 4<<20)
	// A transfer begins before its handler answers, and ends as the
	// handler returns, which may be just after the client has the answer.
	settled := func(what string) int {
		t.Helper()
		waitFor(t, what+": every transfer ended", func() bool { _, active := tc.get(); return active == 0 })
		begun, _ := tc.get()
		return begun
	}
	m, l := env.pushImage("t/r", "v1", layer)
	// pushImage: config and layer (monolithic POSTs) are transfers; the
	// manifest PUT is not.
	if begun := settled("a push"); begun != 2 {
		t.Fatalf("after a push: %d transfers begun, want 2", begun)
	}

	for _, c := range []struct {
		method, path string
		hdr          map[string]string
		body         []byte
		status       int
		transfer     bool
	}{
		{"GET", "/v2/t/r/blobs/" + l, nil, nil, http.StatusOK, true},
		{"GET", "/v2/t/r/blobs/" + l, map[string]string{"Range": "bytes=0-9"}, nil, http.StatusPartialContent, true},
		{"HEAD", "/v2/t/r/blobs/" + l, nil, nil, http.StatusOK, false},
		{"GET", "/v2/t/r/manifests/v1", nil, nil, http.StatusOK, false},
		{"HEAD", "/v2/t/r/manifests/" + m, nil, nil, http.StatusOK, false},
		{"GET", "/v2/t/r/tags/list", nil, nil, http.StatusOK, false},
		{"GET", "/v2/", nil, nil, http.StatusOK, false},
		{"POST", "/v2/t/r/blobs/uploads/", nil, nil, http.StatusAccepted, true},
		{"GET", "/v2/t/r/blobs/sha256:" + strings.Repeat("0", 64), nil, nil, http.StatusNotFound, true},
	} {
		b0, _ := tc.get()
		env.must(env.do(c.method, c.path, c.hdr, c.body), c.status)
		if got := settled(c.method+" "+c.path) - b0; got != map[bool]int{true: 1, false: 0}[c.transfer] {
			t.Errorf("%s %s: %d transfers begun", c.method, c.path, got)
		}
	}

	// A chunked upload: every PATCH and the closing PUT count.
	r := env.must(env.do("POST", "/v2/t/r/blobs/uploads/", nil, nil), http.StatusAccepted)
	loc := strings.TrimPrefix(r.header.Get("Location"), env.srv.URL)
	b0, _ := tc.get()
	r = env.must(env.do("PATCH", loc, map[string]string{"Content-Range": "0-2", "Content-Type": "application/octet-stream"}, []byte("abc")), http.StatusAccepted)
	loc = strings.TrimPrefix(r.header.Get("Location"), env.srv.URL)
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	env.must(env.do("PUT", loc+sep+"digest="+sha([]byte("abc")), nil, nil), http.StatusCreated)
	if b1 := settled("a chunked upload"); b1-b0 != 2 {
		t.Errorf("chunked upload: %d transfers begun, want 2", b1-b0)
	}

	// A download is in flight until its body is sent, not just until the
	// handler starts writing: 32 MiB is more than loopback socket buffers
	// hold, so the handler is still writing while the client reads slowly.
	big := env.pushBlob("t/r", bytes.Repeat([]byte("y"), 32<<20))
	res, err := env.srv.Client().Get(env.srv.URL + "/v2/t/r/blobs/" + big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(res.Body, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if _, active := tc.get(); active != 1 {
		t.Errorf("%d transfers active while a 32 MiB body is being read, want 1", active)
	}
	io.Copy(io.Discard, res.Body)
	res.Body.Close()
	settled("a 32 MiB download read to its end")
}
