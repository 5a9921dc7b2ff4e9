package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/metaserver"
)

// shortDir is a fresh directory whose path is short enough for a Unix socket
// inside it, which t.TempDir's long test-named paths may not be.
func shortDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "sc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(d) })
	return d
}

// scServer runs a disk chunkserver with short-circuit reads on.
func scServer(t *testing.T, meta *fakeMeta) *server.Server {
	t.Helper()
	cfg := server.Config{DataDir: shortDir(t), ShortCircuit: true}
	if meta != nil {
		cfg.Chunks = meta
	}
	s := startServer(t, cfg)
	if s.ShortCircuitSocket() == "" {
		t.Fatal("the server offers no short-circuit socket")
	}
	return s
}

func dialSC(t *testing.T, c *chunkserver.Client, addr string) *chunkserver.ShortCircuit {
	t.Helper()
	sc, err := chunkserver.DialShortCircuit(context.Background(), c, addr, chunkserver.ShortCircuitOptions{Logger: quietLogger()})
	if err != nil {
		t.Fatalf("DialShortCircuit: %v", err)
	}
	t.Cleanup(sc.Close)
	return sc
}

// scClients returns an HTTP-only client of s, a client with s attached
// through its short-circuit socket, and that attachment.
func scClients(t *testing.T, s *server.Server) (hc, c *chunkserver.Client, sc *chunkserver.ShortCircuit) {
	t.Helper()
	hc = chunkserver.NewClient(nil)
	sc = dialSC(t, hc, s.Addr())
	c = chunkserver.NewClient(nil)
	c.Attach(s.Addr(), sc)
	return hc, c, sc
}

func putShard(t *testing.T, c *chunkserver.Client, addr, name string, data []byte) {
	t.Helper()
	if _, err := c.Put(context.Background(), addr, name, data); err != nil {
		t.Fatalf("Put %s: %v", name, err)
	}
}

func TestShortCircuitReadsVerifiedBytes(t *testing.T) {
	s := scServer(t, nil)
	fi, err := os.Stat(s.ShortCircuitSocket())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode %v, want an owner-only socket", fi.Mode())
	}
	ctx := context.Background()
	hc, c, sc := scClients(t, s)
	addr := s.Addr()
	for i, size := range []int{1, store.BlockSize - 1, store.BlockSize, 3*store.BlockSize + 7, 1 << 20} {
		name := chunkserver.FormatSum(uint64(i+1)) + ".0"
		data := randBytes(uint64(size), size)
		putShard(t, hc, addr, name, data)
		got := make([]byte, size)
		if _, err := c.ReadAt(ctx, addr, name, got, 0); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("whole %d-byte shard: %v (equal %v)", size, err, bytes.Equal(got, data))
		}
		for _, off := range []int{0, 1, store.BlockSize - 1, store.BlockSize, store.BlockSize + 1} {
			for _, l := range []int{1, 2, store.BlockSize, 2*store.BlockSize + 1} {
				if off+l > size {
					continue
				}
				p := make([]byte, l)
				if _, err := c.ReadAt(ctx, addr, name, p, int64(off)); err != nil || !bytes.Equal(p, data[off:off+l]) {
					t.Errorf("size %d: ReadAt(off %d, len %d): %v (equal %v)", size, off, l, err, bytes.Equal(p, data[off:off+l]))
				}
			}
		}
		if _, err := c.ReadAt(ctx, addr, name, make([]byte, 2), int64(size-1)); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("ReadAt across the end of a %d-byte shard = %v, want io.ErrUnexpectedEOF", size, err)
		}
	}
	_, err = c.ReadAt(ctx, addr, "00000000000000aa.0", make([]byte, 1), 0)
	var se *chunkserver.ShardError
	if !errors.Is(err, chunkserver.ErrNotFound) || !errors.As(err, &se) {
		t.Errorf("ReadAt of a missing shard = %v, want a *ShardError wrapping ErrNotFound", err)
	}
	st := sc.Stats()
	if st.Fallbacks != 0 || st.Reads == 0 || st.Opens != 5 {
		t.Errorf("stats %+v: want every read through one descriptor per shard, none over HTTP", st)
	}
	// The server counts what it handed out, for admins checking that
	// local clients do read this way.
	for name, want := range map[string]string{
		"dockyard_chunkserver_short_circuit_opens_total":                          "5",
		"dockyard_chunkserver_short_circuit_connections":                          "1",
		`dockyard_chunkserver_short_circuit_connections_total{result="accepted"}`: "1",
		`dockyard_chunkserver_short_circuit_connections_total{result="refused"}`:  "0",
	} {
		if got := metricValue(t, s, name); got != want {
			t.Errorf("%s = %s, want %s", name, got, want)
		}
	}
	// Everything but reads still goes over HTTP.
	if info, err := c.Stat(ctx, addr, "0000000000000001.0"); err != nil || info.Size != 1 {
		t.Errorf("Stat through the short-circuit server = %+v, %v", info, err)
	}
}

func TestShortCircuitEnabledClientAttachesLocalServers(t *testing.T) {
	s := scServer(t, nil)
	ctx := context.Background()
	// The probe's request can make the transport dial a spare connection
	// that the server's shutdown would wait on; closing the client's idle
	// connections first spares the test that wait.
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	c := chunkserver.NewClient(&http.Client{Transport: tr})
	c.EnableShortCircuit(chunkserver.ShortCircuitOptions{RetryAfter: 20 * time.Millisecond, Logger: quietLogger()})
	data := randBytes(7, 200<<10)
	putShard(t, c, s.Addr(), "00000000000000bb.1", data)
	got := make([]byte, len(data))
	// The first read goes over HTTP and starts the probe.
	if _, err := c.ReadAt(ctx, s.Addr(), "00000000000000bb.1", got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("first read: %v", err)
	}
	// A probe that timed out on a busy machine is retried by a later read.
	waitFor(t, "the server to be attached", func() bool {
		if c.Attached(s.Addr()) {
			return true
		}
		_, _ = c.ReadAt(ctx, s.Addr(), "00000000000000bb.1", got, 0)
		return false
	})
	clear(got)
	if _, err := c.ReadAt(ctx, s.Addr(), "00000000000000bb.1", got, 0); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after attaching: %v", err)
	}
}

func TestShortCircuitCorruptBlockIsReportedAsOverHTTP(t *testing.T) {
	meta := &fakeMeta{}
	s := scServer(t, meta)
	ctx := context.Background()
	hc, c, sc := scClients(t, s)
	name := chunkserver.FormatSum(0xc0) + ".2"
	data := randBytes(3, 3*store.BlockSize)
	putShard(t, hc, s.Addr(), name, data)
	p := make([]byte, len(data))
	if _, err := c.ReadAt(ctx, s.Addr(), name, p, 0); err != nil {
		t.Fatal(err) // the descriptor is cached now
	}
	// Damage the second block in place, as a failing disk would: the
	// cached descriptor sees the same file.
	flipOnDisk(t, s.Store().(*store.Disk).Path(name), store.BlockSize+5)

	clear(p)
	_, scErr := c.ReadAt(ctx, s.Addr(), name, p, 0)
	_, httpErr := hc.ReadAt(ctx, s.Addr(), name, make([]byte, len(data)), 0)
	for _, err := range []error{scErr, httpErr} {
		var st *chunkserver.StatusError
		if !errors.Is(err, chunkserver.ErrCorrupt) || !errors.As(err, &st) || st.Code != http.StatusInternalServerError {
			t.Errorf("read of a damaged shard = %v, want a 500 *StatusError wrapping ErrCorrupt", err)
		}
	}
	if !bytes.Equal(p, make([]byte, len(p))) {
		t.Error("bytes came back from a read that failed its checksum")
	}
	// A read of the undamaged first block alone is still served.
	if _, err := c.ReadAt(ctx, s.Addr(), name, p[:100], 10); err != nil || !bytes.Equal(p[:100], data[10:110]) {
		t.Errorf("read of an intact block of a damaged shard: %v", err)
	}
	if st := sc.Stats(); st.Fallbacks != 0 {
		t.Errorf("stats %+v: a corrupt shard must not send reads over HTTP", st)
	}
	want := metaserver.ShardName(0xc0, 2)
	waitFor(t, "the corrupt shard to be reported", func() bool {
		_, _, reports := meta.snapshot()
		return slices.Contains(reports, want)
	})
}

func TestShortCircuitDeletedAndReplacedShards(t *testing.T) {
	s := scServer(t, nil)
	ctx := context.Background()
	hc, c, sc := scClients(t, s)
	name := chunkserver.FormatSum(0xde) + ".0"
	putShard(t, hc, s.Addr(), name, randBytes(1, 1000))
	p := make([]byte, 1000)
	if _, err := c.ReadAt(ctx, s.Addr(), name, p, 0); err != nil {
		t.Fatal(err)
	}
	// Replaced (as a repair does): the next read sees the new file.
	newer := randBytes(2, 1000)
	putShard(t, hc, s.Addr(), name, newer)
	if _, err := c.ReadAt(ctx, s.Addr(), name, p, 0); err != nil || !bytes.Equal(p, newer) {
		t.Fatalf("read after the shard was replaced: %v (new bytes %v)", err, bytes.Equal(p, newer))
	}
	if err := hc.Delete(ctx, s.Addr(), name); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ReadAt(ctx, s.Addr(), name, p, 0); !errors.Is(err, chunkserver.ErrNotFound) {
		t.Errorf("read of a deleted shard = %v, want ErrNotFound as over HTTP", err)
	}
	if n := sc.Open(); n != 0 {
		t.Errorf("%d descriptors still cached after the only shard was deleted", n)
	}
}

func TestShortCircuitFallsBackWhenTheSocketGoes(t *testing.T) {
	s := scServer(t, nil)
	ctx := context.Background()
	hc, c, sc := scClients(t, s)
	a, b := chunkserver.FormatSum(0xa)+".0", chunkserver.FormatSum(0xb)+".0"
	da, db := randBytes(10, 5000), randBytes(11, 5000)
	putShard(t, hc, s.Addr(), a, da)
	putShard(t, hc, s.Addr(), b, db)
	p := make([]byte, 5000)
	if _, err := c.ReadAt(ctx, s.Addr(), a, p, 0); err != nil {
		t.Fatal(err)
	}
	server.CloseShortCircuit(s)
	// b has no descriptor yet: asking for one fails, and the read is
	// served over HTTP instead.
	if _, err := c.ReadAt(ctx, s.Addr(), b, p, 0); err != nil || !bytes.Equal(p, db) {
		t.Fatalf("read with the socket gone: %v (equal %v)", err, bytes.Equal(p, db))
	}
	if st := sc.Stats(); st.Fallbacks != 1 {
		t.Errorf("stats %+v, want one read over HTTP", st)
	}
	// Marked down: the next reads go over HTTP without trying the socket.
	if _, err := c.ReadAt(ctx, s.Addr(), a, p, 0); err != nil || !bytes.Equal(p, da) {
		t.Fatalf("read while down: %v", err)
	}
	if st := sc.Stats(); st.Fallbacks != 2 {
		t.Errorf("stats %+v, want two reads over HTTP", st)
	}

	// With the whole server gone the read fails cleanly, as a dead
	// server's does over HTTP: no panic, not a verdict on the shard.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := c.ReadAt(ctx, s.Addr(), b, p, 0)
	var se *chunkserver.ShardError
	if err == nil || !errors.As(err, &se) || errors.Is(err, chunkserver.ErrNotFound) || errors.Is(err, chunkserver.ErrCorrupt) {
		t.Errorf("read from a closed server = %v, want a transport *ShardError", err)
	}
}

// lyingProxy fronts the API of s but describes sock as s's socket, as a
// server on another host, or one that moved, could.
func lyingProxy(t *testing.T, s *server.Server, sock string) string {
	t.Helper()
	info, err := http.Get("http://" + s.Addr() + chunkserver.ShortCircuitPath)
	if err != nil {
		t.Fatal(err)
	}
	var real chunkserver.ShortCircuitInfo
	if err := json.NewDecoder(info.Body).Decode(&real); err != nil {
		t.Fatal(err)
	}
	info.Body.Close()
	u, _ := url.Parse("http://" + s.Addr())
	proxy := httputil.NewSingleHostReverseProxy(u)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == chunkserver.ShortCircuitPath {
			real.Socket = sock
			_ = json.NewEncoder(w).Encode(real)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	return strings.TrimPrefix(hs.URL, "http://")
}

func TestShortCircuitRefusesAnotherServersSocket(t *testing.T) {
	a, b := scServer(t, nil), scServer(t, nil)
	addr := lyingProxy(t, a, b.ShortCircuitSocket())
	c := chunkserver.NewClient(nil)
	_, err := chunkserver.DialShortCircuit(context.Background(), c, addr, chunkserver.ShortCircuitOptions{})
	if !errors.Is(err, chunkserver.ErrShortCircuitIdentity) {
		t.Fatalf("DialShortCircuit to another server's socket = %v, want ErrShortCircuitIdentity", err)
	}
}

func TestShortCircuitStaleSocketPath(t *testing.T) {
	// A socket file nobody listens on any more, as a crash leaves.
	stale := filepath.Join(shortDir(t), "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()

	s := scServer(t, nil)
	addr := lyingProxy(t, s, stale)
	ctx := context.Background()
	c := chunkserver.NewClient(nil)
	if _, err := chunkserver.DialShortCircuit(ctx, c, addr, chunkserver.ShortCircuitOptions{}); err == nil {
		t.Fatal("DialShortCircuit to a stale socket succeeded")
	}
	// A client with short-circuit reads on keeps reading over HTTP.
	c.EnableShortCircuit(chunkserver.ShortCircuitOptions{Logger: quietLogger()})
	data := randBytes(5, 777)
	putShard(t, c, addr, "00000000000000cc.0", data)
	p := make([]byte, len(data))
	for range 3 {
		if _, err := c.ReadAt(ctx, addr, "00000000000000cc.0", p, 0); err != nil || !bytes.Equal(p, data) {
			t.Fatalf("read over HTTP beside a stale socket: %v", err)
		}
	}
	if c.Attached(addr) {
		t.Error("a stale socket was attached")
	}
}

func TestShortCircuitServerReplacesItsStaleSocket(t *testing.T) {
	dir := shortDir(t)
	path := filepath.Join(dir, chunkserver.ShortCircuitSocket)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	s := startServer(t, server.Config{DataDir: dir, ShortCircuit: true})
	if s.ShortCircuitSocket() != path {
		t.Fatalf("socket %q, want %q in place of the stale one", s.ShortCircuitSocket(), path)
	}
	dialSC(t, chunkserver.NewClient(nil), s.Addr())
}

func TestShortCircuitOffAnswers404(t *testing.T) {
	s := startServer(t, server.Config{DataDir: shortDir(t)})
	_, err := chunkserver.DialShortCircuit(context.Background(), chunkserver.NewClient(nil), s.Addr(), chunkserver.ShortCircuitOptions{})
	if !errors.Is(err, chunkserver.ErrNotFound) {
		t.Errorf("DialShortCircuit to a server without the socket = %v, want a 404 (ErrNotFound)", err)
	}
}

func TestShortCircuitConcurrentReadsWithFewDescriptors(t *testing.T) {
	s := scServer(t, nil)
	ctx := context.Background()
	hc := chunkserver.NewClient(nil)
	sc, err := chunkserver.DialShortCircuit(ctx, hc, s.Addr(), chunkserver.ShortCircuitOptions{MaxOpen: 2, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sc.Close)
	c := chunkserver.NewClient(nil)
	c.Attach(s.Addr(), sc)
	const shards = 8
	datas := make([][]byte, shards)
	for i := range shards {
		datas[i] = randBytes(uint64(100+i), store.BlockSize+1000*i)
		putShard(t, hc, s.Addr(), chunkserver.FormatSum(uint64(0x100+i))+".0", datas[i])
	}
	errs := make(chan error, 8)
	for g := range 8 {
		go func() {
			for n := range 50 {
				i := (g + n) % shards
				p := make([]byte, len(datas[i])-g)
				if _, err := c.ReadAt(ctx, s.Addr(), chunkserver.FormatSum(uint64(0x100+i))+".0", p, int64(g)); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(p, datas[i][g:]) {
					errs <- errors.New("wrong bytes")
					return
				}
			}
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := sc.Open(); n > 2 {
		t.Errorf("%d descriptors cached, want at most MaxOpen 2", n)
	}
	if st := sc.Stats(); st.Fallbacks != 0 || st.Reads != 400 {
		t.Errorf("stats %+v, want all 400 reads through descriptors", st)
	}
}

func TestShortCircuitWrites(t *testing.T) {
	s := startServer(t, server.Config{DataDir: shortDir(t), ShortCircuit: true, MaxShardSize: 1 << 20})
	ctx := context.Background()
	hc := chunkserver.NewClient(nil)
	sc, err := chunkserver.DialShortCircuit(ctx, hc, s.Addr(), chunkserver.ShortCircuitOptions{Writes: true, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sc.Close)
	c := chunkserver.NewClient(nil)
	c.Attach(s.Addr(), sc)
	for i, size := range []int{0, 1, store.BlockSize + 3, 1 << 20} {
		name := chunkserver.FormatSum(uint64(0x200+i)) + ".0"
		data := randBytes(uint64(i), size)
		put := c.Put
		if i%2 == 1 {
			put = c.PutBuffered
		}
		sum, err := put(ctx, s.Addr(), name, data)
		if err != nil || sum != chunkserver.Sum(data) {
			t.Fatalf("put of %d bytes = %016x, %v; want %016x", size, sum, err, chunkserver.Sum(data))
		}
		got := make([]byte, size)
		if _, err := hc.ReadAt(ctx, s.Addr(), name, got, 0); size > 0 && (err != nil || !bytes.Equal(got, data)) {
			t.Fatalf("reading back over HTTP: %v (equal %v)", err, bytes.Equal(got, data))
		}
	}
	if err := c.Sync(ctx, s.Addr()); err != nil {
		t.Fatal(err)
	}
	// Refusals are the API's, and the connection stays usable.
	var se *chunkserver.StatusError
	if _, err := c.Put(ctx, s.Addr(), "0000000000000300.0", make([]byte, 1<<20+1)); !errors.As(err, &se) || se.Code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized put = %v, want a 413 *StatusError", err)
	}
	if _, err := c.Put(ctx, s.Addr(), "0000000000000301.0", []byte("after")); err != nil {
		t.Errorf("put after a refused one: %v", err)
	}
	if st := sc.Stats(); st.Puts != 5 || st.Fallbacks != 0 {
		t.Errorf("stats %+v, want five puts over the socket and none over HTTP", st)
	}
	if got := metricValue(t, s, "dockyard_chunkserver_short_circuit_puts_total"); got != "5" {
		t.Errorf("the server counted %s short-circuit puts, want the 5 it stored (not the refused one)", got)
	}
	// With the socket gone, puts go over HTTP.
	server.CloseShortCircuit(s)
	data := randBytes(9, 1000)
	if sum, err := c.Put(ctx, s.Addr(), "0000000000000302.0", data); err != nil || sum != chunkserver.Sum(data) {
		t.Fatalf("put with the socket gone = %016x, %v", sum, err)
	}
	if st := sc.Stats(); st.Fallbacks != 1 {
		t.Errorf("stats %+v, want one put over HTTP", st)
	}
}

// metricValue returns the value of the sample named name (labels included)
// in s's /metrics, or "" if there is none.
func metricValue(t *testing.T, s *server.Server, name string) string {
	t.Helper()
	for line := range strings.SplitSeq(scrape(t, s), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}
