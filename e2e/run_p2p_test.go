package e2e

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRunP2P: two `dockyard run --p2p-listen` of one image on the same
// cluster, the second started while the first still runs: the second reads
// the image's blocks from the first rather than the chunkservers, and the
// bytes are right.
func TestRunP2P(t *testing.T) {
	requireRoot(t)
	RequireTool(t, "crane")
	RequireTool(t, "runc")
	needFUSE(t)
	c := SharedCluster(t)
	ref := c.Registry + "/e2e/p2p:v1"
	Run(t, time.Minute, "crane", "append", "--insecure", "-f", busyboxLayer(t), "-t", ref)

	// A second layer with 6 MiB of random bytes: nothing compresses it
	// away, and it spans two chunks.
	blob := make([]byte, 6<<20)
	rand.Read(blob)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	tw.WriteHeader(&tar.Header{Name: "data/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "data/blob", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(blob))})
	tw.Write(blob)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer := filepath.Join(t.TempDir(), "blob.tar")
	if err := os.WriteFile(layer, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	Run(t, time.Minute, "crane", "append", "--insecure", "-b", ref, "-f", layer, "-t", ref)

	bin := Binary(t)
	state := t.TempDir()
	portA, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	portB, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	// No span cache: each run must fetch the layer's bytes itself.
	common := []string{"run", "--meta", c.Meta, "--state-dir", state, "--span-cache-dir", "", "--verbose"}

	// The first run reads the blob, says so, and stays up to serve it until
	// the test lets it go (a file in a host directory bound into it).
	sig := t.TempDir()
	first := exec.Command(bin, append(common, "--p2p-listen", portA, "-v", sig+":/sig", ref, "--",
		"sh", "-c", "cat /data/blob > /dev/null && echo ready && while [ ! -e /sig/done ]; do sleep 0.1; done")...)
	var firstErr bytes.Buffer
	first.Stderr = &firstErr
	out, err := first.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := first.Start(); err != nil {
		t.Fatal(err)
	}
	firstDone := make(chan error, 1)
	defer func() {
		os.WriteFile(filepath.Join(sig, "done"), nil, 0o644)
		select {
		case <-firstDone:
		case <-time.After(30 * time.Second):
			first.Process.Kill()
			t.Errorf("the first run did not end within 30 s of being let go")
		}
	}()
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		said := false
		for sc.Scan() {
			if sc.Text() == "ready" && !said {
				said = true
				ready <- true
			}
		}
		if !said {
			ready <- false
		}
		firstDone <- first.Wait()
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatalf("the first run ended before reading the blob:\n%s", firstErr.String())
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("the first run did not read the blob within 2 minutes:\n%s", firstErr.String())
	}
	// Announcements go out every 250 ms.
	time.Sleep(time.Second)

	got, err := RunErr(2*time.Minute, bin, append(common, "--p2p-listen", portB, ref, "--", "sh", "-c", "cat /data/blob | wc -c")...)
	if err != nil {
		t.Fatalf("second run: %v\n%s", err, got)
	}
	if !strings.Contains(got, strconv.Itoa(len(blob))+"\n") {
		t.Fatalf("second run read the wrong size:\n%s", got)
	}
	m := regexp.MustCompile(`p2p: (\d+) blocks \((\d+) bytes\) read from peers, (\d+) peer answers failed verification`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("second run printed no p2p summary:\n%s", got)
	}
	if peerBytes, _ := strconv.Atoi(m[2]); peerBytes < len(blob)/2 || m[3] != "0" {
		t.Fatalf("second run: %s bytes from peers for a %d-byte blob, %s failed verification\n%s", m[2], len(blob), m[3], got)
	}
	t.Logf("second run: %s blocks, %s bytes read from the first", m[1], m[2])
}
