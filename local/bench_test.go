package local_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/local"
)

// BenchmarkClusterWrite64MiB and BenchmarkClusterRead64MiB measure what a
// registry push and pull cost below the registry: a 64 MiB file written
// through the cluster's fs client (4+2 erasure coding, 4 MiB chunks, six
// chunkservers on disk stores) and read back, per shard transport and fsync
// policy. They are what -cpuprofile is taken on when tuning the shard path.
func BenchmarkClusterWrite64MiB(b *testing.B) {
	for _, cfg := range benchConfigs() {
		b.Run(cfg.name, func(b *testing.B) {
			c := startCluster(b, cfg.cfg)
			data := benchData(64 << 20)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			ctx := context.Background()
			for i := 0; b.Loop(); i++ {
				if _, err := c.FS.WriteFile(ctx, fmt.Sprintf("/w%d", i), bytes.NewReader(data), 0o644); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkClusterRead64MiB(b *testing.B) {
	for _, cfg := range benchConfigs() {
		b.Run(cfg.name, func(b *testing.B) {
			c := startCluster(b, cfg.cfg)
			data := benchData(64 << 20)
			ctx := context.Background()
			if _, err := c.FS.WriteFile(ctx, "/r", bytes.NewReader(data), 0o644); err != nil {
				b.Fatal(err)
			}
			p := make([]byte, 1<<20)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				// A fresh fs client each time, as a pull meets a blob its
				// registry has not read yet: nothing in the client's
				// caches, the shards in the chunkservers' page cache.
				f, err := fs.New(c.Meta, c.Shards, fs.Options{}).OpenPath(ctx, "/r")
				if err != nil {
					b.Fatal(err)
				}
				for off := int64(0); off < int64(len(data)); off += int64(len(p)) {
					if _, err := f.ReadAt(p, off); err != nil && err != io.EOF {
						b.Fatal(err)
					}
				}
				f.Close()
			}
		})
	}
}

type benchConfig struct {
	name string
	cfg  local.Config
}

func benchConfigs() []benchConfig {
	return []benchConfig{
		{"in-process-fsync", local.Config{}},
		{"in-process-nosync", local.Config{NoSync: true}},
		{"http-fsync", local.Config{HTTPOnly: true}},
		{"http-nosync", local.Config{HTTPOnly: true, NoSync: true}},
	}
}

func benchData(n int) []byte {
	data := make([]byte, n)
	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	return data
}
