package server

import (
	"context"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	ms "github.com/dockyard/dockyard/metaserver"
)

// The API path's CPU per operation on one node, over the stream protocol and
// over plain HTTP requests: 16 clients, one operation in flight each, as
// bench/metabench runs them. cpu-ns/op is the process's CPU time (client and
// server) per operation:
//
//	go test -run XXX -bench 'API' -cpu 1 ./metaserver/server/
func BenchmarkAPI(b *testing.B) {
	for _, mode := range []string{"stream", "http"} {
		b.Run("lookup/"+mode, func(b *testing.B) { benchAPI(b, mode, true) })
		b.Run("create/"+mode, func(b *testing.B) { benchAPI(b, mode, false) })
	}
}

func benchAPI(b *testing.B, mode string, lookups bool) {
	cfg := testConfig(nil, "b1", b.TempDir())
	n, err := Start(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.WaitLeader(ctx); err != nil {
		b.Fatal(err)
	}
	const clients = 16
	var opts []ms.ClientOption
	if mode == "http" {
		opts = append(opts, ms.WithoutStream())
	}
	cs := make([]*ms.Client, clients)
	for i := range cs {
		if cs[i], err = ms.NewClient([]string{n.APIAddr()}, opts...); err != nil {
			b.Fatal(err)
		}
		defer cs[i].Close()
	}
	bg := context.Background()
	dir, err := cs[0].Create(bg, ms.CreateIn{Parent: ms.RootIno, Name: "d", Mode: sIFDIR | 0o755})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := cs[0].Create(bg, ms.CreateIn{Parent: dir.Ino, Name: "f", Mode: sIFREG | 0o644}); err != nil {
		b.Fatal(err)
	}
	var next, names atomic.Int64
	b.SetParallelism(clients) // with -cpu=1: 16 goroutines
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := cpuTime()
	b.RunParallel(func(pb *testing.PB) {
		c := cs[int(next.Add(1)-1)%clients]
		for pb.Next() {
			var err error
			if lookups {
				_, err = c.Lookup(bg, dir.Ino, "f")
			} else {
				_, err = c.Create(bg, ms.CreateIn{Parent: dir.Ino, Name: "n" + strconv.FormatInt(names.Add(1), 10), Mode: sIFREG | 0o644, Exclusive: true})
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	// Wall time per op depends on what else the machine runs; the
	// process's CPU time per op (client and server together) does not.
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
