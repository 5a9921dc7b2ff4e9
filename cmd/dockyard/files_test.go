package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	csserver "github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/metaserver"
	msserver "github.com/dockyard/dockyard/metaserver/server"
)

// filesTestClient is an fs client over an in-process metaserver and six
// in-memory chunkservers.
func filesTestClient(t *testing.T) *fs.Client {
	t.Helper()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	api := msserver.NewMemory().API()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for i := range 6 {
		s, err := csserver.New(csserver.Config{
			Store: store.NewMemory(0), ID: metaserver.ServerID(fmt.Sprintf("cs%d", i)),
			Cluster: api, Chunks: api, HeartbeatInterval: 20 * time.Millisecond, ScrubRate: -1, Logger: quiet,
		})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
	}
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(hc.CloseIdleConnections)
	deadline := time.Now().Add(10 * time.Second)
	for {
		cs, err := api.Chunkservers(ctx)
		if err == nil && len(cs) == 6 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("chunkservers did not register")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return fs.New(api, chunkserver.NewClient(hc), fs.Options{ChunkSize: 256 << 10, Logger: quiet})
}

func TestCpLsStatRm(t *testing.T) {
	ctx := context.Background()
	c := filesTestClient(t)
	dir := t.TempDir()
	data := bytes.Repeat([]byte("dockyard"), 100_000) // 800 KB: several chunks
	local := filepath.Join(dir, "in.bin")
	if err := os.WriteFile(local, data, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := c.MkdirAll(ctx, "/d", 0o755); err != nil {
		t.Fatal(err)
	}
	// local -> dfs directory keeps the name and mode
	if err := runCp(ctx, c, local, "dfs:/d/", nil, nil); err != nil {
		t.Fatal(err)
	}
	// dfs -> dfs, dfs -> local, dfs -> stdout, stdin -> dfs
	if err := runCp(ctx, c, "dfs:/d/in.bin", "dfs:/d/copy", nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := runCp(ctx, c, "dfs:/d/copy", dir, nil, nil); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "copy"))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("round trip through the DFS: %v, equal=%v", err, bytes.Equal(got, data))
	}
	var out bytes.Buffer
	if err := runCp(ctx, c, "dfs:/d/in.bin", "-", nil, &out); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatalf("cp to stdout: %v", err)
	}
	if err := runCp(ctx, c, "-", "dfs:/d/stdin", strings.NewReader("from stdin"), nil); err != nil {
		t.Fatal(err)
	}

	out.Reset()
	if err := runLs(ctx, c, "/d", &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(strings.TrimSpace(lines[1]), "-rw-r-----") ||
		!strings.Contains(lines[1], " 800000 ") || !strings.HasSuffix(lines[1], "in.bin") {
		t.Fatalf("ls output:\n%s", out.String())
	}
	out.Reset()
	if err := runStat(ctx, c, "/d/stdin", &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "size:  10\n") || !strings.Contains(out.String(), "extents: 1\n") {
		t.Fatalf("stat output:\n%s", out.String())
	}

	if err := runMkdir(ctx, c, "/d/sub", 0o750, false); err != nil {
		t.Fatal(err)
	}
	if a, err := c.Stat(ctx, "/d/sub"); err != nil || !a.IsDir() || a.Mode&0o7777 != 0o750 {
		t.Fatalf("mkdir made %+v, %v", a, err)
	}
	if err := runMkdir(ctx, c, "/d/sub", 0o755, false); err == nil || !strings.Contains(err.Error(), "file exists") {
		t.Fatalf("mkdir of an existing directory: %v", err)
	}
	if err := runMkdir(ctx, c, "/x/y/z", 0o755, false); err == nil || !strings.Contains(err.Error(), "no such file or directory") {
		t.Fatalf("mkdir without its parent: %v", err)
	}
	if err := runMkdir(ctx, c, "/d/stdin/z", 0o755, false); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("mkdir under a file: %v", err)
	}
	for range 2 { // -p: parents made, and no error the second time
		if err := runMkdir(ctx, c, "/x/y/z", 0o755, true); err != nil {
			t.Fatal(err)
		}
	}
	if err := runRm(ctx, c, "/d", false); err == nil || !strings.Contains(err.Error(), "directory not empty") {
		t.Fatalf("rm of a non-empty directory without -r: %v", err)
	}
	if err := runRm(ctx, c, "/d", true); err != nil {
		t.Fatal(err)
	}
	if err := runStat(ctx, c, "/d", io.Discard); err == nil || !strings.Contains(err.Error(), "no such file or directory") {
		t.Fatalf("stat after rm -r: %v", err)
	}
	if err := runCp(ctx, c, "dfs:/missing", dir, nil, nil); err == nil || !strings.Contains(err.Error(), "cp dfs:/missing") {
		t.Fatalf("cp of a missing file: %v", err)
	}
}

func TestDFSPathArgs(t *testing.T) {
	for arg, want := range map[string]string{"dfs:/a/b/": "/a/b", "dfs:": "/", "dfs:/": "/"} {
		if got, err := mustDFSPath(arg); err != nil || got != want {
			t.Fatalf("%q: %q %v", arg, got, err)
		}
	}
	for _, arg := range []string{"/local", "dfs:rel"} {
		if _, err := mustDFSPath(arg); err == nil {
			t.Fatalf("%q accepted", arg)
		}
	}
}
