package e2e

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/image"
	"github.com/dockyard/dockyard/metaserver"
)

// node is what the comparison looks at for one path.
type node struct {
	Type   string
	Mode   os.FileMode
	Uid    uint32
	Gid    uint32
	Size   int64
	Link   string
	SHA256 string
	Rdev   uint64
	Xattrs string
	// Group names the hard-link group: the first path (sorted) sharing the inode.
	Group string
}

// snapshotTree walks root and records every path below it.
func snapshotTree(t *testing.T, root string) map[string]node {
	t.Helper()
	out := map[string]node{}
	inodes := map[uint64][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		n := node{Mode: fi.Mode(), Uid: st.Uid, Gid: st.Gid}
		switch {
		case fi.Mode().IsRegular():
			n.Type, n.Size = "file", fi.Size()
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err != nil {
				return fmt.Errorf("reading %s: %w", rel, err)
			}
			n.SHA256 = hex.EncodeToString(h.Sum(nil))
			inodes[st.Ino] = append(inodes[st.Ino], rel)
		case fi.IsDir():
			n.Type = "dir"
		case fi.Mode()&os.ModeSymlink != 0:
			n.Type = "symlink"
			n.Link, err = os.Readlink(p)
			if err != nil {
				return err
			}
		case fi.Mode()&os.ModeNamedPipe != 0:
			n.Type = "fifo"
		case fi.Mode()&os.ModeDevice != 0:
			n.Type, n.Rdev = "device", uint64(st.Rdev)
		default:
			n.Type = "other"
		}
		if n.Type == "file" || n.Type == "dir" {
			n.Xattrs = xattrs(t, p)
		}
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	for _, paths := range inodes {
		sort.Strings(paths)
		for _, p := range paths {
			n := out[p]
			n.Group = paths[0]
			out[p] = n
		}
	}
	return out
}

// xattrs renders a path's extended attributes as sorted name=value pairs,
// leaving out the ones the kernel or a security module adds on its own.
func xattrs(t *testing.T, p string) string {
	t.Helper()
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	var pairs []string
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if name == "" || strings.HasPrefix(name, "security.selinux") || strings.HasPrefix(name, "system.") {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("getxattr %s %s: %v", p, name, err)
		}
		pairs = append(pairs, name+"="+hex.EncodeToString(v[:m]))
	}
	sort.Strings(pairs)
	return strings.Join(pairs, ",")
}

// umociUnpack copies an image out of the registry into an OCI layout with
// skopeo and unpacks it with umoci, the reference for what the tree must be.
func umociUnpack(t *testing.T, registry, repo, tag string) string {
	t.Helper()
	RequireTool(t, "skopeo")
	RequireTool(t, "umoci")
	dir := t.TempDir()
	layout := filepath.Join(dir, "layout")
	Run(t, 2*time.Minute, "skopeo", "copy", "--src-tls-verify=false", "docker://"+registry+"/"+repo+":"+tag, "oci:"+layout+":"+tag)
	bundle := filepath.Join(dir, "bundle")
	Run(t, 2*time.Minute, "umoci", "unpack", "--image", layout+":"+tag, bundle)
	return filepath.Join(bundle, "rootfs")
}

// mountImage mounts an image's merged tree the way `dockyard run` does.
func mountImage(t *testing.T, c *Cluster, repo, tag string) string {
	t.Helper()
	ctx := context.Background()
	ref, err := image.ParseRef(c.Registry + "/" + repo + ":" + tag)
	if err != nil {
		t.Fatal(err)
	}
	res, err := (&image.Resolver{}).Resolve(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	mc, err := metaserver.NewClient([]string{c.Meta})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mc.Close() })
	im, err := image.New(mc, chunkserver.NewClient(nil), image.Options{})
	if err != nil {
		t.Fatal(err)
	}
	root, _, err := im.Prepare(ctx, res)
	if err != nil {
		t.Fatalf("preparing %s: %v", ref, err)
	}
	dir := t.TempDir()
	srv, err := im.Mount(ctx, dir, root)
	if err != nil {
		t.Fatalf("mounting %s: %v", ref, err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmounting %s: %v", dir, err)
		}
	})
	return dir
}

func compareTrees(t *testing.T, want, got map[string]node) {
	t.Helper()
	var paths []string
	for p := range want {
		paths = append(paths, p)
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	bad := 0
	for _, p := range paths {
		w, wok := want[p]
		g, gok := got[p]
		switch {
		case !wok:
			t.Errorf("%s: in the mount, not in umoci's tree: %+v", p, g)
		case !gok:
			t.Errorf("%s: missing from the mount (umoci has %+v)", p, w)
		case w != g:
			t.Errorf("%s:\n  mount %+v\n  umoci %+v", p, g, w)
		default:
			continue
		}
		if bad++; bad > 20 {
			t.Fatal("too many differences")
		}
	}
}

// Test images: each is pushed, unpacked by umoci and mounted by Dockyard,
// and the two trees must be identical.
func manySmallFiles() []entry {
	var es []entry
	for d := range 30 {
		es = append(es, dir(fmt.Sprintf("data/d%02d/", d)))
		for f := range 50 {
			es = append(es, file(fmt.Sprintf("data/d%02d/f%03d.txt", d, f), strings.Repeat(fmt.Sprintf("%d/%d ", d, f), f)))
		}
	}
	return append([]entry{dir("data/")}, es...)
}

func whiteoutLayers() ([]entry, []entry) {
	lower := []entry{
		dir("a/"), file("a/x", "x1"), file("a/y", "y1"), dir("a/keep/"), file("a/keep/k", "k"),
		dir("b/"), file("b/p", "p"), dir("b/sub/"), file("b/sub/q", "q"),
		dir("c/"), file("c/file", "c"), file("top", "top1"),
	}
	upper := []entry{
		dir("a/"), {name: "a/.wh.x", typ: tar.TypeReg, mode: 0o644}, file("a/y", "y2 changed"),
		dir("b/"), {name: "b/.wh..wh..opq", typ: tar.TypeReg, mode: 0o644}, file("b/new", "new"),
		{name: ".wh.c", typ: tar.TypeReg, mode: 0o644},
		file("top", "top2"),
	}
	return lower, upper
}

func specialFiles() []entry {
	long := strings.Repeat("long-name-segment-", 6) // > 100 bytes: needs PAX/GNU long names
	return []entry{
		dir("etc/"), file("etc/hostname", "box\n"),
		{name: "etc/shadow", typ: tar.TypeReg, mode: 0o640, uid: 0, gid: 42, body: []byte("root:*:1:0:99999:7:::\n")},
		dir("home/"), {name: "home/app/", typ: tar.TypeDir, mode: 0o750, uid: 1000, gid: 1000},
		{name: "home/app/data", typ: tar.TypeReg, mode: 0o600, uid: 1000, gid: 1000, body: []byte("secret")},
		dir("bin/"),
		{name: "bin/suid", typ: tar.TypeReg, mode: 0o4755, body: []byte("#!/bin/sh\n")},
		{name: "bin/ping", typ: tar.TypeReg, mode: 0o755, body: []byte("ping"),
			xattrs: map[string]string{"security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", "user.note": "hello"}},
		{name: "bin/hard", typ: tar.TypeLink, link: "bin/ping"},
		{name: "bin/rel", typ: tar.TypeSymlink, link: "ping", mode: 0o777},
		{name: "bin/abs", typ: tar.TypeSymlink, link: "/etc/hostname", mode: 0o777},
		dir("dev/"),
		{name: "dev/null", typ: tar.TypeChar, mode: 0o666, major: 1, minor: 3},
		{name: "dev/loop9", typ: tar.TypeBlock, mode: 0o660, major: 7, minor: 9, gid: 6},
		{name: "dev/pipe", typ: tar.TypeFifo, mode: 0o644},
		{name: "tmp/", typ: tar.TypeDir, mode: 0o1777},
		dir("deep/"), dir("deep/" + long + "/"), file("deep/"+long+"/"+long+".txt", "deep"),
		{name: "opt/", typ: tar.TypeDir, mode: 0o755, xattrs: map[string]string{"user.dir": "yes"}},
	}
}

func TestImageTreesMatchUmoci(t *testing.T) {
	requireRoot(t)
	c := SharedCluster(t)
	lower, upper := whiteoutLayers()
	bigRandom := make([]byte, 6<<20+17) // spans several gzip checkpoints
	for i := range bigRandom {
		bigRandom[i] = byte(i*7 + i>>11)
	}
	withBig := append(specialFiles(), entry{name: "big.bin", typ: tar.TypeReg, mode: 0o644, body: bigRandom})
	images := []struct {
		name   string
		layers []layer
		twin   string // compare with the umoci tree of this image instead (same content, other compression)
	}{
		{name: "many", layers: []layer{gzipLayer(t, buildTar(t, manySmallFiles()))}},
		{name: "whiteouts", layers: []layer{gzipLayer(t, buildTar(t, lower)), gzipLayer(t, buildTar(t, upper))}},
		{name: "special", layers: []layer{gzipLayer(t, buildTar(t, withBig))}},
		{name: "plain", layers: []layer{{ocispec.MediaTypeImageLayer, buildTar(t, withBig), ""}}, twin: "special"},
		{name: "zstd", layers: []layer{zstdLayer(t, buildTar(t, lower)), zstdLayer(t, buildTar(t, upper))}, twin: "whiteouts"},
	}
	want := map[string]map[string]node{}
	for _, img := range images {
		t.Run(img.name, func(t *testing.T) {
			for i := range img.layers {
				if img.layers[i].diffID == "" {
					img.layers[i].diffID = digestOf(img.layers[i].blob)
				}
			}
			repo := "e2e/tree-" + img.name
			pushImage(t, c.Registry, repo, "1", img.layers, ocispec.ImageConfig{Cmd: []string{"/bin/sh"}})
			ref := img.name
			if img.twin != "" {
				ref = img.twin
			}
			if want[ref] == nil {
				want[ref] = snapshotTree(t, umociUnpack(t, c.Registry, "e2e/tree-"+ref, "1"))
			}
			got := snapshotTree(t, mountImage(t, c, repo, "1"))
			compareTrees(t, want[ref], got)
		})
	}
}
