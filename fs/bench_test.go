package fs

import (
	"bytes"
	"context"
	"io"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/reedsolomon"

	"github.com/dockyard/dockyard/chunkserver"
)

// The CPU work the write path does per chunk, next to the raw encoder it is
// built on. Run on one core: go test -run '^$' -bench Encode -cpu 1 ./fs/
// Besides wall-clock MB/s each reports MB per CPU-second of the process,
// which holds up when other work shares the machine.

const benchChunk = 4 << 20

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuMeter reports MB/cpu-s for the bytes the benchmark processed.
func cpuMeter(b *testing.B) func() {
	start := processCPU()
	return func() {
		if cpu := processCPU() - start; cpu > 0 {
			b.ReportMetric(float64(b.N)*benchChunk/1e6/cpu.Seconds(), "MB/cpu-s")
		}
	}
}

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
	defer cpuMeter(b)()
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
	defer cpuMeter(b)()
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

// BenchmarkShardChecksums4x2x4MiB is the floor that every stored byte's
// checksum puts under the write path: xxhash64 of the six shards of a 4 MiB
// chunk (1.5 bytes hashed per byte of data) and nothing else, rated per byte
// of data like the encode benchmarks. No write path that checksums what it
// stores can run faster per core than this, whatever the encoder does.
func BenchmarkShardChecksums4x2x4MiB(b *testing.B) {
	c := New(nil, nil, Options{Logger: discardLogger()})
	buf := c.getBuf()
	copy(*buf, randBytes(1, benchChunk))
	shards, err := c.encode(*buf, benchChunk)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(benchChunk)
	b.ReportAllocs()
	defer cpuMeter(b)()
	for b.Loop() {
		for _, s := range shards {
			chunkserver.Sum(s)
		}
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
	defer cpuMeter(b)()
	for b.Loop() {
		if _, err := c.encode(*buf, benchChunk); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadThroughCache64MiB reads a 64 MiB file (4+2, 4 MiB chunks) in
// 1 MiB reads with one long-lived client whose block cache holds 16 MiB, as a
// registry serving pulls of blobs larger than its cache does: every block is
// fetched, cached and later evicted. The chunkservers are attached in
// process, so what is measured is the client's own read path, not loopback
// HTTP. Run: go test -run '^$' -bench ReadThroughCache -benchmem ./fs/
func BenchmarkReadThroughCache64MiB(b *testing.B) {
	const size = 64 << 20
	cl := newCluster(b, 6)
	shards := chunkserver.NewClient(nil)
	for _, s := range cl.servers {
		shards.Attach(s.addr(), &attachedFake{s: s})
	}
	c := New(cl.meta, shards, Options{CacheBytes: 16 << 20, Logger: discardLogger()})
	ctx := context.Background()
	data := randBytes(2, size)
	if _, err := c.WriteFile(ctx, "/r", bytes.NewReader(data), 0o644); err != nil {
		b.Fatal(err)
	}
	p := make([]byte, 1<<20)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		f, err := c.OpenPath(ctx, "/r")
		if err != nil {
			b.Fatal(err)
		}
		for off := int64(0); off < size; off += int64(len(p)) {
			if _, err := f.ReadAt(p, off); err != nil && err != io.EOF {
				b.Fatal(err)
			}
		}
		f.Close()
	}
}
