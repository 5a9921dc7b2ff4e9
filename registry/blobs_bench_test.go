package registry

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/dockyard/dockyard/local"
)

// BenchmarkBlobPush128MiB and BenchmarkBlobPull128MiB measure the registry's
// own cost of a layer push and pull, the way crane does them: POST, one
// streamed PATCH with the whole layer, PUT ?digest=; then a GET of the whole
// blob. The registry runs over real HTTP on loopback in front of a local
// cluster as `dockyard serve` starts it (4+2 over six disk chunkservers,
// shards fsynced, in-process shard transport). Take -cpuprofile here when
// tuning the upload and download paths.
func BenchmarkBlobPush128MiB(b *testing.B) { benchPush(b, 1) }

// BenchmarkBlobPush4x128MiB pushes four layers at once, as crane does by
// default (remote.WithJobs(4)).
func BenchmarkBlobPush4x128MiB(b *testing.B) { benchPush(b, 4) }

func benchPush(b *testing.B, jobs int) {
	srv, _ := benchRegistry(b)
	blobs := make([][]byte, jobs)
	for j := range blobs {
		blobs[j] = benchBlob(128 << 20)
	}
	b.SetBytes(int64(jobs) * 128 << 20)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		var wg sync.WaitGroup
		for j, data := range blobs {
			// A new digest every round, so nothing is deduplicated.
			data[0], data[1], data[2] = byte(i), byte(i>>8), byte(j)
			wg.Go(func() { pushBlob(b, srv.URL, "bench/push", data) })
		}
		wg.Wait()
	}
}

func BenchmarkBlobPull128MiB(b *testing.B) {
	srv, _ := benchRegistry(b)
	data := benchBlob(128 << 20)
	d := pushBlob(b, srv.URL, "bench/pull", data)
	if d == "" {
		b.FailNow()
	}
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		resp, err := http.Get(srv.URL + "/v2/bench/pull/blobs/" + d)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != int64(len(data)) || resp.StatusCode != http.StatusOK {
			b.Fatalf("GET blob: %d bytes, status %d, %v", n, resp.StatusCode, err)
		}
	}
}

func benchRegistry(b *testing.B) (*httptest.Server, *local.Cluster) {
	b.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	c, err := local.Start(local.Config{Dir: b.TempDir(), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	reg, err := NewOnDFS(context.Background(), Config{Logger: quiet}, c.FS)
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(reg.Handler())
	b.Cleanup(srv.Close)
	return srv, c
}

func benchBlob(n int) []byte {
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(3, 3))
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	return data
}

// pushBlob uploads data as crane does and returns its digest, or fails b
// (safe to call from several goroutines) and returns "".
func pushBlob(b *testing.B, base, repo string, data []byte) string {
	sum := sha256.Sum256(data)
	d := "sha256:" + hex.EncodeToString(sum[:])
	resp, err := http.Post(base+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if err != nil {
		b.Error(err)
		return ""
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		b.Errorf("POST upload: %s", resp.Status)
		return ""
	}
	loc := resp.Header.Get("Location")
	// Streamed: no length, so the body arrives chunked, as from crane.
	req, err := http.NewRequest(http.MethodPatch, base+loc, io.MultiReader(bytes.NewReader(data)))
	if err != nil {
		b.Error(err)
		return ""
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		b.Error(err)
		return ""
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		b.Errorf("PATCH upload: %s", resp.Status)
		return ""
	}
	req, err = http.NewRequest(http.MethodPut, fmt.Sprintf("%s%s?digest=%s", base, resp.Header.Get("Location"), d), nil)
	if err != nil {
		b.Error(err)
		return ""
	}
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		b.Error(err)
		return ""
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b.Errorf("PUT upload: %s", resp.Status)
		return ""
	}
	return d
}
