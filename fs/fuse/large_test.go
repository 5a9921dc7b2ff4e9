package fuse

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// seededReader streams pseudo-random bytes fast enough not to be the
// bottleneck (crypto/rand would be).
type seededReader struct{ r *rand.ChaCha8 }

func (s seededReader) Read(p []byte) (int, error) { return s.r.Read(p) }

// TestLargeFileChunkserverKilled writes a 512 MiB random file through one
// mount and reads it back through another, killing a chunkserver halfway
// through the write and a second one halfway through the read: the sha256
// must match. The write goes on around the dead server (with five of six
// left, 4+2 placements fall back to three copies); with 4+2 coding every
// chunk survives the loss of two chunkservers, so the rest of the file is
// read degraded, reconstructed from parity.
func TestLargeFileChunkserverKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and reads 512 MiB; skipped with -short")
	}
	const size = 512 << 20
	const block = 1 << 20
	c := newCluster(t)
	a, _ := c.mount(t, Options{})
	b, _ := c.mount(t, Options{})

	f, err := os.Create(filepath.Join(a, "big"))
	if err != nil {
		t.Fatal(err)
	}
	// Closed before the unmount on every path: a descriptor left open on
	// a mount this process serves would hang the process at exit.
	defer f.Close()
	src := seededReader{rand.NewChaCha8([32]byte{1, 2, 3})}
	h := sha256.New()
	buf := make([]byte, block)
	for off := 0; off < size; off += block {
		if _, err := io.ReadFull(src, buf); err != nil {
			t.Fatal(err)
		}
		h.Write(buf)
		if off == size/2 {
			// Its in-memory store goes with it.
			if err := c.servers[len(c.servers)-1].Close(); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := f.Write(buf); err != nil {
			t.Fatalf("write at %d MiB: %v", off>>20, err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	want := h.Sum(nil)

	g, err := os.Open(filepath.Join(b, "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	h.Reset()
	// Kill a second chunkserver halfway through the read: 4+2 coding must
	// serve the rest from any four shards.
	var read int64
	for i, upTo := range []int64{size / 2, size} {
		n, err := io.CopyBuffer(h, io.LimitReader(g, upTo-read), buf)
		read += n
		if err != nil {
			t.Fatalf("read back after %d MiB: %v", read>>20, err)
		}
		if i == 0 {
			if err := c.servers[len(c.servers)-2].Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	if n, _ := g.Read(buf); n != 0 || read != size {
		t.Fatalf("read back %d bytes, want %d", read+int64(n), size)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want) {
		t.Fatalf("sha256 %x read through the other mount, %x written", got, want)
	}
}
