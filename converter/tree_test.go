package converter

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"sort"
	"syscall"
	"testing"

	"github.com/dockyard/dockyard/metaserver"
)

func indexTar(t *testing.T, entries []tarEntry, digest string) (*Index, []byte) {
	t.Helper()
	raw := buildTar(t, entries)
	idx, err := BuildIndex(context.Background(), bytes.NewReader(raw), int64(len(raw)), digest, Options{})
	if err != nil {
		t.Fatal(err)
	}
	return idx, raw
}

func treePaths(tr *Tree) []string {
	var out []string
	tr.Walk(func(p string, n *Node) { out = append(out, p) })
	return out
}

func TestMergeWhiteoutsAndOpaque(t *testing.T) {
	dir := func(name string, mode int64) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}}
	}
	reg := func(name, data string) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0644}, data: []byte(data)}
	}
	lower, lowerRaw := indexTar(t, []tarEntry{
		dir("etc", 0755), reg("etc/a", "a1"), reg("etc/b", "b1"), reg("etc/c", "c1"),
		dir("var", 0755), dir("var/lib", 0755), dir("var/lib/x", 0755), reg("var/lib/x/1", "1"), reg("var/lib/x/2", "2"),
		dir("var/cache", 0755), reg("var/cache/big", "cache"),
		dir("opt", 0700), reg("opt/keep", "keep"),
		reg("gone", "gone"),
	}, "sha256:lower")
	upper, upperRaw := indexTar(t, []tarEntry{
		reg("etc/d", "d2"), // etc has no entry in this layer: its parent is implicit
		reg("etc/.wh.a", ""),
		reg("etc/b", "b2"),
		dir("var/lib/x", 0750),
		reg("var/lib/x/3", "3"),
		reg("var/lib/x/.wh..wh..opq", ""),
		reg("var/cache", "now a file"),
		dir("opt", 0711),
		reg(".wh.gone", ""),
		reg("new/deep/file", "implicit parents"),
	}, "sha256:upper")
	tr, err := MergeLayers([]ImageLayer{{Index: lower, Blob: 100}, {Index: upper, Blob: 200}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"etc", "etc/b", "etc/c", "etc/d", "new", "new/deep", "new/deep/file", "opt", "opt/keep",
		"var", "var/cache", "var/lib", "var/lib/x", "var/lib/x/3"}
	if got := treePaths(tr); !slices.Equal(got, want) {
		t.Fatalf("merged paths\n got %v\nwant %v", got, want)
	}
	raws := [][]byte{lowerRaw, upperRaw}
	content := map[string]string{"etc/b": "b2", "etc/c": "c1", "etc/d": "d2", "var/cache": "now a file", "opt/keep": "keep", "var/lib/x/3": "3"}
	tr.Walk(func(p string, n *Node) {
		switch p {
		case "opt":
			if n.Mode() != syscall.S_IFDIR|0711 {
				t.Errorf("opt mode %o: the upper directory's attributes win", n.Mode())
			}
		case "var/lib/x":
			if n.Mode() != syscall.S_IFDIR|0750 {
				t.Errorf("var/lib/x mode %o", n.Mode())
			}
		case "new", "new/deep":
			if n.Entry != nil || n.Mode() != syscall.S_IFDIR|0755 {
				t.Errorf("%s should be an implicit 0755 directory", p)
			}
		}
		if c, ok := content[p]; ok {
			got := raws[n.Layer][n.Entry.Offset : n.Entry.Offset+n.Entry.Size]
			if string(got) != c {
				t.Errorf("%s = %q, want %q", p, got, c)
			}
		}
	})
	// The tree entries point files at their layer's blob.
	batches, links := tr.Batches(0)
	if len(batches) != 1 || len(links) != 0 {
		t.Fatalf("%d batches, %d links", len(batches), len(links))
	}
	for _, te := range batches[0].Entries {
		if te.Name == "d" && (te.Layer == nil || te.Layer.Blob != 200 || te.Layer.Digest != "sha256:upper") {
			t.Errorf("etc/d layer ref %+v", te.Layer)
		}
		if te.Name == "c" && (te.Layer == nil || te.Layer.Blob != 100) {
			t.Errorf("etc/c layer ref %+v", te.Layer)
		}
	}
}

func TestMergeRejectsWritesThroughLowerSymlinks(t *testing.T) {
	lower, _ := indexTar(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "etc", Linkname: "/host/etc"}}}, "sha256:l")
	upper, _ := indexTar(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc/passwd", Mode: 0644}, data: []byte("x")}}, "sha256:u")
	_, err := MergeLayers([]ImageLayer{{Index: lower}, {Index: upper}})
	if !errors.Is(err, ErrSymlinkTraversal) {
		t.Fatalf("got %v", err)
	}
	file, _ := indexTar(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "etc", Mode: 0644}, data: []byte("x")}}, "sha256:f")
	if _, err := MergeLayers([]ImageLayer{{Index: file}, {Index: upper}}); !errors.Is(err, ErrNotDir) {
		t.Fatalf("got %v", err)
	}
}

// TestApplyBatches applies a big tree in small batches to a strict fake
// namespace and checks the result equals the merged tree, hard links
// included, whether or not a link and its target share a batch.
func TestApplyBatches(t *testing.T) {
	raw := richTar(t)
	idx, err := BuildIndex(context.Background(), bytes.NewReader(raw), int64(len(raw)), "sha256:rich", Options{})
	if err != nil {
		t.Fatal(err)
	}
	extra, _ := indexTar(t, []tarEntry{
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "a/target", Mode: 0755}, data: []byte("shared")},
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "a/same-dir", Linkname: "a/target"}},
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "many/zz-far-link", Linkname: "a/target"}},
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "b-link", Linkname: "a/target"}},
	}, "sha256:links")
	tr, err := MergeLayers([]ImageLayer{{Index: idx, Blob: 7}, {Index: extra, Blob: 8}})
	if err != nil {
		t.Fatal(err)
	}
	for _, max := range []int{0, 1, 50, 700} {
		ns := newFakeNS()
		n, err := tr.Apply(context.Background(), ns, metaserver.RootIno, max)
		if err != nil {
			t.Fatalf("max %d: %v", max, err)
		}
		if n != tr.Len() {
			t.Errorf("max %d: applied %d of %d", max, n, tr.Len())
		}
		got := ns.paths(metaserver.RootIno)
		want := treePaths(tr)
		keys := make([]string, 0, len(got))
		for k := range got {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		sort.Strings(want)
		if !slices.Equal(keys, want) {
			t.Fatalf("max %d: %d paths created, want %d", max, len(keys), len(want))
		}
		ino := got["a/target"]
		for _, l := range []string{"a/same-dir", "many/zz-far-link", "b-link"} {
			if got[l] != ino {
				t.Errorf("max %d: %s is not a hard link to a/target", max, l)
			}
		}
		if ns.nodes[ino].nlink != 4 {
			t.Errorf("max %d: nlink %d", max, ns.nodes[ino].nlink)
		}
		if got["usr/bin/ping6"] != got["usr/bin/ping"] {
			t.Errorf("max %d: ping6 not linked", max)
		}
		cap := ns.nodes[got["usr/bin/ping"]].te.Xattrs["security.capability"]
		if len(cap) != 20 {
			t.Errorf("max %d: security.capability %q", max, cap)
		}
		if dev := ns.nodes[got["dev/sda"]].te; dev.Rdev != 8<<8 || dev.Mode != syscall.S_IFBLK|0660 {
			t.Errorf("max %d: dev/sda %+v", max, dev)
		}
		if max > 0 && ns.calls < tr.Len()/max {
			t.Errorf("max %d: only %d CreateTree calls", max, ns.calls)
		}
		if max == 0 && ns.calls != 1 {
			t.Errorf("one batch wanted, got %d calls", ns.calls)
		}
		// Every regular file reads back its tar bytes through its LayerRef.
		lr := NewLayerReader(bytes.NewReader(raw), idx, nil)
		te := ns.nodes[got["usr/bin/big"]].te
		b, err := io.ReadAll(io.NewSectionReader(lr, int64(te.Layer.Offset), int64(te.Size)))
		if err != nil || int64(len(b)) != 4<<20 {
			t.Fatalf("big: %d bytes, %v", len(b), err)
		}
	}
}
