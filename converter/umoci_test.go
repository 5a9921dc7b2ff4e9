package converter

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"

	"github.com/dockyard/dockyard/metaserver"
)

// TestTreeMatchesUmoci checks the merged tree against a reference unpacker:
// each image is written as an OCI layout, unpacked by umoci, and the
// unpacked rootfs must equal the converter's tree in paths, types, modes,
// owners, sizes, link targets, device numbers, content sha256, xattrs and
// hard-link groups.
func TestTreeMatchesUmoci(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: umoci unpack sets owners, xattrs and makes device nodes only as root")
	}
	umoci, err := exec.LookPath("umoci")
	if err != nil {
		t.Skip("umoci is not installed")
	}
	dir := func(name string, mode int64, uid int) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode, Uid: uid, Gid: uid}}
	}
	reg := func(name string, mode int64, data string) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode}, data: []byte(data)}
	}
	sym := func(name, target string) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0777}}
	}
	link := func(name, target string) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}}
	}

	busybox := []tarEntry{dir("bin", 0755, 0), dir("etc", 0755, 0), dir("tmp", 01777, 0),
		reg("etc/passwd", 0644, "root:x:0:0:root:/root:/bin/sh\n")}
	if b, err := os.ReadFile("/bin/busybox"); err == nil {
		busybox = append(busybox, tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0755}, data: b})
	} else {
		busybox = append(busybox, reg("bin/busybox", 0755, strings.Repeat("not a real busybox\n", 5000)))
	}
	for _, a := range []string{"sh", "ls", "cat", "true"} {
		busybox = append(busybox, sym("bin/"+a, "busybox"))
	}

	var small []tarEntry
	for d := 0; d < 10; d++ {
		dn := "srv/d" + itoa(d)
		small = append(small, dir(dn, 0750, d))
		for f := 0; f < 100; f++ {
			small = append(small, reg(dn+"/f"+itoa(f), 0600+int64(f%3)*0o40, strings.Repeat(itoa(d*f), f)))
		}
	}

	lower := []tarEntry{
		dir("etc", 0755, 0), reg("etc/a", 0644, "a1"), reg("etc/b", 0644, "b1"), reg("etc/c", 0644, "c1"),
		dir("var", 0755, 0), dir("var/lib", 0755, 0), dir("var/lib/x", 0755, 0), reg("var/lib/x/1", 0644, "1"), reg("var/lib/x/2", 0644, "2"),
		dir("var/cache", 0755, 0), reg("var/cache/big", 0644, "cache"), dir("opt", 0700, 0), reg("opt/keep", 0644, "keep"),
		reg("gone", 0644, "gone"), sym("lnk", "etc/a"),
	}
	upper := []tarEntry{
		dir("etc", 0755, 0), reg("etc/.wh.a", 0644, ""), reg("etc/b", 0600, "b2"), reg("etc/d", 0644, "d2"),
		dir("var/lib/x", 0750, 0), reg("var/lib/x/.wh..wh..opq", 0644, ""), reg("var/lib/x/3", 0644, "3"),
		reg("var/cache", 0644, "now a file"), dir("opt", 0711, 5), reg(".wh.gone", 0644, ""), reg("lnk", 0644, "replaced symlink"),
	}

	special := []tarEntry{
		dir("dev", 0755, 0),
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0666, Devmajor: 1, Devminor: 3}},
		{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/loop9", Mode: 0660, Devmajor: 7, Devminor: 9, Gid: 6}},
		{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "dev/pipe", Mode: 0620}},
		dir("usr", 0755, 0), dir("usr/bin", 0755, 0),
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/ping", Mode: 04755, Uid: 0, Gid: 0, PAXRecords: map[string]string{
			"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
			"SCHILY.xattr.user.note":           "hello"}}, data: []byte("ping")},
		link("usr/bin/ping6", "usr/bin/ping"),
		link("usr/ping-again", "usr/bin/ping"),
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/owned", Mode: 02755, Uid: 1234, Gid: 4321}, data: []byte("owned")},
		reg("usr/"+strings.Repeat("long-name-", 15)+"end", 0644, "long"),
	}

	gz := func(raw []byte) []byte { return gzipBytes(t, raw, 6) }
	zs := func(raw []byte) []byte { return zstdBytes(t, raw, 64<<10) }
	cases := []struct {
		name   string
		layers [][]tarEntry
		ours   func([]byte) []byte // compression of the layers we index
	}{
		{"busybox", [][]tarEntry{busybox}, gz},
		{"many-small-files", [][]tarEntry{small}, gz},
		{"whiteouts-opaque", [][]tarEntry{lower, upper}, gz},
		{"links-devices-xattrs", [][]tarEntry{special}, gz},
		// umoci is handed gzip: the tree depends only on the tar bytes, and
		// this is the zstd path on our side.
		{"zstd", [][]tarEntry{busybox, special}, zs},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var raws [][]byte
			for _, l := range c.layers {
				raws = append(raws, buildTar(t, l))
			}
			bundle := unpackWithUmoci(t, umoci, raws)
			var layers []ImageLayer
			var readers []*LayerReader
			for i, raw := range raws {
				blob := c.ours(raw)
				idx, err := BuildIndex(context.Background(), bytes.NewReader(blob), int64(len(blob)), digest.FromBytes(blob).String(), Options{})
				if err != nil {
					t.Fatal(err)
				}
				layers = append(layers, ImageLayer{Index: idx, Blob: 100 + uint64ToIno(i)})
				readers = append(readers, NewLayerReader(bytes.NewReader(blob), idx, nil))
			}
			tree, err := MergeLayers(layers)
			if err != nil {
				t.Fatal(err)
			}
			compareWithUnpacked(t, tree, readers, filepath.Join(bundle, "rootfs"))
		})
	}
}

func uint64ToIno(i int) metaserver.Ino { return metaserver.Ino(i) }

// unpackWithUmoci writes raws as gzip layers of an OCI layout and unpacks it.
func unpackWithUmoci(t *testing.T, umoci string, raws [][]byte) string {
	t.Helper()
	dir := t.TempDir()
	layout := filepath.Join(dir, "layout")
	blobs := filepath.Join(layout, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		t.Fatal(err)
	}
	put := func(b []byte, mt string) ocispec.Descriptor {
		d := digest.FromBytes(b)
		if err := os.WriteFile(filepath.Join(blobs, d.Encoded()), b, 0o644); err != nil {
			t.Fatal(err)
		}
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(b))}
	}
	cfg := ocispec.Image{Platform: ocispec.Platform{OS: "linux", Architecture: "amd64"}, RootFS: ocispec.RootFS{Type: "layers"}}
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest}
	m.SchemaVersion = 2
	for _, raw := range raws {
		cfg.RootFS.DiffIDs = append(cfg.RootFS.DiffIDs, digest.FromBytes(raw))
		m.Layers = append(m.Layers, put(gzipBytes(t, raw, 6), ocispec.MediaTypeImageLayerGzip))
	}
	cb, _ := json.Marshal(cfg)
	m.Config = put(cb, ocispec.MediaTypeImageConfig)
	mb, _ := json.Marshal(m)
	md := put(mb, ocispec.MediaTypeImageManifest)
	md.Annotations = map[string]string{ocispec.AnnotationRefName: "test"}
	idx := ocispec.Index{Manifests: []ocispec.Descriptor{md}}
	idx.SchemaVersion = 2
	ib, _ := json.Marshal(idx)
	if err := os.WriteFile(filepath.Join(layout, "index.json"), ib, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(layout, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	bundle := filepath.Join(dir, "bundle")
	if out, err := exec.Command(umoci, "unpack", "--image", layout+":test", bundle).CombinedOutput(); err != nil {
		t.Fatalf("umoci unpack: %v\n%s", err, out)
	}
	return bundle
}

type fileFacts struct {
	mode     uint32
	uid, gid uint32
	size     int64
	target   string
	rdev     uint64
	sha      string
	xattrs   map[string]string
}

func compareWithUnpacked(t *testing.T, tree *Tree, readers []*LayerReader, rootfs string) {
	t.Helper()
	got := map[string]fileFacts{}
	inodes := map[uint64][]string{}
	err := filepath.WalkDir(rootfs, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == rootfs {
			return err
		}
		rel, _ := filepath.Rel(rootfs, p)
		var st syscall.Stat_t
		if err := syscall.Lstat(p, &st); err != nil {
			return err
		}
		f := fileFacts{mode: st.Mode, uid: st.Uid, gid: st.Gid, xattrs: listXattrs(t, p)}
		switch st.Mode & syscall.S_IFMT {
		case syscall.S_IFREG:
			f.size = st.Size
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			sum := sha256.Sum256(b)
			f.sha = hex.EncodeToString(sum[:])
			if st.Nlink > 1 {
				inodes[st.Ino] = append(inodes[st.Ino], rel)
			}
		case syscall.S_IFLNK:
			f.target, _ = os.Readlink(p)
		case syscall.S_IFCHR, syscall.S_IFBLK:
			f.rdev = st.Rdev
		}
		got[rel] = f
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]fileFacts{}
	groups := map[linkKey][]string{}
	tree.Walk(func(p string, n *Node) {
		f := fileFacts{mode: n.Mode(), xattrs: map[string]string{}}
		if e := n.Entry; e != nil {
			f.uid, f.gid = e.Uid, e.Gid
			for k, v := range e.Xattrs {
				f.xattrs[k] = string(v)
			}
			switch e.Type() {
			case syscall.S_IFREG:
				f.size = e.Size
				b, err := io.ReadAll(readers[n.Layer].File(e))
				if err != nil {
					t.Fatalf("%s: %v", p, err)
				}
				sum := sha256.Sum256(b)
				f.sha = hex.EncodeToString(sum[:])
				if k, ok := n.key(); ok {
					groups[k] = append(groups[k], p)
				}
			case syscall.S_IFLNK:
				f.target = e.Linkname
			case syscall.S_IFCHR, syscall.S_IFBLK:
				f.rdev = e.Rdev()
			}
		}
		want[p] = f
	})
	var paths []string
	for p := range want {
		paths = append(paths, p)
	}
	for p := range got {
		if _, ok := want[p]; !ok {
			t.Errorf("%s: unpacked by umoci, missing from our tree", p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		w, g := want[p], got[p]
		if _, ok := got[p]; !ok {
			t.Errorf("%s: in our tree, not unpacked by umoci", p)
			continue
		}
		if w.mode != g.mode || w.uid != g.uid || w.gid != g.gid || w.size != g.size || w.target != g.target || w.rdev != g.rdev || w.sha != g.sha {
			t.Errorf("%s:\n ours  %+v\n umoci %+v", p, w, g)
			continue
		}
		for k, v := range w.xattrs {
			if g.xattrs[k] != v {
				t.Errorf("%s: xattr %s = %q, umoci has %q", p, k, v, g.xattrs[k])
			}
		}
		for k := range g.xattrs {
			if _, ok := w.xattrs[k]; !ok {
				t.Errorf("%s: umoci has xattr %s we lack", p, k)
			}
		}
	}
	var ours, theirs []string
	for _, g := range groups {
		if len(g) > 1 {
			sort.Strings(g)
			ours = append(ours, strings.Join(g, " "))
		}
	}
	for _, g := range inodes {
		sort.Strings(g)
		theirs = append(theirs, strings.Join(g, " "))
	}
	sort.Strings(ours)
	sort.Strings(theirs)
	if strings.Join(ours, "|") != strings.Join(theirs, "|") {
		t.Errorf("hard-link groups differ:\n ours  %q\n umoci %q", ours, theirs)
	}
	t.Logf("%d paths agree", len(paths))
}

// listXattrs reads a path's xattrs without following symlinks, skipping the
// security.selinux label a host may add on its own.
func listXattrs(t *testing.T, p string) map[string]string {
	out := map[string]string{}
	buf := make([]byte, 64<<10)
	n, err := unix.Llistxattr(p, buf)
	if err != nil {
		return out
	}
	for _, name := range strings.Split(strings.TrimRight(string(buf[:n]), "\x00"), "\x00") {
		if name == "" || name == "security.selinux" {
			continue
		}
		v := make([]byte, 64<<10)
		m, err := unix.Lgetxattr(p, name, v)
		if err != nil {
			t.Fatalf("%s: getxattr %s: %v", p, name, err)
		}
		out[name] = string(v[:m])
	}
	return out
}
