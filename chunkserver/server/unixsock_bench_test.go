//go:build linux

package server_test

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"testing"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/server"
)

// Short-circuit against loopback HTTP, client and server in one process, so
// the cpu-ns/op column (user+system time of the whole process per shard) is
// what both sides together spend: the figure that decides on a host where a
// mount and its chunkservers share the cores. A disk store without fsync, so
// the shards live in the page cache and the disk is not measured.

func scBenchServer(b *testing.B) (*server.Server, *chunkserver.ShortCircuit) {
	dir, err := os.MkdirTemp("", "scb")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	s, err := server.New(server.Config{DataDir: dir, NoSync: true, ShortCircuit: true, ScrubRate: -1, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	sc, err := chunkserver.DialShortCircuit(context.Background(), chunkserver.NewClient(nil), s.Addr(),
		chunkserver.ShortCircuitOptions{Writes: true, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sc.Close)
	return s, sc
}

func cpuNow() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func benchTransports(b *testing.B, fn func(b *testing.B, c *chunkserver.Client, addr string)) {
	for _, sc := range []bool{false, true} {
		name := "http"
		if sc {
			name = "shortcircuit"
		}
		b.Run(name, func(b *testing.B) {
			s, scs := scBenchServer(b)
			c := chunkserver.NewClient(nil)
			if sc {
				c.Attach(s.Addr(), scs)
			}
			cpu0 := cpuNow()
			fn(b, c, s.Addr())
			b.ReportMetric(float64(cpuNow()-cpu0)/float64(b.N), "cpu-ns/op")
		})
	}
}

func BenchmarkShortCircuitRead1MiB(b *testing.B) {
	benchTransports(b, func(b *testing.B, c *chunkserver.Client, addr string) {
		data := randBytes(1, 1<<20)
		for i := range 16 {
			if _, err := c.Put(context.Background(), addr, fmt.Sprintf("%016x.0", i), data); err != nil {
				b.Fatal(err)
			}
		}
		p := make([]byte, 1<<20)
		b.SetBytes(1 << 20)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := c.ReadAt(context.Background(), addr, fmt.Sprintf("%016x.0", i%16), p, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkShortCircuitPut1MiB(b *testing.B) {
	benchTransports(b, func(b *testing.B, c *chunkserver.Client, addr string) {
		data := randBytes(1, 1<<20)
		b.SetBytes(1 << 20)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := c.PutBuffered(context.Background(), addr, fmt.Sprintf("%016x.0", i%64), data); err != nil {
				b.Fatal(err)
			}
		}
	})
}
