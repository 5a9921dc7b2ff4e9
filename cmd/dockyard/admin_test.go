package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/dockyard/dockyard/metaserver"
)

// TestPrintChunkserversHidesRemoved: removed chunkservers stay in the
// metaserver for good; the table leaves them out and says how many, unless
// asked for all.
func TestPrintChunkserversHidesRemoved(t *testing.T) {
	cs := []metaserver.ChunkserverInfo{
		{ID: "cs-b", Addr: "10.0.0.2:9600", State: metaserver.StateRemoved},
		{ID: "cs-a", Addr: "10.0.0.1:9600", State: metaserver.StateUp, Shards: 7, Labels: map[string]string{"zone": "a"}},
		{ID: "cs-c", Addr: "10.0.0.3:9600", State: metaserver.StateDraining, Shards: 2},
	}
	var b bytes.Buffer
	printChunkservers(&b, cs, false)
	out := b.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[1], "cs-a ") || !strings.HasPrefix(lines[2], "cs-c ") ||
		!strings.Contains(lines[3], "1 removed not shown") || strings.Contains(out, "cs-b") {
		t.Fatalf("default listing:\n%s", out)
	}
	if !strings.Contains(lines[1], "zone=a") || !strings.Contains(lines[2], "draining") {
		t.Fatalf("row contents:\n%s", out)
	}
	b.Reset()
	printChunkservers(&b, cs, true)
	out = b.String()
	lines = strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.HasPrefix(lines[2], "cs-b ") || !strings.Contains(lines[2], "removed") || strings.Contains(out, "not shown") {
		t.Fatalf("--all listing:\n%s", out)
	}
}
