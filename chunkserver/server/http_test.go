package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func TestClientErrors(t *testing.T) {
	s := startServer(t, server.Config{DataDir: t.TempDir()})
	c := chunkserver.NewClient(nil)
	ctx := context.Background()
	addr := s.Addr()
	missing := "00000000000000aa.1"
	if _, err := c.ReadAt(ctx, addr, missing, make([]byte, 4), 0); !errors.Is(err, chunkserver.ErrNotFound) {
		t.Errorf("ReadAt(missing) = %v, want ErrNotFound", err)
	}
	var se *chunkserver.ShardError
	if _, err := c.Stat(ctx, addr, missing); !errors.As(err, &se) || se.Addr != addr || se.Name != missing || !errors.Is(err, chunkserver.ErrNotFound) {
		t.Errorf("Stat(missing) = %v, want a ShardError naming %s and %s wrapping ErrNotFound", err, addr, missing)
	}
	if err := c.Delete(ctx, addr, missing); err != nil {
		t.Errorf("Delete(missing) = %v, want success", err)
	}
	if _, err := c.Put(ctx, addr, "../../etc.1", []byte("x")); !errors.Is(err, chunkserver.ErrBadName) {
		t.Errorf("Put(bad name) = %v, want ErrBadName", err)
	}
	if _, err := c.Put(ctx, "127.0.0.1:1", missing, []byte("x")); err == nil || !errors.As(err, &se) {
		t.Errorf("Put to a closed port = %v, want a ShardError", err)
	}
}

// TestHTTPStatuses drives the raw API, one row per request, against the real
// handler.
func TestHTTPStatuses(t *testing.T) {
	s := startServer(t, server.Config{DataDir: t.TempDir()})
	base := "http://" + s.Addr()
	data := randBytes(1, 3*store.BlockSize+10)
	name := "0000000000000007.3"
	if _, err := chunkserver.NewClient(nil).Put(context.Background(), s.Addr(), name, data); err != nil {
		t.Fatal(err)
	}
	size := len(data)
	tests := []struct {
		method, path string
		header       map[string]string
		body         []byte
		code         int
		wantHeader   map[string]string
		wantBody     []byte
	}{
		{"GET", "/shards/" + name, nil, nil, 200, map[string]string{"Content-Length": "196618", chunkserver.HeaderSum: chunkserver.FormatSum(chunkserver.Sum(data))}, data},
		{"GET", "/shards/" + name, map[string]string{"Range": "bytes=10-19"}, nil, 206, map[string]string{"Content-Range": "bytes 10-19/196618"}, data[10:20]},
		{"GET", "/shards/" + name, map[string]string{"Range": "bytes=65530-65545"}, nil, 206, nil, data[65530:65546]},
		{"GET", "/shards/" + name, map[string]string{"Range": "bytes=196600-"}, nil, 206, nil, data[196600:]},
		{"GET", "/shards/" + name, map[string]string{"Range": "bytes=-5"}, nil, 206, nil, data[size-5:]},
		{"GET", "/shards/" + name, map[string]string{"Range": "bytes=196610-999999"}, nil, 206, map[string]string{"Content-Range": "bytes 196610-196617/196618"}, data[196610:]},
		{"GET", "/shards/" + name, map[string]string{"Range": "bytes=196618-"}, nil, 416, map[string]string{"Content-Range": "bytes */196618"}, nil},
		{"GET", "/shards/" + name, map[string]string{"Range": "bytes=0-1,5-6"}, nil, 416, nil, nil},
		{"GET", "/shards/" + name, map[string]string{"Range": "bytes=9-3"}, nil, 416, nil, nil},
		{"GET", "/shards/" + name, map[string]string{"Range": "items=0-3"}, nil, 200, nil, data},
		{"HEAD", "/shards/" + name, nil, nil, 200, map[string]string{"Content-Length": "196618", chunkserver.HeaderSum: chunkserver.FormatSum(chunkserver.Sum(data))}, nil},
		{"GET", "/shards/00000000000000ff.0", nil, nil, 404, nil, nil},
		{"HEAD", "/shards/00000000000000ff.0", nil, nil, 404, nil, nil},
		{"GET", "/shards/ZZ.0", nil, nil, 400, map[string]string{chunkserver.HeaderError: chunkserver.ErrorName}, nil},
		{"GET", "/shards/abc.1x", nil, nil, 400, nil, nil},
		{"PUT", "/shards/00000000000000ee.1", map[string]string{chunkserver.HeaderSum: "0000000000000001"}, []byte("hello"), 400, map[string]string{chunkserver.HeaderError: chunkserver.ErrorSum}, nil},
		{"PUT", "/shards/00000000000000ee.1", map[string]string{chunkserver.HeaderSum: "xyz"}, []byte("hello"), 400, nil, nil},
		{"GET", "/shards/00000000000000ee.1", nil, nil, 404, nil, nil}, // the refused PUT stored nothing
		{"PUT", "/shards/00000000000000ee.2", nil, []byte("hello"), 201, map[string]string{"Content-Type": "application/json"}, []byte(`{"sum":"` + chunkserver.FormatSum(chunkserver.Sum([]byte("hello"))) + `","size":5}` + "\n")},
		{"DELETE", "/shards/00000000000000ee.2", nil, nil, 204, nil, nil},
		{"DELETE", "/shards/00000000000000ee.2", nil, nil, 204, nil, nil},
		{"POST", "/shards/" + name, nil, nil, 405, map[string]string{"Allow": "GET, HEAD, PUT, DELETE"}, nil},
	}
	for _, tc := range tests {
		req, err := http.NewRequest(tc.method, base+tc.path, bytes.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range tc.header {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.method, tc.path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		label := tc.method + " " + tc.path + " " + tc.header["Range"]
		if resp.StatusCode != tc.code {
			t.Errorf("%s: status %d, want %d (%s)", label, resp.StatusCode, tc.code, strings.TrimSpace(string(body)))
			continue
		}
		for k, v := range tc.wantHeader {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s: header %s = %q, want %q", label, k, got, v)
			}
		}
		if tc.wantBody != nil && !bytes.Equal(body, tc.wantBody) {
			t.Errorf("%s: body of %d bytes differs from the %d expected", label, len(body), len(tc.wantBody))
		}
	}

	resp, err := http.Get(base + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var st chunkserver.StatusReply
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil || st.ID != string(s.ID()) || st.Shards != 1 || st.Used < int64(size) {
		t.Errorf("/status = %+v, %v", st, err)
	}
	resp, err = http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"dockyard_chunkserver_shards 1\n",
		"dockyard_chunkserver_bytes_in_total ",
		"dockyard_chunkserver_bytes_out_total ",
		`dockyard_chunkserver_requests_total{method="GET",code="404"} 2`,
		`dockyard_chunkserver_request_duration_seconds_bucket{method="PUT",le="+Inf"} 4`,
		"dockyard_chunkserver_scrub_progress_ratio ",
		"dockyard_chunkserver_corrupt_total 0\n",
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestCorruptShardOverHTTP(t *testing.T) {
	d, err := store.OpenDisk(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	meta := &fakeMeta{}
	s := startServer(t, server.Config{Store: d, ID: "cs-corrupt", Chunks: meta})
	c := chunkserver.NewClient(nil)
	ctx := context.Background()
	name := "0000000000000042.5"
	data := randBytes(5, 4*store.BlockSize)
	if _, err := c.Put(ctx, s.Addr(), name, data); err != nil {
		t.Fatal(err)
	}
	flipOnDisk(t, d.Path(name), 2*store.BlockSize+7)

	p := make([]byte, len(data))
	n, err := c.ReadAt(ctx, s.Addr(), name, p, 0)
	if !errors.Is(err, chunkserver.ErrCorrupt) || n != 0 {
		t.Fatalf("ReadAt of a corrupt shard = %d, %v; want 0, ErrCorrupt", n, err)
	}
	var se *chunkserver.ShardError
	if !errors.As(err, &se) || se.Addr != s.Addr() || se.Name != name {
		t.Errorf("error %v does not name the server and shard", err)
	}
	// The server reports the shard itself, once however often it is read.
	waitFor(t, "the corrupt read to be reported", func() bool {
		_, _, reports := meta.snapshot()
		return len(reports) > 0
	})
	if _, err := c.ReadAt(ctx, s.Addr(), name, p, 0); !errors.Is(err, chunkserver.ErrCorrupt) {
		t.Fatalf("second read = %v, want ErrCorrupt", err)
	}
	// Ranges that avoid the damaged block still read.
	q := make([]byte, 2*store.BlockSize)
	if _, err := c.ReadAt(ctx, s.Addr(), name, q, 0); err != nil || !bytes.Equal(q, data[:2*store.BlockSize]) {
		t.Errorf("ReadAt of the intact blocks: %v", err)
	}
	resp, err := http.Get("http://" + s.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "dockyard_chunkserver_corrupt_total 2\n") {
		t.Errorf("corrupt reads not counted in /metrics")
	}
	if _, _, reports := meta.snapshot(); len(reports) != 1 || reports[0] != name {
		t.Errorf("reports = %v, want one of %s", reports, name)
	}
}

func TestDiskFullOverHTTP(t *testing.T) {
	s := startServer(t, server.Config{DataDir: t.TempDir(), Capacity: 300 << 10})
	c := chunkserver.NewClient(nil)
	ctx := context.Background()
	if _, err := c.Put(ctx, s.Addr(), "0000000000000001.0", make([]byte, 200<<10)); err != nil {
		t.Fatalf("Put within capacity: %v", err)
	}
	_, err := c.Put(ctx, s.Addr(), "0000000000000001.1", make([]byte, 200<<10))
	if !errors.Is(err, chunkserver.ErrNoSpace) {
		t.Fatalf("Put over capacity = %v, want ErrNoSpace", err)
	}
	var se *chunkserver.StatusError
	if !errors.As(err, &se) || se.Code != http.StatusInsufficientStorage {
		t.Errorf("Put over capacity = %v, want HTTP 507", err)
	}
	if _, err := c.Stat(ctx, s.Addr(), "0000000000000001.1"); !errors.Is(err, chunkserver.ErrNotFound) {
		t.Errorf("the refused shard exists: %v", err)
	}
	st, err := c.Status(ctx, s.Addr())
	if err != nil || st.Capacity > 300<<10 {
		t.Errorf("Status = %+v, %v; capacity should be at most the configured 300 KiB", st, err)
	}
}

func TestServerIDIsStable(t *testing.T) {
	dir := t.TempDir()
	s1, err := server.New(server.Config{DataDir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	id := s1.ID()
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := server.New(server.Config{DataDir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if id == "" || s2.ID() != id {
		t.Errorf("ID after restart = %q, want %q", s2.ID(), id)
	}
}

// flipOnDisk damages byte off of the data of the shard file at path, as a
// failing disk would, wherever the file's format puts the data.
func flipOnDisk(t *testing.T, path string, off int64) {
	t.Helper()
	at, err := store.ShardDataOffset(path)
	if err != nil {
		t.Fatal(err)
	}
	off += at
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x55
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// onlyReader hides the concrete type of a reader so the request is sent
// without a Content-Length (chunked), as a streaming writer would send it.
type onlyReader struct{ io.Reader }

func TestPutBodyLimits(t *testing.T) {
	s := startServer(t, server.Config{Store: store.NewMemory(0), ID: "cs-limits", MaxShardSize: 256 << 10})
	base := "http://" + s.Addr() + "/shards/"
	put := func(name string, body io.Reader) int {
		t.Helper()
		req, err := http.NewRequest(http.MethodPut, base+name, body)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	small, big := randBytes(1, 100<<10), randBytes(2, 300<<10)
	if code := put("0000000000000001.0", onlyReader{bytes.NewReader(small)}); code != http.StatusCreated {
		t.Errorf("chunked PUT within the limit: %d, want 201", code)
	}
	if code := put("0000000000000001.1", onlyReader{bytes.NewReader(big)}); code != http.StatusRequestEntityTooLarge {
		t.Errorf("chunked PUT over the limit: %d, want 413", code)
	}
	if code := put("0000000000000001.2", bytes.NewReader(big)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("PUT with a Content-Length over the limit: %d, want 413", code)
	}
	info, err := chunkserver.NewClient(nil).Stat(context.Background(), s.Addr(), "0000000000000001.0")
	if err != nil || info.Sum != chunkserver.Sum(small) {
		t.Errorf("chunked PUT stored %+v, %v", info, err)
	}
	for _, n := range []string{"0000000000000001.1", "0000000000000001.2"} {
		if _, err := chunkserver.NewClient(nil).Stat(context.Background(), s.Addr(), n); !errors.Is(err, chunkserver.ErrNotFound) {
			t.Errorf("refused PUT of %s stored something: %v", n, err)
		}
	}
}
