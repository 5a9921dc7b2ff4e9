package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// failingReaderAt serves data but fails every read at or past failAt, and
// counts reads in flight at once.
type failingReaderAt struct {
	data           []byte
	failAt         int64
	inFlight, peak atomic.Int64
}

var errDisk = errors.New("disk on fire")

func (f *failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n := f.inFlight.Add(1)
	defer f.inFlight.Add(-1)
	for {
		old := f.peak.Load()
		if n <= old || f.peak.CompareAndSwap(old, n) {
			break
		}
	}
	if f.failAt >= 0 && off >= f.failAt {
		return 0, errDisk
	}
	if off >= int64(len(f.data)) {
		return 0, io.EOF
	}
	c := copy(p, f.data[off:])
	if c < len(p) {
		return c, io.EOF
	}
	return c, nil
}

func TestSendWhole(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, size := range []int{0, 1, sendPiece - 1, sendPiece, 3*sendPiece + 5, (sendDepth+3)*sendPiece + 1} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(r.Uint32())
		}
		src := &failingReaderAt{data: data, failAt: -1}
		rec := httptest.NewRecorder()
		if err := sendWhole(rec, src, int64(size)); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if rec.Code != http.StatusOK || rec.Header().Get("Content-Length") != strconv.Itoa(size) {
			t.Errorf("size %d: status %d, Content-Length %q", size, rec.Code, rec.Header().Get("Content-Length"))
		}
		if !bytes.Equal(rec.Body.Bytes(), data) {
			t.Errorf("size %d: body of %d bytes differs from the blob", size, rec.Body.Len())
		}
		if p := src.peak.Load(); p > sendDepth {
			t.Errorf("size %d: %d reads in flight at once, want at most %d", size, p, sendDepth)
		}
	}

	// A read that fails half-way ends the body there: the client sees fewer
	// bytes than Content-Length, and the error reaches the caller.
	size := 8*sendPiece + 100
	src := &failingReaderAt{data: make([]byte, size), failAt: 5 * sendPiece}
	rec := httptest.NewRecorder()
	err := sendWhole(rec, src, int64(size))
	if !errors.Is(err, errDisk) {
		t.Fatalf("failing read: %v", err)
	}
	if rec.Body.Len() != 5*sendPiece {
		t.Errorf("body has %d bytes after a failure at %d", rec.Body.Len(), 5*sendPiece)
	}
	// A blob shorter than its size says is an error, not a short 200.
	src = &failingReaderAt{data: make([]byte, sendPiece+10), failAt: -1}
	if err := sendWhole(httptest.NewRecorder(), src, 2*sendPiece); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("truncated blob: %v", err)
	}
}

// Many downloads sharing few slots all finish (none waits for a slot while
// holding one) and give every slot back.
func TestSendWholeSharesSlots(t *testing.T) {
	old := sendSlots
	sendSlots = make(chan struct{}, 3)
	defer func() { sendSlots = old }()
	data := make([]byte, 6*sendPiece+7)
	for i := range data {
		data[i] = byte(i * 7)
	}
	src := &failingReaderAt{data: data, failAt: -1}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec := httptest.NewRecorder()
			if err := sendWhole(rec, src, int64(len(data))); err != nil {
				errs <- err
				return
			}
			if !bytes.Equal(rec.Body.Bytes(), data) {
				errs <- errors.New("body differs")
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("downloads sharing 3 slots did not finish: deadlock")
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if len(sendSlots) != 0 {
		t.Errorf("%d slots still held after every download ended", len(sendSlots))
	}
}

func TestPlainGet(t *testing.T) {
	for _, c := range []struct {
		method, header string
		want           bool
	}{
		{"GET", "", true},
		{"HEAD", "", false},
		{"GET", "Range", false},
		{"GET", "If-None-Match", false},
		{"GET", "If-Range", false},
		{"GET", "If-Modified-Since", false},
	} {
		req := httptest.NewRequest(c.method, "/v2/a/blobs/x", nil)
		if c.header != "" {
			req.Header.Set(c.header, "x")
		}
		if got := plainGet(req); got != c.want {
			t.Errorf("%s with %q: plainGet = %v", c.method, c.header, got)
		}
	}
}

// Through the file system the bytes are lent from the block cache
// (dataReader), several chunks per piece and a short last one; the body must
// still be the blob, and reading it again (the blocks let go after the first
// send) must give it again.
func TestSendWholeFromDFS(t *testing.T) {
	s := newDFSStore(t)
	ctx := context.Background()
	r := rand.New(rand.NewPCG(5, 6))
	data := make([]byte, 2*sendPiece+777)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	d := digestOf("sha256", data)
	if err := s.CreateUpload(ctx, "send"); err != nil {
		t.Fatal(err)
	}
	w, err := s.WriteUpload(ctx, "send", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitUpload(ctx, "send", int64(len(data)), d); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		br, err := s.Open(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := br.(dataReader); !ok {
			t.Fatal("the DFS blob reader does not lend its bytes")
		}
		rec := httptest.NewRecorder()
		err = sendWhole(rec, br, br.Size())
		br.Close()
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if !bytes.Equal(rec.Body.Bytes(), data) {
			t.Fatalf("round %d: body of %d bytes differs from the blob", round, rec.Body.Len())
		}
	}
}
