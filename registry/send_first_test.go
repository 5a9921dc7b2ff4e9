package registry

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// firstAloneReader records whether any other read began while the read of
// offset 0 was under way. That read waits up to a bound for one to begin:
// a sender that starts its read-ahead with the first piece does so within
// microseconds, so the bound only has to be long next to that.
type firstAloneReader struct {
	data []byte

	mu        sync.Mutex
	inFirst   bool
	overlap   bool
	otherSeen chan struct{} // closed when a read other than offset 0 begins
	once      sync.Once
}

const firstAloneWait = 200 * time.Millisecond

func (r *firstAloneReader) ReadAt(p []byte, off int64) (int, error) {
	if off == 0 {
		r.mu.Lock()
		r.inFirst = true
		r.mu.Unlock()
		select {
		case <-r.otherSeen:
		case <-time.After(firstAloneWait):
		}
		r.mu.Lock()
		r.inFirst = false
		r.mu.Unlock()
	} else {
		r.mu.Lock()
		if r.inFirst {
			r.overlap = true
		}
		r.mu.Unlock()
		r.once.Do(func() { close(r.otherSeen) })
	}
	if off >= int64(len(r.data)) {
		return 0, io.EOF
	}
	n := copy(p, r.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// The first piece is read before any read-ahead starts, so the first byte of
// a download does not wait behind pieces the client does not need yet; the
// read-ahead still follows and the body is the whole blob.
func TestSendWholeReadsFirstPieceAlone(t *testing.T) {
	data := make([]byte, (sendDepth+2)*sendPiece+3)
	for i := range data {
		data[i] = byte(i*31 + 7)
	}
	src := &firstAloneReader{data: data, otherSeen: make(chan struct{})}
	rec := httptest.NewRecorder()
	if err := sendWhole(rec, src, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if src.overlap {
		t.Error("read-ahead began while the first piece was being read")
	}
	if !bytes.Equal(rec.Body.Bytes(), data) {
		t.Errorf("body of %d bytes differs from the blob", rec.Body.Len())
	}
}

// A whole-blob GET (the path that bypasses http.ServeContent) says it
// accepts ranges, as a ranged or conditional GET and a HEAD do, so a client
// whose download breaks knows it may resume it.
func TestBlobGetAcceptsRanges(t *testing.T) {
	forEachStore(t, Config{}, func(t *testing.T, env *testEnv) {
		blob := bytes.Repeat([]byte("layer bytes "), 1000)
		d := env.pushBlob("a/b", blob)
		for _, c := range []struct {
			method string
			hdr    map[string]string
			want   int
		}{
			{"GET", nil, http.StatusOK},
			{"GET", map[string]string{"Range": "bytes=10-19"}, http.StatusPartialContent},
			{"HEAD", nil, http.StatusOK},
		} {
			r := env.must(env.do(c.method, "/v2/a/b/blobs/"+d, c.hdr, nil), c.want)
			if got := r.header.Get("Accept-Ranges"); got != "bytes" {
				t.Errorf("%s %v: Accept-Ranges %q, want bytes", c.method, c.hdr, got)
			}
			if c.method == "GET" && c.hdr == nil && !bytes.Equal(r.body, blob) {
				t.Errorf("GET: body of %d bytes differs from the blob", len(r.body))
			}
		}
	})
}
