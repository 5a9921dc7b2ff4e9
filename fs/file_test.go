package fs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"syscall"
	"testing"
)

// TestWriteFromStream: the exported streaming write puts a stream at any
// offset (here not chunk aligned, after a gap that reads as zeros) and
// passes a source failure on, keeping what came before it.
func TestWriteFromStream(t *testing.T) {
	ctx := context.Background()
	opt := Options{ChunkSize: testChunk}
	cl := newCluster(t, 6)
	c := cl.client(opt)
	f, err := c.CreateFile(ctx, "/s", 0o644, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteFrom(ctx, bytes.NewReader([]byte("x")), -1); !errors.Is(err, syscall.EINVAL) {
		t.Fatalf("WriteFrom at -1: %v, want EINVAL", err)
	}
	const off = testChunk + 17
	body := randBytes(3, 3*testChunk+5)
	if n, err := f.WriteFrom(ctx, bytes.NewReader(body), off); err != nil || n != int64(len(body)) {
		t.Fatalf("WriteFrom: %d, %v", n, err)
	}
	boom := errors.New("client went away")
	tail := randBytes(4, testChunk/2)
	n, err := f.WriteFrom(ctx, io.MultiReader(bytes.NewReader(tail), &failingReader{boom}), off+int64(len(body)))
	if !errors.Is(err, boom) || n != int64(len(tail)) {
		t.Fatalf("WriteFrom of a failing source: %d, %v; want %d bytes and the source's error", n, err, len(tail))
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	want := append(append(make([]byte, off), body...), tail...)
	if got := readAll(t, cl.client(opt), "/s"); !bytes.Equal(got, want) {
		t.Fatalf("read back %d bytes, differing from the %d written", len(got), len(want))
	}
}

type failingReader struct{ err error }

func (r *failingReader) Read([]byte) (int, error) { return 0, r.err }
