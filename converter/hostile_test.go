package converter

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// setTypeflag rewrites the typeflag of the tar header at off and fixes its
// checksum, to make entries archive/tar's writer refuses to produce.
func setTypeflag(raw []byte, off int, flag byte) []byte {
	raw = bytes.Clone(raw)
	h := raw[off : off+512]
	h[156] = flag
	copy(h[148:156], "        ")
	sum := 0
	for _, c := range h {
		sum += int(c)
	}
	copy(h[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return raw
}

func TestHostileLayers(t *testing.T) {
	reg := func(name string, data string) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0644}, data: []byte(data)}
	}
	link := func(name, target string) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target}}
	}
	sym := func(name, target string) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target}}
	}
	dir := func(name string) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0755}}
	}
	good := buildTar(t, []tarEntry{dir("etc"), reg("etc/hosts", strings.Repeat("127.0.0.1 localhost\n", 5000))})
	zeros := buildTar(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "zeros", Mode: 0644}, data: make([]byte, 24<<20)}})
	sparse := setTypeflag(buildTar(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "holes", Mode: 0644, Format: tar.FormatGNU},
		data: []byte("data")}}), 0, tar.TypeGNUSparse)
	badSum := bytes.Clone(good)
	badSum[0] ^= 1

	bombOpts := Options{MaxRatio: 20, RatioFloor: 1 << 20}
	cases := []struct {
		name string
		blob []byte
		opts Options
		want error
		path string // the EntryError path, when the error names an entry
	}{
		{"dotdot", buildTar(t, []tarEntry{reg("../../etc/passwd", "x")}), Options{}, ErrPathEscape, "../../etc/passwd"},
		{"dotdot-inside", buildTar(t, []tarEntry{dir("a"), reg("a/../../b", "x")}), Options{}, ErrPathEscape, "a/../../b"},
		{"absolute", buildTar(t, []tarEntry{reg("/etc/passwd", "x")}), Options{}, ErrAbsolutePath, "/etc/passwd"},
		{"through-symlink", buildTar(t, []tarEntry{sym("etc", "/etc"), reg("etc/passwd", "root::0:0::/:/bin/sh\n")}), Options{}, ErrSymlinkTraversal, "etc/passwd"},
		{"through-relative-symlink", buildTar(t, []tarEntry{dir("a"), sym("a/up", "../.."), dir("a/up/x")}), Options{}, ErrSymlinkTraversal, "a/up/x"},
		{"through-file", buildTar(t, []tarEntry{reg("a", "x"), reg("a/b", "y")}), Options{}, ErrNotDir, "a/b"},
		{"hardlink-outside", buildTar(t, []tarEntry{link("shadow", "../../etc/shadow")}), Options{}, ErrBadHardLink, "shadow"},
		{"hardlink-absolute", buildTar(t, []tarEntry{link("shadow", "/etc/shadow")}), Options{}, ErrBadHardLink, "shadow"},
		{"hardlink-missing", buildTar(t, []tarEntry{reg("a", "x"), link("b", "nope")}), Options{}, ErrBadHardLink, "b"},
		{"hardlink-dir", buildTar(t, []tarEntry{dir("d"), link("b", "d")}), Options{}, ErrBadHardLink, "b"},
		{"truncated-tar", good[:1500], Options{}, ErrTruncated, ""},
		{"no-end-marker", good[:len(good)-1024], Options{}, ErrTruncated, ""},
		{"truncated-gzip", func() []byte { z := gzipBytes(t, good, 6); return z[:len(z)/2] }(), Options{}, ErrTruncated, ""},
		{"truncated-gzip-trailer", func() []byte { z := gzipBytes(t, good, 6); return z[:len(z)-4] }(), Options{}, ErrTruncated, ""},
		{"truncated-zstd", func() []byte { z := zstdBytes(t, good, 0); return z[:len(z)-10] }(), Options{}, ErrTruncated, ""},
		{"corrupt-header", badSum, Options{}, ErrCorrupt, ""},
		{"pax-over-limit", buildTar(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "f", Mode: 0644,
			PAXRecords: map[string]string{"comment": strings.Repeat("A", 100<<10)}}}}), Options{MaxHeaderBytes: 64 << 10}, ErrHeaderTooLarge, "f"},
		{"pax-enormous", enormousPAX(t), Options{}, ErrHeaderTooLarge, ""},
		{"long-name", buildTar(t, []tarEntry{reg(strings.Repeat("d/", 3000)+"f", "x")}), Options{}, ErrHeaderTooLarge, ""},
		{"huge-xattr", buildTar(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "f", Mode: 0644,
			PAXRecords: map[string]string{"SCHILY.xattr.user.big": strings.Repeat("v", 70<<10)}}}}), Options{}, ErrHeaderTooLarge, "f"},
		{"gnu-sparse", sparse, Options{}, ErrUnsupported, ""},
		{"gzip-bomb", gzipBytes(t, zeros, 9), bombOpts, ErrBomb, ""},
		{"zstd-bomb", zstdBytes(t, zeros, 0), bombOpts, ErrBomb, ""},
		{"size-limit", zeros, Options{MaxSize: 8 << 20}, ErrBomb, ""},
		{"long-component", buildTar(t, []tarEntry{reg("d/"+strings.Repeat("n", 256), "x")}), Options{}, ErrHeaderTooLarge, ""},
		{"too-many-entries", buildTar(t, []tarEntry{reg("a", ""), reg("b", ""), reg("c", "")}), Options{MaxEntries: 2}, ErrBomb, ""},
		{"xz", []byte{0xfd, '7', 'z', 'X', 'Z', 0, 0, 0}, Options{}, ErrMediaType, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := BuildIndex(context.Background(), bytes.NewReader(c.blob), int64(len(c.blob)), "sha256:hostile", c.opts)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if c.path != "" {
				var ee *EntryError
				if !errors.As(err, &ee) || ee.Path != c.path {
					t.Fatalf("error %v does not name entry %q", err, c.path)
				}
			}
		})
	}
	// The same bytes are fine under default limits or when well-formed.
	for name, blob := range map[string][]byte{"good": good, "good-gzip": gzipBytes(t, good, 6), "zeros-gzip": gzipBytes(t, zeros, 9)} {
		if _, err := BuildIndex(context.Background(), bytes.NewReader(blob), int64(len(blob)), "sha256:ok", Options{}); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// enormousPAX is a tar whose first entry is a 3 MiB PAX header, more than
// archive/tar's writer will produce.
func enormousPAX(t *testing.T) []byte {
	rec := "comment=" + strings.Repeat("A", 3<<20) + "\n"
	rec = fmt.Sprintf("%d %s", len(rec)+8, rec)
	raw := buildTar(t, []tarEntry{
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "PaxHeaders/f", Mode: 0644}, data: []byte(rec)},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "f", Mode: 0644}, data: []byte("x")},
	})
	return setTypeflag(raw, 0, tar.TypeXHeader)
}
