package fs

import (
	"testing"

	"github.com/klauspost/reedsolomon"

	"github.com/dockyard/dockyard/chunkserver"
)

// The CPU work the write path does per chunk, next to the raw encoder it is
// built on. Run on one core: go test -run '^$' -bench Encode -cpu 1 ./fs/

const benchChunk = 4 << 20

func BenchmarkRawEncode4x2x4MiB(b *testing.B) {
	enc, err := reedsolomon.New(4, 2, reedsolomon.WithMaxGoroutines(1))
	if err != nil {
		b.Fatal(err)
	}
	shards, err := enc.Split(randBytes(1, benchChunk))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	for b.Loop() {
		if err := enc.Encode(shards); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWritePathEncode4x2x4MiB is what a full chunk costs the client
// before it goes on the wire: a pooled buffer, encoding in place (zero
// padding, parity behind the data) and the whole-shard checksums the
// chunkserver client computes on Put.
func BenchmarkWritePathEncode4x2x4MiB(b *testing.B) {
	c := New(nil, nil, Options{Logger: discardLogger()})
	data := randBytes(1, benchChunk)
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	for b.Loop() {
		buf := c.getBuf()
		copy(*buf, data)
		shards, err := c.encode(*buf, benchChunk)
		if err != nil {
			b.Fatal(err)
		}
		for _, s := range shards {
			chunkserver.Sum(s)
		}
		c.putBuf(buf)
	}
}

// BenchmarkWritePathEncodeOnly4x2x4MiB leaves out the copy from the caller
// and the checksums: the encoder as the write path calls it.
func BenchmarkWritePathEncodeOnly4x2x4MiB(b *testing.B) {
	c := New(nil, nil, Options{Logger: discardLogger()})
	buf := c.getBuf()
	copy(*buf, randBytes(1, benchChunk))
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.encode(*buf, benchChunk); err != nil {
			b.Fatal(err)
		}
	}
}
