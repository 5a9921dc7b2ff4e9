package chunkserver_test

import (
	"errors"
	"os/exec"
	"strings"
	"testing"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/metaserver"
)

func TestValidName(t *testing.T) {
	good := []string{metaserver.ShardName(0, 0), metaserver.ShardName(1<<64-1, 5), "abc.12", "0.0"}
	bad := []string{"", ".", "..", "0.", ".0", "abc", "ABC.1", "abc.1f", "ab/c.1", "../x.1", "abc.1.2", "abc.-1",
		"abc.tmp.1", "abc .1", strings.Repeat("a", 70) + ".1"}
	for _, n := range good {
		if !chunkserver.ValidName(n) {
			t.Errorf("ValidName(%q) = false", n)
		}
	}
	for _, n := range bad {
		if chunkserver.ValidName(n) {
			t.Errorf("ValidName(%q) = true", n)
		}
	}
}

func TestParseName(t *testing.T) {
	for _, tc := range []struct {
		id    metaserver.ChunkID
		index int
	}{{0, 0}, {1, 5}, {0xdeadbeef, 13}, {1<<64 - 1, 2}} {
		chunk, index, err := chunkserver.ParseName(metaserver.ShardName(tc.id, tc.index))
		if err != nil || metaserver.ChunkID(chunk) != tc.id || index != tc.index {
			t.Errorf("ParseName(ShardName(%d, %d)) = %d, %d, %v", tc.id, tc.index, chunk, index, err)
		}
	}
	for _, n := range []string{"x.1", "1ffffffffffffffff.1", "1.99999999999"} {
		if _, _, err := chunkserver.ParseName(n); !errors.Is(err, chunkserver.ErrBadName) {
			t.Errorf("ParseName(%q) = %v, want ErrBadName", n, err)
		}
	}
}

func TestSumFormat(t *testing.T) {
	data := []byte("dockyard")
	s := chunkserver.Sum(data)
	got, err := chunkserver.ParseSum(chunkserver.FormatSum(s))
	if err != nil || got != s {
		t.Errorf("ParseSum(FormatSum(%x)) = %x, %v", s, got, err)
	}
	if len(chunkserver.FormatSum(1)) != 16 {
		t.Errorf("FormatSum(1) = %q, want 16 digits", chunkserver.FormatSum(1))
	}
	for _, bad := range []string{"", "xyz", "12345678901234567"} {
		if _, err := chunkserver.ParseSum(bad); err == nil {
			t.Errorf("ParseSum(%q) succeeded", bad)
		}
	}
}

// TestDependencies keeps the chunkserver packages on their side of the
// layering: no HTTP framework, no FUSE, no metaserver internals.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/dockyard/dockyard/chunkserver/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"github.com/labstack/echo", "github.com/hanwen/go-fuse",
			"github.com/dockyard/dockyard/metaserver/", "github.com/dockyard/dockyard/fs", "github.com/prometheus/"} {
			if strings.HasPrefix(dep, banned) {
				t.Errorf("chunkserver depends on %s", dep)
			}
		}
	}
}
