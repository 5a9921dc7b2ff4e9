package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// startRegistry runs `dockyard registry` against the cluster's metaserver
// and returns its address; the process is stopped when the test ends.
func startRegistry(t *testing.T, meta string) string {
	t.Helper()
	addr, err := FreePort()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "registry.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(Binary(t), "registry", "--listen", addr, "--meta", meta, "--gc-interval", "0")
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); logf.Close() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("dockyard registry exited: %v\n%s", err, b)
		default:
		}
		if res, err := http.Get("http://" + addr + "/v2/"); err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return addr
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	b, _ := os.ReadFile(logPath)
	t.Fatalf("dockyard registry did not answer on %s\n%s", addr, b)
	return ""
}

func httpDo(t *testing.T, method, url string, hdr map[string]string, body []byte, want int) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != want {
		t.Fatalf("%s %s: %d, want %d: %s", method, url, res.StatusCode, want, b)
	}
	res.Body = io.NopCloser(bytes.NewReader(b))
	return res
}

// TestRegistryTwoInstances runs a second registry (`dockyard registry`) on
// the cluster of `dockyard serve`: a chunked upload begun on one is finished
// on the other, and what one stores the other serves.
func TestRegistryTwoInstances(t *testing.T) {
	c := SharedCluster(t)
	a := "http://" + c.Registry
	b := "http://" + startRegistry(t, c.Meta)
	repo := uniqueRepo("multi")

	data := bytes.Repeat([]byte("two registries, one cluster. "), 200_000) // ~5.8 MB: more than one chunk
	sum := sha256.Sum256(data)
	digest := "sha256:" + hex.EncodeToString(sum[:])
	half := len(data) / 2

	loc := httpDo(t, "POST", a+"/v2/"+repo+"/blobs/uploads/", nil, nil, http.StatusAccepted).Header.Get("Location")
	loc = httpDo(t, "PATCH", a+loc, map[string]string{"Content-Range": fmt.Sprintf("0-%d", half-1)}, data[:half], http.StatusAccepted).Header.Get("Location")
	st := httpDo(t, "GET", b+loc, nil, nil, http.StatusNoContent)
	if st.Header.Get("Range") != fmt.Sprintf("0-%d", half-1) {
		t.Fatalf("second registry sees Range %q", st.Header.Get("Range"))
	}
	loc = httpDo(t, "PATCH", b+loc, map[string]string{"Content-Range": fmt.Sprintf("%d-%d", half, len(data)-1)}, data[half:], http.StatusAccepted).Header.Get("Location")
	httpDo(t, "PUT", b+loc+"?digest="+digest, nil, nil, http.StatusCreated)

	got := httpDo(t, "GET", a+"/v2/"+repo+"/blobs/"+digest, nil, nil, http.StatusOK)
	body, _ := io.ReadAll(got.Body)
	if !bytes.Equal(body, data) {
		t.Fatalf("first registry serves %d bytes that differ from the %d uploaded", len(body), len(data))
	}
	man := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + digest + `","size":` + fmt.Sprint(len(data)) + `},"layers":[]}`)
	httpDo(t, "PUT", a+"/v2/"+repo+"/manifests/v1", map[string]string{"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, man, http.StatusCreated)
	res := httpDo(t, "GET", b+"/v2/"+repo+"/manifests/v1", nil, nil, http.StatusOK)
	if mb, _ := io.ReadAll(res.Body); !bytes.Equal(mb, man) {
		t.Fatalf("second registry serves manifest %s", mb)
	}
}
