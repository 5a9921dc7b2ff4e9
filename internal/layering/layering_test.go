// Package layering guards the import direction DESIGN.md fixes:
//
//	cmd -> registry -> converter -> fs -> {metaserver, chunkserver} clients
//
// metaserver and chunkserver never import echo, go-fuse, or each other's
// server code; the client root packages stay free of Raft so every client does
// not drag the consensus library along.
package layering

import (
	"os/exec"
	"strings"
	"testing"
)

const mod = "github.com/dockyard/dockyard"

// rule forbids packages matching `from` (a prefix of the import path relative
// to the module) from depending, directly or transitively, on anything whose
// import path starts with one of `deny` (relative to the module when it does
// not contain a dot in its first element).
type rule struct {
	from string
	deny []string
	why  string
}

var rules = []rule{
	{"metaserver", []string{"github.com/labstack/echo", "github.com/hanwen/go-fuse", "chunkserver/server", "chunkserver/store", "fs", "registry", "converter", "cmd", "local"},
		"the metaserver owns state only; it never serves HTTP through echo, mounts, or runs chunkserver code"},
	{"chunkserver", []string{"github.com/labstack/echo", "github.com/hanwen/go-fuse", "metaserver/server", "fs", "registry", "converter", "cmd", "local"},
		"chunkservers store shards; they talk to the metaserver only through its client"},
	{"local", []string{"registry", "converter", "cmd"},
		"a local cluster is storage only; the command line puts the registry on top"},
	{"metaserver!", []string{"github.com/hashicorp/raft"},
		"the metaserver root package is the wire types and client; Raft lives in metaserver/server"},
	{"chunkserver!", []string{"github.com/klauspost/reedsolomon"},
		"the chunkserver client does not encode; repair does, in chunkserver/server"},
	{"fs!", []string{"github.com/labstack/echo", "github.com/hanwen/go-fuse", "metaserver/server", "chunkserver/server", "chunkserver/store", "registry", "converter", "cmd", "local"},
		"fs is the client layer: FUSE adapts it (fs/fuse), nothing below it knows about FUSE"},
	{"fs/fuse", []string{"metaserver/server", "chunkserver/server", "chunkserver/store", "registry", "cmd", "local"},
		"the FUSE adapter sits on the fs client"},
	{"converter", []string{"github.com/labstack/echo", "github.com/hanwen/go-fuse", "metaserver/server", "chunkserver/server", "chunkserver/store", "registry", "cmd", "local"},
		"the converter works over the fs client"},
	{"container", []string{"github.com/labstack/echo", "metaserver/server", "chunkserver/server", "chunkserver/store", "registry", "cmd", "local"},
		"containers run over any lower directory; the command line wires the lazy mount in"},
	{"image", []string{"metaserver/server", "chunkserver/server", "chunkserver/store", "registry", "cmd", "local"},
		"running an image speaks the registry protocol; it never reaches into a registry's records"},
	{"volume", []string{"github.com/labstack/echo", "metaserver/server", "chunkserver/server", "chunkserver/store", "registry", "converter", "cmd", "local"},
		"volumes are directories of the file system, mounted through fs/fuse; a plugin runs against any cluster"},
	{"registry", []string{"github.com/hanwen/go-fuse", "metaserver/server", "chunkserver/server", "chunkserver/store", "cmd", "local"},
		"registries run against a cluster through its clients, so several can serve one cluster"},
}

func TestImportDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, mod+"/...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	checked := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fields := strings.Fields(line)
		pkg := strings.TrimPrefix(strings.TrimPrefix(fields[0], mod), "/")
		for _, r := range rules {
			if !matches(r.from, pkg) {
				continue
			}
			checked++
			for _, dep := range fields[1:] {
				for _, d := range r.deny {
					if denied(d, dep) {
						t.Errorf("%s imports %s: %s", pkg, dep, r.why)
					}
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no package matched any rule; the module path or layout changed")
	}
}

// matches reports whether pkg falls under from: "x" means x and everything
// below it, "x!" means the package x alone.
func matches(from, pkg string) bool {
	if exact, ok := strings.CutSuffix(from, "!"); ok {
		return pkg == exact
	}
	return pkg == from || strings.HasPrefix(pkg, from+"/")
}

func denied(d, dep string) bool {
	if !strings.Contains(strings.SplitN(d, "/", 2)[0], ".") {
		d = mod + "/" + d
	}
	return dep == d || strings.HasPrefix(dep, d+"/")
}

func TestRulesCatchAViolation(t *testing.T) {
	// The checker itself must be able to fail: a fake dependency list that breaks
	// a rule is reported.
	if !denied("registry", mod+"/registry") || !denied("github.com/hanwen/go-fuse", "github.com/hanwen/go-fuse/v2/fs") {
		t.Fatal("denied() misses a direct match")
	}
	if denied("fs", mod+"/fsx") {
		t.Fatal("denied() matches a mere prefix of a path element")
	}
	if !matches("fs!", "fs") || matches("fs!", "fs/fuse") || !matches("fs", "fs/fuse") {
		t.Fatal("matches() mishandles exact and subtree rules")
	}
}
