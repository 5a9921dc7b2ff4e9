package converter

import (
	"archive/tar"
	"bytes"
	"compress/flate"
	"context"
	"errors"
	"io"
	"syscall"
	"testing"
)

// The indexing pass parses hostile input with code of our own (the inflater,
// the zstd framer, the index decoder): these fuzz targets check it never
// panics and agrees with the standard library where both accept the input.
// `go test` runs them over the seed corpus; `go test -fuzz FuzzX` explores.

func FuzzInflate(f *testing.F) {
	for _, level := range []int{flate.NoCompression, flate.BestSpeed, flate.DefaultCompression, flate.HuffmanOnly} {
		var b bytes.Buffer
		w, _ := flate.NewWriter(&b, level)
		w.Write(testData(uint64(level+2), 70<<10))
		w.Close()
		f.Add(b.Bytes())
	}
	f.Add([]byte{0x03, 0x00})
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 4 << 20
		want, werr := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(data)), limit))
		inf, err := newInflater(bytes.NewReader(data), 0, nil, false)
		if err != nil {
			t.Fatal(err)
		}
		got, gerr := io.ReadAll(io.LimitReader(inf, limit))
		if werr == nil && gerr != nil {
			t.Fatalf("compress/flate accepts what we reject: %v", gerr)
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("output differs from compress/flate (%d vs %d bytes)", len(got), len(want))
		}
	})
}

func FuzzBuildIndex(f *testing.F) {
	raw := buildTar(f, []tarEntry{
		{hdr: tar.Header{Typeflag: tar.TypeDir, Name: "d", Mode: 0755}},
		{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "d/f", Mode: 0644}, data: []byte("hello")},
		{hdr: tar.Header{Typeflag: tar.TypeLink, Name: "d/g", Linkname: "d/f"}},
		{hdr: tar.Header{Typeflag: tar.TypeSymlink, Name: "s", Linkname: "d"}},
	})
	f.Add(raw)
	f.Add(gzipBytes(f, raw, 6))
	f.Add(zstdBytes(f, raw, 0))
	f.Add(zstdBytes(f, raw, 700))
	f.Fuzz(func(t *testing.T, blob []byte) {
		opts := Options{CheckpointSpacing: 512, MaxSize: 16 << 20}
		idx, err := BuildIndex(context.Background(), bytes.NewReader(blob), int64(len(blob)), "sha256:fuzz", opts)
		if err != nil {
			return
		}
		enc, err := idx.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := UnmarshalIndex(enc); err != nil {
			t.Fatalf("index of an accepted layer does not decode: %v", err)
		}
		lr := NewLayerReader(bytes.NewReader(blob), idx, NewSpanCache(1<<20))
		for i := range idx.Entries {
			e := &idx.Entries[i]
			if e.Type() != syscall.S_IFREG {
				continue
			}
			if _, err := io.Copy(io.Discard, lr.File(e)); err != nil {
				t.Fatalf("%s: indexed but unreadable: %v", e.Path, err)
			}
		}
		if _, err := MergeLayers([]ImageLayer{{Index: idx}}); err != nil && !isTyped(err) {
			t.Fatalf("merge: untyped error %v", err)
		}
	})
}

func isTyped(err error) bool {
	var ee *EntryError
	return errors.As(err, &ee)
}

func FuzzUnmarshalIndex(f *testing.F) {
	raw := buildTar(f, []tarEntry{{hdr: tar.Header{Typeflag: tar.TypeReg, Name: "f", Mode: 0644, PAXRecords: map[string]string{"SCHILY.xattr.user.a": "b"}}, data: []byte("x")}})
	blob := gzipBytes(f, raw, 6)
	idx, err := BuildIndex(context.Background(), bytes.NewReader(blob), int64(len(blob)), "sha256:fuzz", Options{})
	if err != nil {
		f.Fatal(err)
	}
	enc, _ := idx.MarshalBinary()
	f.Add(enc)
	f.Fuzz(func(t *testing.T, data []byte) {
		x, err := UnmarshalIndex(data)
		if err != nil {
			return
		}
		if _, err := x.MarshalBinary(); err != nil {
			t.Fatal(err)
		}
	})
}
