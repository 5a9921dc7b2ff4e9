package fuse

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/dockyard/dockyard/chunkserver"
	dfs "github.com/dockyard/dockyard/fs"
)

// scrape GETs /metrics from the mount's handler and returns each series'
// value by metric name, checking that every series names the mount.
func scrape(t *testing.T, srv *Server) map[string]float64 {
	t.Helper()
	h := MetricsHandler(srv)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", rec.Code, rec.Body)
	}
	out := map[string]float64{}
	label := `{mount="` + srv.Dir + `"}`
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		series, value, ok := strings.Cut(line, " ")
		name, labels, _ := strings.Cut(series, "{")
		if !ok || "{"+labels != label {
			t.Fatalf("series %q: want exactly the label %s", line, label)
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			t.Fatalf("series %q: %v", line, err)
		}
		out[name] = v
	}
	return out
}

// dropPages makes the kernel forget the pages it keeps of path, so the next
// read reaches the mount again.
func dropPages(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

// TestMetricsFollowReads: reading a file another mount wrote moves the
// mount's READ and chunkserver byte counters by at least its size and looks
// every block up in the block cache. The kernel keeps what it read, so the
// block cache lets go of what the reader consumed (File.ReadDataKept): once
// the kernel dropped its pages too, a second read fetches again whatever
// the block cache no longer held.
func TestMetricsFollowReads(t *testing.T) {
	c := newCluster(t)
	a, _ := c.mount(t, Options{})
	b, srvB := c.mount(t, Options{})

	const size = 3<<20 + 123
	data := randomBytes(t, size)
	if err := os.WriteFile(filepath.Join(a, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	before := scrape(t, srvB)
	for _, name := range []string{"dockyard_mount_metadata_cache_live", "dockyard_mount_block_cache_hits_total", "dockyard_mount_read_errors_total"} {
		if _, ok := before[name]; !ok {
			t.Fatalf("%s missing from the scrape", name)
		}
	}
	for name := range before {
		if strings.HasPrefix(name, "dockyard_mount_p2p_") {
			t.Fatalf("%s served by a mount without P2P", name)
		}
	}

	path := filepath.Join(b, "f")
	if got := readFile(t, path); !bytes.Equal(got, data) {
		t.Fatal("first read differs")
	}
	cold := scrape(t, srvB)
	moved := func(after, before map[string]float64, name string) float64 { return after[name] - before[name] }
	for _, name := range []string{"dockyard_mount_read_bytes_total", "dockyard_mount_chunkserver_read_bytes_total"} {
		if moved(cold, before, name) < size {
			t.Fatalf("after reading %d bytes, %s moved by %v", size, name, moved(cold, before, name))
		}
	}
	const blocks = (size + 128<<10 - 1) / (128 << 10)
	lookups := func(after, before map[string]float64) float64 {
		return moved(after, before, "dockyard_mount_block_cache_hits_total") + moved(after, before, "dockyard_mount_block_cache_misses_total")
	}
	if lookups(cold, before) < blocks {
		t.Fatalf("cold read of %d blocks: %v block cache lookups", blocks, lookups(cold, before))
	}
	if cold["dockyard_mount_read_requests_total"] == 0 || cold["dockyard_mount_metadata_cache_hits_total"]+cold["dockyard_mount_metadata_cache_misses_total"] == 0 {
		t.Fatalf("no READ or metadata lookups counted: %v", cold)
	}
	if cold["dockyard_mount_read_errors_total"] != 0 || cold["dockyard_mount_degraded_reads_total"] != 0 || cold["dockyard_mount_shard_read_errors_total"] != 0 {
		t.Fatalf("errors or degraded reads on a healthy cluster: %v", cold)
	}

	// Read again from the kernel's pages: nothing reaches the mount.
	if got := readFile(t, path); !bytes.Equal(got, data) {
		t.Fatal("reread differs")
	}
	kept := scrape(t, srvB)
	if moved(kept, cold, "dockyard_mount_read_requests_total") != 0 || lookups(kept, cold) != 0 {
		t.Fatalf("a reread from the page cache moved READs by %v and block lookups by %v",
			moved(kept, cold, "dockyard_mount_read_requests_total"), lookups(kept, cold))
	}

	dropPages(t, path)
	if got := readFile(t, path); !bytes.Equal(got, data) {
		t.Fatal("read after dropping the pages differs")
	}
	warm := scrape(t, srvB)
	if moved(warm, kept, "dockyard_mount_read_requests_total") == 0 {
		t.Skip("the kernel kept its pages despite FADV_DONTNEED; the read never reached the mount")
	}
	if moved(warm, kept, "dockyard_mount_read_bytes_total") < size || lookups(warm, kept) < blocks {
		t.Fatalf("read after dropping the pages: %v bytes through the mount, %v block lookups",
			moved(warm, kept, "dockyard_mount_read_bytes_total"), lookups(warm, kept))
	}
	// What the block cache still held was not fetched again; the rest was.
	if got := moved(warm, kept, "dockyard_mount_chunkserver_read_bytes_total") + kept["dockyard_mount_block_cache_bytes"]; got < size {
		t.Fatalf("read after dropping the pages: fetched plus cached is %v bytes, file has %d", got, size)
	}
}

// TestMetricsP2POnlyWithP2P: a mount whose client takes part in P2P serves
// the P2P series, starting at zero.
func TestMetricsP2POnlyWithP2P(t *testing.T) {
	c := newCluster(t)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	p, err := dfs.NewP2P(c.meta.API(), dfs.P2POptions{Listen: "127.0.0.1:0", Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	_, srv := c.mountWith(t, dfs.New(c.meta.API(), chunkserver.NewClient(nil), dfs.Options{Logger: quiet, P2P: p}), Options{})
	got := scrape(t, srv)
	for _, name := range []string{"dockyard_mount_p2p_peer_blocks_total", "dockyard_mount_p2p_peer_bytes_total",
		"dockyard_mount_p2p_verify_failures_total", "dockyard_mount_p2p_fallbacks_total",
		"dockyard_mount_p2p_served_blocks_total", "dockyard_mount_p2p_served_bytes_total"} {
		v, ok := got[name]
		if !ok || v != 0 {
			t.Fatalf("%s: %v (present %v), want 0 before any read", name, v, ok)
		}
	}
	// This client has no metadata cache: none of its series.
	if _, ok := got["dockyard_mount_metadata_cache_live"]; ok {
		t.Fatal("metadata cache series served by a mount without one")
	}
}

// shortCircuitSeries are the series of a mount whose shard client reads
// local chunkservers through their sockets.
var shortCircuitSeries = []string{
	"dockyard_mount_short_circuit_attached_servers",
	"dockyard_mount_short_circuit_descriptors_total",
	"dockyard_mount_short_circuit_descriptor_reads_total",
	"dockyard_mount_short_circuit_descriptor_read_bytes_total",
	"dockyard_mount_short_circuit_socket_reads_total",
	"dockyard_mount_short_circuit_socket_read_bytes_total",
	"dockyard_mount_short_circuit_puts_total",
	"dockyard_mount_short_circuit_fallbacks_total",
	"dockyard_mount_short_circuit_errors_total",
}

// TestMetricsShortCircuitOnlyWhenEnabled: a mount whose shard client has
// short-circuit reads on serves the short-circuit series; these test
// chunkservers keep their shards in memory and offer no socket, so the
// mount reads over HTTP, attaches none and counts nothing there. A mount
// without short-circuit reads serves none of the series.
func TestMetricsShortCircuitOnlyWhenEnabled(t *testing.T) {
	c := newCluster(t)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	a, _ := c.mount(t, Options{})
	data := randomBytes(t, 1<<20+5)
	if err := os.WriteFile(filepath.Join(a, "f"), data, 0o644); err != nil {
		t.Fatal(err)
	}

	// Closing the idle connections before the servers close spares their
	// shutdown a wait on a spare connection the probes may have dialled.
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	on := chunkserver.NewClient(&http.Client{Transport: tr})
	on.EnableShortCircuit(chunkserver.ShortCircuitOptions{Logger: quiet})
	dirOn, srvOn := c.mountWith(t, dfs.New(c.meta.API(), on, dfs.Options{Logger: quiet}), Options{})
	if got := readFile(t, filepath.Join(dirOn, "f")); !bytes.Equal(got, data) {
		t.Fatal("read through the short-circuit mount differs")
	}
	got := scrape(t, srvOn)
	if got["dockyard_mount_chunkserver_read_bytes_total"] < float64(len(data)) {
		t.Fatalf("the read of %d bytes fetched %v from chunkservers", len(data), got["dockyard_mount_chunkserver_read_bytes_total"])
	}
	for _, name := range shortCircuitSeries {
		v, ok := got[name]
		if !ok || v != 0 {
			t.Errorf("%s: %v (present %v), want 0 with no chunkserver offering a socket", name, v, ok)
		}
	}

	_, srvOff := c.mountWith(t, dfs.New(c.meta.API(), chunkserver.NewClient(nil), dfs.Options{Logger: quiet}), Options{})
	for name := range scrape(t, srvOff) {
		if strings.HasPrefix(name, "dockyard_mount_short_circuit_") {
			t.Errorf("%s served by a mount without short-circuit reads", name)
		}
	}
}
