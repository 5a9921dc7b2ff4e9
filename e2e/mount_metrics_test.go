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
	"time"
)

// scrapeMount GETs http://ADDR/metrics of a mount on dir and returns each
// series' value by metric name, checking every series names the mount.
func scrapeMount(t *testing.T, addr, dir string) map[string]float64 {
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
		if !strings.Contains(series, `mount="`+dir+`"`) {
			t.Fatalf("series %q does not name the mount %s", line, dir)
		}
		if out[name], err = strconv.ParseFloat(value, 64); err != nil {
			t.Fatalf("series %q: %v", line, err)
		}
	}
	return out
}

// TestMountMetrics: `dockyard mount --metrics-listen` serves the mount's
// counters at /metrics; reading a file another mount wrote moves the READ
// and chunkserver byte counters by at least its size. An image mount counts
// the layer bytes its lazy reads fetch.
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

	before := scrapeMount(t, addr, b)
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
	after := scrapeMount(t, addr, b)
	for _, name := range []string{"dockyard_mount_read_bytes_total", "dockyard_mount_chunkserver_read_bytes_total"} {
		if moved := after[name] - before[name]; moved < float64(len(want)) {
			t.Errorf("%s moved by %v after reading %d bytes", name, moved, len(want))
		}
	}
	if after["dockyard_mount_read_errors_total"] != 0 {
		t.Errorf("%v read errors on a healthy cluster", after["dockyard_mount_read_errors_total"])
	}

	t.Run("image", func(t *testing.T) {
		RequireTool(t, "crane")
		ref := c.Registry + "/" + uniqueRepo("metrics") + ":v1"
		Run(t, time.Minute, "crane", "append", "--insecure", "-f", busyboxLayer(t), "-t", ref)
		addr, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		startMount(t, c.Meta, dir, "--image", ref, "--metrics-listen", addr)
		bb, err := os.ReadFile(filepath.Join(dir, "bin/busybox"))
		if err != nil {
			t.Fatal(err)
		}
		got := scrapeMount(t, addr, dir)
		// The file's bytes come from the gzip layer through the lazy
		// reader's own client: counted only if the image's clients share
		// their counters.
		if got["dockyard_mount_read_bytes_total"] < float64(len(bb)) || got["dockyard_mount_chunkserver_read_bytes_total"] == 0 {
			t.Errorf("after reading %d bytes of an image: %v", len(bb), got)
		}
		if _, ok := got["dockyard_mount_metadata_cache_live"]; ok {
			t.Error("metadata cache series from an image mount, which has no metadata cache")
		}
	})
}
