package server_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
)

// The HTTP benchmarks put a memory store behind the server so they measure the
// API and the client over loopback, not the disk (see the store benchmarks).

func benchServer(b *testing.B) *server.Server {
	s, err := server.New(server.Config{Store: store.NewMemory(0), ID: "cs-bench", ScrubRate: -1, Logger: quietLogger()})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func BenchmarkHTTPPut1MiB(b *testing.B) {
	s := benchServer(b)
	c := chunkserver.NewClient(nil)
	data := randBytes(1, 1<<20)
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := c.Put(context.Background(), s.Addr(), fmt.Sprintf("%016x.0", i%64), data); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkHTTPReadAt1MiB(b *testing.B)  { benchHTTPRead(b, 1<<20) }
func BenchmarkHTTPReadAt64KiB(b *testing.B) { benchHTTPRead(b, 64<<10) }

func benchHTTPRead(b *testing.B, n int) {
	s := benchServer(b)
	c := chunkserver.NewClient(nil)
	name := "0000000000000001.0"
	if _, err := c.Put(context.Background(), s.Addr(), name, randBytes(2, 1<<20)); err != nil {
		b.Fatal(err)
	}
	p := make([]byte, n)
	b.SetBytes(int64(n))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if _, err := c.ReadAt(context.Background(), s.Addr(), name, p, int64(i*n%(1<<20))); err != nil {
			b.Fatal(err)
		}
	}
}
