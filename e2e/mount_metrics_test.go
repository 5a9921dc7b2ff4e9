package e2e

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestMountMetrics: `dockyard mount --metrics-listen` serves the mount's
// counters at /metrics; reading a file another mount wrote moves the READ
// and chunkserver byte counters by at least its size.
func TestMountMetrics(t *testing.T) {
	needFUSE(t)
	c := SharedCluster(t)
	addr, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	a, b := t.TempDir(), t.TempDir()
	startMount(t, c.Meta, a)
	startMount(t, c.Meta, b, "--metrics-listen", addr)

	scrape := func() map[string]float64 {
		t.Helper()
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /metrics: %d, %v\n%s", resp.StatusCode, err, body)
		}
		out := map[string]float64{}
		for _, line := range strings.Split(string(body), "\n") {
			series, value, ok := strings.Cut(line, " ")
			name, _, _ := strings.Cut(series, "{")
			if !ok || strings.HasPrefix(line, "#") {
				continue
			}
			if !strings.Contains(series, `mount="`+b+`"`) {
				t.Fatalf("series %q does not name the mount %s", line, b)
			}
			if out[name], err = strconv.ParseFloat(value, 64); err != nil {
				t.Fatalf("series %q: %v", line, err)
			}
		}
		return out
	}
	before := scrape()
	if _, ok := before["dockyard_mount_metadata_cache_live"]; !ok {
		t.Fatalf("no metadata cache series from a mount that has one: %v", before)
	}

	want := bytes.Repeat([]byte("mount metrics "), 200000)
	if err := os.WriteFile(filepath.Join(a, "e2e-metrics"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(filepath.Join(a, "e2e-metrics")) })
	got, err := os.ReadFile(filepath.Join(b, "e2e-metrics"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("reading through the second mount: %v, equal %v", err, bytes.Equal(got, want))
	}
	after := scrape()
	for _, name := range []string{"dockyard_mount_read_bytes_total", "dockyard_mount_chunkserver_read_bytes_total"} {
		if moved := after[name] - before[name]; moved < float64(len(want)) {
			t.Errorf("%s moved by %v after reading %d bytes", name, moved, len(want))
		}
	}
	if after["dockyard_mount_read_errors_total"] != 0 {
		t.Errorf("%v read errors on a healthy cluster", after["dockyard_mount_read_errors_total"])
	}
}
