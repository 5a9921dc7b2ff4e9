package e2e

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSearchDocker: `docker search REGISTRY/TERM` against dockyard serve
// finds the pushed repositories whose names contain TERM, and only those.
// dockerd pings /v1/_ping and asks /v1/search over plain HTTP, since
// 127.0.0.0/8 is an insecure registry by default.
func TestSearchDocker(t *testing.T) {
	RequireTool(t, "docker")
	if out, err := RunErr(30*time.Second, "docker", "info"); err != nil {
		Missing(t, "no docker daemon answers: %v\n%s", err, out)
	}
	reg := registryAddr(t)
	rootfs := rootfsTar(t)
	id := strings.TrimPrefix(uniqueRepo("search"), "e2e/search-")
	repos := []string{
		"e2e/search-" + id + "-alpha",
		"e2e/search-" + id + "-beta",
		"e2e/other-" + id,
	}
	src := reg + "/" + repos[0] + ":v1"
	t.Cleanup(func() { RunErr(time.Minute, "docker", "rmi", "-f", src) })
	Run(t, time.Minute, "docker", "import", rootfs, src)
	for _, repo := range repos {
		ref := reg + "/" + repo + ":v1"
		if ref != src {
			Run(t, time.Minute, "docker", "tag", src, ref)
			t.Cleanup(func() { RunErr(time.Minute, "docker", "rmi", ref) })
		}
		Run(t, 5*time.Minute, "docker", "push", ref)
	}

	search := func(term string) []string {
		t.Helper()
		out := Run(t, time.Minute, "docker", "search", "--no-trunc", "--limit", "100", "--format", "{{.Name}}", reg+"/"+term)
		names := strings.Fields(out)
		slices.Sort(names)
		return names
	}
	for _, tc := range []struct {
		term string
		want []string
	}{
		{"search-" + id, repos[:2]},
		{"SEARCH-" + id + "-BETA", repos[1:2]},
		{id, repos},
		{"e2e/other-" + id, repos[2:]},
		{"e2e/search-" + id + "-alpha", repos[:1]},
		{"nothing-" + id, nil},
	} {
		want := slices.Clone(tc.want)
		slices.Sort(want)
		if got := search(tc.term); !slices.Equal(got, want) {
			t.Errorf("docker search %s/%s = %q, want %q", reg, tc.term, got, want)
		}
	}
}
