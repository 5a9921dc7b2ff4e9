package converter

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// tarEntry is one entry a test writes; data is the content of regular files.
type tarEntry struct {
	hdr  tar.Header
	data []byte
}

func buildTar(t testing.TB, entries []tarEntry) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, e := range entries {
		h := e.hdr
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if h.ModTime.IsZero() {
			h.ModTime = time.Unix(1700000000, 0)
		}
		if err := tw.WriteHeader(&h); err != nil {
			t.Fatalf("header %s: %v", h.Name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func randBytes(r *rand.Rand, n int) []byte {
	p := make([]byte, n)
	seed := [32]byte{byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())}
	rand.NewChaCha8(seed).Read(p)
	return p
}

var richOnce struct {
	sync.Once
	raw []byte
}

// richTar is richLayer as a tar, built once per test binary.
func richTar(t testing.TB) []byte {
	richOnce.Do(func() { richOnce.raw = buildTar(t, richLayer(t)) })
	return richOnce.raw
}

// richLayer has every entry type the converter handles, large random files
// spanning many checkpoints, many small files, long names and PAX records.
func richLayer(t testing.TB) []tarEntry {
	r := rand.New(rand.NewPCG(42, 1))
	dir := func(name string, mode int64) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: mode}}
	}
	reg := func(name string, data []byte) tarEntry {
		return tarEntry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0644, Uid: 1000, Gid: 1000}, data: data}
	}
	es := []tarEntry{
		dir("./", 0755),
		dir("./usr/", 0755),
		dir("usr/bin", 0755),
		reg("usr/bin/big", randBytes(r, 4<<20)),
		reg("usr/bin/text", testData(9, 2<<20)),
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "usr/bin/ping", Mode: 04755, Uid: 0, Gid: 0,
			PAXRecords: map[string]string{"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
				"SCHILY.xattr.user.note": "hello"}}, data: []byte("ping binary")},
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "usr/bin/ping6", Linkname: "usr/bin/ping"}},
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "usr/bin/sh", Linkname: "/bin/busybox", Mode: 0777}},
		dir("dev", 0755),
		{hdr: tar.Header{Typeflag: tar.TypeChar, Name: "dev/null", Mode: 0666, Devmajor: 1, Devminor: 3}},
		{hdr: tar.Header{Typeflag: tar.TypeBlock, Name: "dev/sda", Mode: 0660, Devmajor: 8, Devminor: 0, Gid: 6}},
		{hdr: tar.Header{Typeflag: tar.TypeFifo, Name: "dev/fifo", Mode: 0600}},
		reg("empty", nil),
		reg("usr/"+strings.Repeat("long-name-", 20)+"end", []byte("long name content")),
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "pax-time", Mode: 0640, ModTime: time.Unix(1700000000, 123456789),
			AccessTime: time.Unix(1700000001, 5), Format: tar.FormatPAX}, data: []byte("nanoseconds")},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "ünïcødé-file", Mode: 0600, Format: tar.FormatPAX}, data: []byte("utf8")},
		dir("many", 0700),
	}
	for i := 0; i < 2000; i++ {
		es = append(es, reg("many/f"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+itoa(i), testData(uint64(i), r.IntN(3000))))
	}
	es = append(es, reg("usr/bin/big2", randBytes(r, 2<<20)), reg("tail", []byte("last file")))
	return es
}

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

func gzipBytes(t testing.TB, raw []byte, level int) []byte {
	var b bytes.Buffer
	w, err := gzip.NewWriterLevel(&b, level)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(raw)
	w.Close()
	return b.Bytes()
}

// zstdBytes compresses raw as one frame, or as frames of frameSize bytes.
func zstdBytes(t testing.TB, raw []byte, frameSize int) []byte {
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	if frameSize <= 0 {
		return enc.EncodeAll(raw, nil)
	}
	var out []byte
	for i := 0; i < len(raw); i += frameSize {
		out = enc.EncodeAll(raw[i:min(i+frameSize, len(raw))], out)
	}
	return out
}

// countingReaderAt counts bytes read from a blob.
type countingReaderAt struct {
	r io.ReaderAt
	n int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n += int64(n)
	return n, err
}

// checkLayer indexes blob and compares every entry and every file's bytes,
// read through the index in shuffled order, with what archive/tar reads.
func checkLayer(t *testing.T, raw, blob []byte, opts Options) *Index {
	t.Helper()
	idx, err := BuildIndex(context.Background(), bytes.NewReader(blob), int64(len(blob)), "sha256:test", opts)
	if err != nil {
		t.Fatal(err)
	}
	if idx.Size != int64(len(raw)) {
		t.Fatalf("stream size %d, want %d", idx.Size, len(raw))
	}
	enc, err := idx.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	idx2, err := UnmarshalIndex(enc)
	if err != nil {
		t.Fatal(err)
	}
	lr := NewLayerReader(bytes.NewReader(blob), idx2, NewSpanCache(8<<20))
	defer lr.Close()

	tr := tar.NewReader(bytes.NewReader(raw))
	want := map[string][]byte{}
	var hdrs []*tar.Header
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		want[strings.TrimPrefix(strings.TrimSuffix(h.Name, "/"), "./")] = b
		hdrs = append(hdrs, h)
	}
	if len(idx2.Entries) != len(hdrs) {
		t.Fatalf("%d entries, want %d", len(idx2.Entries), len(hdrs))
	}
	for i, h := range hdrs {
		e := idx2.Entries[i]
		name := strings.TrimPrefix(strings.TrimSuffix(h.Name, "/"), "./")
		if name == "" {
			name = "."
		}
		if e.Path != name {
			t.Fatalf("entry %d path %q, want %q", i, e.Path, name)
		}
		if e.Mode&07777 != uint32(h.Mode)&07777 && h.Typeflag != tar.TypeLink {
			t.Errorf("%s: mode %o, want %o", name, e.Mode, h.Mode)
		}
		if e.Mtime != h.ModTime.UnixNano() {
			t.Errorf("%s: mtime %d, want %d", name, e.Mtime, h.ModTime.UnixNano())
		}
		switch h.Typeflag {
		case tar.TypeSymlink:
			if e.Type() != syscall.S_IFLNK || e.Linkname != h.Linkname {
				t.Errorf("%s: symlink %o -> %q", name, e.Mode, e.Linkname)
			}
		case tar.TypeChar, tar.TypeBlock:
			if e.Devmajor != uint32(h.Devmajor) || e.Devminor != uint32(h.Devminor) {
				t.Errorf("%s: device %d,%d", name, e.Devmajor, e.Devminor)
			}
		case tar.TypeLink:
			if !e.IsHardLink() || idx2.Entries[e.LinkIdx-1].Path != h.Linkname {
				t.Errorf("%s: hard link %+v", name, e)
			}
		}
		for k, v := range h.PAXRecords {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok && string(e.Xattrs[x]) != v {
				t.Errorf("%s: xattr %s = %q, want %q", name, x, e.Xattrs[x], v)
			}
		}
	}
	order := rand.New(rand.NewPCG(3, 3)).Perm(len(idx2.Entries))
	for _, i := range order {
		e := &idx2.Entries[i]
		if e.Type() != syscall.S_IFREG {
			continue
		}
		got, err := io.ReadAll(lr.File(e))
		if err != nil {
			t.Fatalf("%s: %v", e.Path, err)
		}
		w := want[e.Path]
		if e.IsHardLink() {
			w = want[e.Linkname]
		}
		if !bytes.Equal(got, w) {
			t.Fatalf("%s: %d bytes read differ from the tar's %d", e.Path, len(got), len(w))
		}
	}
	// A read straddling several spans.
	buf := make([]byte, 7<<20)
	n, err := lr.ReadAt(buf, 1234567)
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:n], raw[1234567:1234567+n]) {
		t.Fatal("long read differs")
	}
	return idx2
}

func TestLayerFormats(t *testing.T) {
	raw := richTar(t)
	opts := Options{CheckpointSpacing: 1 << 20}
	cases := []struct {
		name   string
		blob   []byte
		format Format
		minCPs int
	}{
		{"plain", raw, FormatPlain, 0},
		{"gzip-6", gzipBytes(t, raw, 6), FormatGzip, 8},
		{"gzip-1", gzipBytes(t, raw, 1), FormatGzip, 8},
		{"gzip-multimember", append(gzipBytes(t, raw[:3<<20+512], 6), gzipBytes(t, raw[3<<20+512:], 6)...), FormatGzip, 8},
		{"zstd-single-frame", zstdBytes(t, raw, 0), FormatZstd, 1},
		{"zstd-frames", zstdBytes(t, raw, 512<<10), FormatZstd, 8},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			idx := checkLayer(t, raw, c.blob, opts)
			if idx.Format != c.format {
				t.Errorf("format %v, want %v", idx.Format, c.format)
			}
			if len(idx.Checkpoints) < c.minCPs {
				t.Errorf("%d checkpoints, want >= %d", len(idx.Checkpoints), c.minCPs)
			}
			if c.format == FormatGzip {
				// Random file data is stored, not compressed: those
				// checkpoints find their window in the blob itself.
				var fromBlob int
				for _, cp := range idx.Checkpoints {
					if len(cp.WindowRanges) > 0 {
						fromBlob++
					}
				}
				if fromBlob == 0 {
					t.Error("no checkpoint window read from stored blocks")
				}
			}
			enc, _ := idx.MarshalBinary()
			pct := 100 * float64(len(enc)) / float64(len(c.blob))
			t.Logf("%s: blob %d bytes, stream %d, %d entries, %d checkpoints, index %d bytes (%.2f%%)",
				c.name, len(c.blob), idx.Size, len(idx.Entries), len(idx.Checkpoints), len(enc), pct)
			// With 1 MiB spacing (a quarter of the default) the index must
			// still stay under 3%.
			if pct > 3 {
				t.Errorf("index is %.2f%% of the layer", pct)
			}
		})
	}
}

func TestReadOnlyTouchesNearbySpans(t *testing.T) {
	raw := richTar(t)
	blob := gzipBytes(t, raw, 6)
	idx, err := BuildIndex(context.Background(), bytes.NewReader(blob), int64(len(blob)), "sha256:x", Options{CheckpointSpacing: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c := &countingReaderAt{r: bytes.NewReader(blob)}
	lr := NewLayerReader(c, idx, NewSpanCache(64<<20))
	var tail *Entry
	for i := range idx.Entries {
		if idx.Entries[i].Path == "tail" {
			tail = &idx.Entries[i]
		}
	}
	got, err := io.ReadAll(lr.File(tail))
	if err != nil || string(got) != "last file" {
		t.Fatalf("tail: %q %v", got, err)
	}
	// One span of ~1 MiB uncompressed, plus read-ahead of the bufio reader.
	if c.n > int64(len(blob))/4 {
		t.Errorf("read %d of %d blob bytes for one small file", c.n, len(blob))
	}
	st := lr.cache.Stats()
	if st.Misses != 1 || st.DecodedBytes > 3<<20 {
		t.Errorf("cache stats %+v", st)
	}
	if _, err := io.ReadAll(lr.File(tail)); err != nil {
		t.Fatal(err)
	}
	if st2 := lr.cache.Stats(); st2.Hits != st.Hits+1 {
		t.Errorf("second read missed the cache: %+v", st2)
	}
}

func TestCorruptIndex(t *testing.T) {
	raw := buildTar(t, richLayer(t)[:6])
	idx, err := BuildIndex(context.Background(), bytes.NewReader(raw), int64(len(raw)), "sha256:x", Options{})
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := idx.MarshalBinary()
	for _, b := range [][]byte{nil, []byte("DYLX\x09"), enc[:len(enc)-5], append([]byte("XXXX"), enc[4:]...)} {
		if _, err := UnmarshalIndex(b); !errors.Is(err, ErrBadIndex) {
			t.Errorf("corrupt index: %v", err)
		}
	}
}

// TestUnalignedCheckpoints uses text that deflate never stores, so many
// checkpoints sit at bit offsets and resume through our own inflater.
func TestUnalignedCheckpoints(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 11))
	words := strings.Fields("the quick brown fox jumps over lazy dog lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor")
	var text bytes.Buffer
	for text.Len() < 4<<20 {
		text.WriteString(words[r.IntN(len(words))])
		text.WriteByte(" \n"[r.IntN(2)])
	}
	raw := buildTar(t, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "text", Mode: 0644}, data: text.Bytes()}})
	blob := gzipBytes(t, raw, 6)
	idx, err := BuildIndex(context.Background(), bytes.NewReader(blob), int64(len(blob)), "sha256:text", Options{CheckpointSpacing: 128 << 10})
	if err != nil {
		t.Fatal(err)
	}
	var unaligned int
	for _, c := range idx.Checkpoints {
		if c.Bits != 0 {
			unaligned++
		}
	}
	if unaligned == 0 {
		t.Fatalf("no unaligned checkpoints among %d", len(idx.Checkpoints))
	}
	t.Logf("%d checkpoints, %d at bit offsets", len(idx.Checkpoints), unaligned)
	// Read each span on its own, through a fresh reader, so each one resumes
	// from its own checkpoint.
	for i, c := range idx.Checkpoints {
		lr := NewLayerReader(bytes.NewReader(blob), idx, NewSpanCache(1<<20))
		end := idx.Size
		if i+1 < len(idx.Checkpoints) {
			end = idx.Checkpoints[i+1].Out
		}
		got := make([]byte, end-c.Out)
		if _, err := lr.ReadAt(got, c.Out); err != nil && err != io.EOF {
			t.Fatalf("span %d (bits %d): %v", i, c.Bits, err)
		}
		if !bytes.Equal(got, raw[c.Out:end]) {
			t.Fatalf("span %d (bits %d) differs", i, c.Bits)
		}
	}
}
