package converter

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// TestDiskSpanCache: a second process (a new cache over the same directory)
// reads a file without touching the blob; damaged files are decoded again;
// the directory stays within its bound.
func TestDiskSpanCache(t *testing.T) {
	raw := richTar(t)
	for _, c := range []struct {
		name string
		blob []byte
	}{{"gzip", gzipBytes(t, raw, 6)}, {"zstd-single-frame", zstdBytes(t, raw, 0)}} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			idx, err := BuildIndex(context.Background(), bytes.NewReader(c.blob), int64(len(c.blob)), "sha256:abc123", Options{CheckpointSpacing: 1 << 20})
			if err != nil {
				t.Fatal(err)
			}
			var tail *Entry
			for i := range idx.Entries {
				if idx.Entries[i].Path == "tail" {
					tail = &idx.Entries[i]
				}
			}
			read := func(cache *SpanCache) int64 {
				t.Helper()
				blob := &countingReaderAt{r: bytes.NewReader(c.blob)}
				got, err := io.ReadAll(NewLayerReader(blob, idx, cache).File(tail))
				if err != nil || string(got) != "last file" {
					t.Fatalf("tail: %q %v", got, err)
				}
				return blob.n
			}
			first, err := OpenSpanCache(SpanCacheOptions{MemoryBytes: 64 << 20, Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if n := read(first); n == 0 {
				t.Fatal("cold read touched no blob bytes")
			}
			if st := first.Stats(); st.DiskWrites == 0 || st.DiskErrors != 0 {
				t.Fatalf("first cache %+v", st)
			}
			second, err := OpenSpanCache(SpanCacheOptions{MemoryBytes: 64 << 20, Dir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if n := read(second); n != 0 {
				t.Errorf("warm disk cache still read %d blob bytes", n)
			}
			if st := second.Stats(); st.DiskHits != 1 || st.DecodedBytes != 0 {
				t.Errorf("second cache %+v", st)
			}
			// Damage every file: the next process notices and decodes again.
			files, _ := filepath.Glob(filepath.Join(dir, "*.span"))
			for _, f := range files {
				b, _ := os.ReadFile(f)
				b[len(b)-1] ^= 0xff
				os.WriteFile(f, b, 0o600)
			}
			third, _ := OpenSpanCache(SpanCacheOptions{MemoryBytes: 64 << 20, Dir: dir})
			if n := read(third); n == 0 {
				t.Error("damaged cache files were trusted")
			}
			if st := third.Stats(); st.DiskErrors == 0 {
				t.Errorf("third cache %+v", st)
			}
			// A small bound evicts down to 90% of it.
			small, _ := OpenSpanCache(SpanCacheOptions{MemoryBytes: 1 << 20, Dir: t.TempDir(), DiskBytes: 3 << 20})
			lr := NewLayerReader(bytes.NewReader(c.blob), idx, small)
			if _, err := io.Copy(io.Discard, io.NewSectionReader(lr, 0, idx.Size)); err != nil {
				t.Fatal(err)
			}
			var total int64
			files, _ = filepath.Glob(filepath.Join(small.dir, "*.span"))
			for _, f := range files {
				fi, _ := os.Stat(f)
				total += fi.Size()
			}
			if total > 3<<20 || len(files) == 0 {
				t.Errorf("disk tier holds %d bytes in %d files, bound 3 MiB", total, len(files))
			}
		})
	}
	if _, ok := (&SpanCache{dir: "d"}).spanFile(spanKey{digest: "../../etc:passwd"}); ok {
		t.Error("a hostile digest named a cache file")
	}
}
