package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sys/unix"
)

// memTree is a Tree held in memory: path -> node (and file bytes).
type memTree struct {
	nodes map[string]Node
	data  map[string]string
}

func (m *memTree) ReadDir(_ context.Context, p string) ([]string, error) {
	var out []string
	// Map order, to show the writer sorts.
	for q := range m.nodes {
		if q != "." && path.Dir(q) == p {
			out = append(out, path.Base(q))
		}
	}
	return out, nil
}

func (m *memTree) Lstat(_ context.Context, p string) (Node, error) {
	n, ok := m.nodes[p]
	if !ok {
		return Node{}, os.ErrNotExist
	}
	return n, nil
}

func (m *memTree) Open(_ context.Context, p string) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader(m.data[p])), nil
}

var t0 = time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC)

func (m *memTree) add(p string, n Node, data string) {
	if n.ModTime.IsZero() {
		n.ModTime = t0
	}
	if n.typ() == syscall.S_IFREG {
		n.Size = int64(len(data))
		m.data[p] = data
	}
	if n.Nlink == 0 {
		n.Nlink = 1
	}
	m.nodes[p] = n
}

// sampleTree has every kind of entry a layer holds, plus overlayfs marks.
func sampleTree() *memTree {
	m := &memTree{nodes: map[string]Node{}, data: map[string]string{}}
	m.add(".", Node{Mode: syscall.S_IFDIR | 0o755}, "")
	m.add("etc", Node{Mode: syscall.S_IFDIR | 0o755}, "")
	m.add("etc/hosts", Node{Mode: syscall.S_IFREG | 0o644, Uid: 0, Gid: 0}, "127.0.0.1 localhost\n")
	m.add("etc/shadow", Node{Mode: syscall.S_IFREG | 0o640, Gid: 42}, "root:*:1::::::\n")
	m.add("bin", Node{Mode: syscall.S_IFDIR | 0o755}, "")
	m.add("bin/tool", Node{Mode: syscall.S_IFREG | 0o4755, Nlink: 2, ID: [2]uint64{1, 7},
		Xattrs: map[string][]byte{"security.capability": {1, 2, 3}}}, "#!/bin/sh\n")
	m.add("bin/tool-link", Node{Mode: syscall.S_IFREG | 0o4755, Nlink: 2, ID: [2]uint64{1, 7},
		Xattrs: map[string][]byte{"security.capability": {1, 2, 3}}}, "#!/bin/sh\n")
	m.add("bin/out", Node{Mode: syscall.S_IFLNK | 0o777, Linkname: "../../../etc/passwd"}, "")
	m.add("bin/abs", Node{Mode: syscall.S_IFLNK | 0o777, Linkname: "/etc/passwd"}, "")
	m.add("home", Node{Mode: syscall.S_IFDIR | 0o755, Xattrs: map[string][]byte{"user.note": []byte("hi")}}, "")
	m.add("home/u", Node{Mode: syscall.S_IFDIR | 0o700, Uid: 1000, Gid: 1000}, "")
	m.add("home/u/a.txt", Node{Mode: syscall.S_IFREG | 0o600, Uid: 1000, Gid: 1000}, "a")
	m.add("dev", Node{Mode: syscall.S_IFDIR | 0o755}, "")
	m.add("dev/null", Node{Mode: syscall.S_IFCHR | 0o666, Rdev: unix.Mkdev(1, 3)}, "")
	m.add("dev/sda", Node{Mode: syscall.S_IFBLK | 0o660, Rdev: unix.Mkdev(8, 0)}, "")
	m.add("dev/fifo", Node{Mode: syscall.S_IFIFO | 0o600}, "")
	m.add("run", Node{Mode: syscall.S_IFDIR | 0o755}, "")
	m.add("run/app.sock", Node{Mode: syscall.S_IFSOCK | 0o777}, "")
	return m
}

// overlayTree is sampleTree as an overlayfs upper dir: a deleted file, a
// directory made opaque (deleted and made again), and overlayfs's xattrs.
func overlayTree() *memTree {
	m := sampleTree()
	delete(m.nodes, "dev/null") // 0/0 devices only, in an upper dir
	m.add("etc/motd", Node{Mode: syscall.S_IFCHR, Rdev: 0}, "")
	m.add("etc/issue", Node{Mode: syscall.S_IFREG, Xattrs: map[string][]byte{"trusted.overlay.whiteout": {}}}, "")
	m.add("var", Node{Mode: syscall.S_IFDIR | 0o755, Xattrs: map[string][]byte{"trusted.overlay.opaque": []byte("y")}}, "")
	m.add("var/new", Node{Mode: syscall.S_IFREG | 0o644}, "n")
	m.add("srv", Node{Mode: syscall.S_IFDIR | 0o755, Xattrs: map[string][]byte{"user.overlay.opaque": []byte("y")}}, "")
	m.add("opt", Node{Mode: syscall.S_IFDIR | 0o755, Xattrs: map[string][]byte{"trusted.overlay.origin": {9}}}, "")
	return m
}

// listing reads a layer back as one line per entry.
func listing(t *testing.T, blob []byte, compression string) []string {
	t.Helper()
	var r io.Reader
	switch compression {
	case Zstd:
		zr, err := zstd.NewReader(bytes.NewReader(blob))
		if err != nil {
			t.Fatal(err)
		}
		defer zr.Close()
		r = zr
	default:
		zr, err := gzip.NewReader(bytes.NewReader(blob))
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	tr := tar.NewReader(r)
	var out []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(tr)
		line := fmt.Sprintf("%c %s %o %d:%d", h.Typeflag, h.Name, h.Mode, h.Uid, h.Gid)
		switch h.Typeflag {
		case tar.TypeReg:
			line += fmt.Sprintf(" %q", body)
		case tar.TypeSymlink, tar.TypeLink:
			line += " -> " + h.Linkname
		case tar.TypeChar, tar.TypeBlock:
			line += fmt.Sprintf(" %d,%d", h.Devmajor, h.Devminor)
		}
		var xs []string
		for k, v := range h.PAXRecords {
			if strings.HasPrefix(k, "SCHILY.xattr.") {
				xs = append(xs, fmt.Sprintf("%s=%q", strings.TrimPrefix(k, "SCHILY.xattr."), v))
			}
		}
		sort.Strings(xs)
		if len(xs) > 0 {
			line += " [" + strings.Join(xs, " ") + "]"
		}
		if !h.ModTime.Equal(t0) {
			line += " @" + h.ModTime.UTC().Format(time.RFC3339Nano)
		}
		out = append(out, line)
	}
}

func writeLayer(t *testing.T, tree Tree, o LayerOptions) (Layer, []byte) {
	t.Helper()
	var buf bytes.Buffer
	l, err := WriteLayer(context.Background(), &buf, tree, o)
	if err != nil {
		t.Fatal(err)
	}
	return l, buf.Bytes()
}

func TestWriteLayerListing(t *testing.T) {
	var skipped []string
	_, blob := writeLayer(t, sampleTree(), LayerOptions{Skipped: func(p, why string) { skipped = append(skipped, p) }})
	want := []string{
		`5 bin/ 755 0:0`,
		`2 bin/abs 777 0:0 -> /etc/passwd`,
		`2 bin/out 777 0:0 -> ../../../etc/passwd`,
		`0 bin/tool 4755 0:0 "#!/bin/sh\n" [security.capability="\x01\x02\x03"]`,
		`1 bin/tool-link 4755 0:0 -> bin/tool [security.capability="\x01\x02\x03"]`,
		`5 dev/ 755 0:0`,
		`6 dev/fifo 600 0:0`,
		`3 dev/null 666 0:0 1,3`,
		`4 dev/sda 660 0:0 8,0`,
		`5 etc/ 755 0:0`,
		`0 etc/hosts 644 0:0 "127.0.0.1 localhost\n"`,
		`0 etc/shadow 640 0:42 "root:*:1::::::\n"`,
		`5 home/ 755 0:0 [user.note="hi"]`,
		`5 home/u/ 700 1000:1000`,
		`0 home/u/a.txt 600 1000:1000 "a"`,
		`5 run/ 755 0:0`,
	}
	if got := listing(t, blob, Gzip); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("listing:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if len(skipped) != 1 || skipped[0] != "run/app.sock" {
		t.Errorf("skipped = %v, want the socket", skipped)
	}
}

// TestWriteLayerOverlayWhiteouts: entries keep the order of the names in
// the upper dir, so a whiteout sits where the deleted name sorts.
func TestWriteLayerOverlayWhiteouts(t *testing.T) {
	_, blob := writeLayer(t, overlayTree(), LayerOptions{Overlay: true, Compression: Zstd})
	got := listing(t, blob, Zstd)
	want := []string{
		`5 etc/ 755 0:0`,
		`0 etc/hosts 644 0:0 "127.0.0.1 localhost\n"`,
		`0 etc/.wh.issue 644 0:0 ""`,
		`0 etc/.wh.motd 644 0:0 ""`,
		`0 etc/shadow 640 0:42 "root:*:1::::::\n"`,
		`5 opt/ 755 0:0`,
		`5 srv/ 755 0:0`,
		`0 srv/.wh..wh..opq 644 0:0 ""`,
		`5 var/ 755 0:0`,
		`0 var/.wh..wh..opq 644 0:0 ""`,
		`0 var/new 644 0:0 "n"`,
	}
	var sel []string
	for _, l := range got {
		for _, pre := range []string{"etc", "opt", "srv", "var"} {
			if strings.HasPrefix(l[2:], pre) {
				sel = append(sel, l)
			}
		}
	}
	if strings.Join(sel, "\n") != strings.Join(want, "\n") {
		t.Errorf("listing:\n%s\nwant:\n%s", strings.Join(sel, "\n"), strings.Join(want, "\n"))
	}
}

func TestWriteLayerDigests(t *testing.T) {
	for _, c := range []string{Gzip, Zstd} {
		l1, b1 := writeLayer(t, sampleTree(), LayerOptions{Compression: c})
		l2, b2 := writeLayer(t, sampleTree(), LayerOptions{Compression: c})
		if l1.Descriptor.Digest != l2.Descriptor.Digest || !bytes.Equal(b1, b2) {
			t.Errorf("%s: two writes of one tree differ: %s, %s", c, l1.Descriptor.Digest, l2.Descriptor.Digest)
		}
		if l1.Descriptor.Digest != digest.FromBytes(b1) || l1.Descriptor.Size != int64(len(b1)) {
			t.Errorf("%s: descriptor %+v does not describe the %d bytes written", c, l1.Descriptor, len(b1))
		}
		var plain bytes.Buffer
		var zr io.Reader
		if c == Zstd {
			d, _ := zstd.NewReader(bytes.NewReader(b1))
			defer d.Close()
			zr = d
		} else {
			zr, _ = gzip.NewReader(bytes.NewReader(b1))
		}
		io.Copy(&plain, zr)
		if l1.DiffID != digest.FromBytes(plain.Bytes()) {
			t.Errorf("%s: diff ID %s, uncompressed tar is %s", c, l1.DiffID, digest.FromBytes(plain.Bytes()))
		}
		wantType := map[string]string{Gzip: ocispec.MediaTypeImageLayerGzip, Zstd: ocispec.MediaTypeImageLayerZstd}[c]
		if l1.Descriptor.MediaType != wantType {
			t.Errorf("%s: media type %s", c, l1.Descriptor.MediaType)
		}
	}
}

func TestWriteLayerSourceDateEpoch(t *testing.T) {
	m := &memTree{nodes: map[string]Node{}, data: map[string]string{}}
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	m.add(".", Node{Mode: syscall.S_IFDIR | 0o755}, "")
	m.add("old", Node{Mode: syscall.S_IFREG | 0o644, ModTime: old}, "o")
	m.add("new", Node{Mode: syscall.S_IFREG | 0o644}, "n")
	epoch := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	_, blob := writeLayer(t, m, LayerOptions{SourceDateEpoch: &epoch})
	want := []string{`0 new 644 0:0 "n" @2020-01-01T00:00:00Z`, `0 old 644 0:0 "o" @2001-01-01T00:00:00Z`}
	if got := listing(t, blob, Gzip); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("listing:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestWriteLayerRefuses(t *testing.T) {
	m := sampleTree()
	m.add("etc/.wh.passwd", Node{Mode: syscall.S_IFREG | 0o644}, "")
	if _, err := WriteLayer(context.Background(), io.Discard, m, LayerOptions{}); !errors.Is(err, ErrReservedName) {
		t.Errorf("a file named .wh.*: err = %v, want ErrReservedName", err)
	}
	m = overlayTree()
	m.add("moved", Node{Mode: syscall.S_IFDIR | 0o755, Xattrs: map[string][]byte{"trusted.overlay.redirect": []byte("/old")}}, "")
	if _, err := WriteLayer(context.Background(), io.Discard, m, LayerOptions{Overlay: true}); !errors.Is(err, ErrOverlayFeature) {
		t.Errorf("a redirected directory: err = %v, want ErrOverlayFeature", err)
	}
	// A file that shrinks between stat and read is an error, not a short entry.
	m = sampleTree()
	n := m.nodes["etc/hosts"]
	n.Size += 10
	m.nodes["etc/hosts"] = n
	if _, err := WriteLayer(context.Background(), io.Discard, m, LayerOptions{}); err == nil || !strings.Contains(err.Error(), "shrank") {
		t.Errorf("a file shorter than its size: err = %v", err)
	}
	if _, err := WriteLayer(context.Background(), io.Discard, sampleTree(), LayerOptions{Compression: "lz4"}); err == nil {
		t.Error("an unknown compression was accepted")
	}
}

// TestDirTree writes a layer from a real directory: what lstat and the
// xattr calls give, links kept as links, nothing followed.
func TestDirTree(t *testing.T) {
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "a/b"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "a/b/f"), []byte("data"), 0o640))
	must(os.Link(filepath.Join(dir, "a/b/f"), filepath.Join(dir, "a/hard")))
	must(os.Symlink("/etc/shadow", filepath.Join(dir, "a/escape")))
	must(os.Symlink("../../..", filepath.Join(dir, "a/up")))
	must(unix.Mkfifo(filepath.Join(dir, "a/pipe"), 0o600))
	root := os.Geteuid() == 0
	if root {
		must(unix.Mknod(filepath.Join(dir, "gone"), unix.S_IFCHR, 0))
		must(os.Mkdir(filepath.Join(dir, "opq"), 0o755))
		must(unix.Setxattr(filepath.Join(dir, "opq"), "trusted.overlay.opaque", []byte("y"), 0))
		must(os.Chown(filepath.Join(dir, "a/b/f"), 123, 456))
	}
	hasXattr := unix.Setxattr(filepath.Join(dir, "a/b/f"), "user.k", []byte("v"), 0) == nil
	for _, p := range []string{"a/b/f", "a/b", "a", "."} {
		must(os.Chtimes(filepath.Join(dir, p), t0, t0))
	}
	ts := []unix.Timespec{unix.NsecToTimespec(t0.UnixNano()), unix.NsecToTimespec(t0.UnixNano())}
	for _, p := range []string{"a/pipe", "a/escape", "a/up", "gone", "opq"} {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(dir, p), ts, unix.AT_SYMLINK_NOFOLLOW); err != nil && !errors.Is(err, unix.ENOENT) {
			t.Fatal(err)
		}
	}
	tree, err := NewDirTree(dir)
	must(err)
	_, blob := writeLayer(t, tree, LayerOptions{Overlay: true})
	got := listing(t, blob, Gzip)

	fx := ""
	if hasXattr {
		fx = ` [user.k="v"]`
	}
	uid := fmt.Sprintf("%d:%d", os.Geteuid(), os.Getegid())
	owner := uid
	if root {
		owner = "123:456"
	}
	want := []string{
		`5 a/ 755 ` + uid,
		`5 a/b/ 755 ` + uid,
		`0 a/b/f 640 ` + owner + ` "data"` + fx,
		`2 a/escape 777 ` + uid + ` -> /etc/shadow`,
		`1 a/hard 640 ` + owner + ` -> a/b/f` + fx,
		`6 a/pipe 600 ` + uid,
		`2 a/up 777 ` + uid + ` -> ../../..`,
	}
	if root {
		want = append(want, `0 .wh.gone 644 0:0 ""`, `5 opq/ 755 0:0`, `0 opq/.wh..wh..opq 644 0:0 ""`)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("listing:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	if _, err := NewDirTree(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "no such directory") {
		t.Errorf("a missing directory: %v", err)
	}
	if _, err := NewDirTree(filepath.Join(dir, "a/b/f")); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a file: %v", err)
	}
}
