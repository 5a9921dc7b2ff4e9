// Command metabench measures the metaserver's file creates/s and lookups/s,
// with p50/p99 latency, through the Go client against a 3-node Raft cluster.
// By default it starts the cluster itself, in this process, on 127.0.0.1 with
// real TCP transports and fsynced Raft logs; -meta points it at a running
// cluster instead.
//
//	go run ./bench/metabench                 # 3 in-process nodes, 1 and 16 clients
//	go run ./bench/metabench -meta A,B,C     # an existing cluster
//
// Every client is its own metaserver.Client (own connections, own request
// ids) running one operation at a time, as a FUSE mount's request loop would.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	ms "github.com/dockyard/dockyard/metaserver"
	"github.com/dockyard/dockyard/metaserver/server"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "metabench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		meta     = flag.String("meta", "", "comma-separated API addresses of a running cluster (default: start 3 nodes in process)")
		nodes    = flag.Int("nodes", 3, "nodes of the in-process cluster")
		clients  = flag.String("clients", "1,16", "comma-separated numbers of concurrent clients, one run each")
		ops      = flag.Int("ops", 20000, "operations per run (creates, then as many lookups)")
		duration = flag.Duration("max", 60*time.Second, "stop a run after this long even if -ops are not done")
		noSync   = flag.Bool("nosync", false, "in-process cluster: skip fsync of the Raft log")
		profile  = flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
		lookups  = flag.Bool("lookups", true, "after the creates of each run, look every created name up")
		stale    = flag.Bool("stale", false, "lookups are stale reads, answered by every node (metaserver.AllowStale)")
		breakdn  = flag.Bool("breakdown", true, "after the table, where the creates' time went on each node (from its /metrics)")
		syncWait = flag.Duration("leader-sync-delay", 0, "in-process cluster: server.Config.LeaderSyncDelay (0: the default; negative: sync each append at once)")
	)
	flag.Parse()
	if *profile != "" {
		f, err := os.Create(*profile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	var counts []int
	for _, s := range strings.Split(*clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-clients %q: want positive numbers", *clients)
		}
		counts = append(counts, n)
	}
	addrs := splitAddrs(*meta)
	if len(addrs) == 0 {
		cluster, err := startCluster(*nodes, *noSync, *syncWait)
		if err != nil {
			return err
		}
		defer cluster.close()
		addrs = cluster.addrs()
	}
	setup, err := ms.NewClient(addrs)
	if err != nil {
		return err
	}
	defer setup.Close()
	ctx := context.Background()
	base, err := setup.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: fmt.Sprintf("metabench-%d", time.Now().UnixNano()), Mode: syscall.S_IFDIR | 0o755, Exclusive: true})
	if err != nil {
		return fmt.Errorf("creating the benchmark directory: %w", err)
	}

	fmt.Printf("metaserver: %d nodes, %s\n\n", len(addrs), strings.Join(addrs, ","))
	fmt.Println("| operation | clients | ops | ops/s | p50 | p99 | CPU/op |")
	fmt.Println("|---|---:|---:|---:|---:|---:|---:|")
	var rows []breakdownRow
	for _, n := range counts {
		dir, err := setup.Create(ctx, ms.CreateIn{Parent: base.Ino, Name: fmt.Sprintf("c%d", n), Mode: syscall.S_IFDIR | 0o755, Exclusive: true})
		if err != nil {
			return err
		}
		cs := make([]*ms.Client, n)
		for i := range cs {
			if cs[i], err = ms.NewClient(addrs); err != nil {
				return err
			}
		}
		var before []sample
		if *breakdn {
			if before, err = scrapeAll(addrs); err != nil {
				return fmt.Errorf("reading metrics for the breakdown (-breakdown=false skips it): %w", err)
			}
		}
		created, r, err := phase(cs, *ops, *duration, func(c *ms.Client, i int) error {
			_, err := c.Create(ctx, ms.CreateIn{Parent: dir.Ino, Name: "f" + strconv.Itoa(i), Mode: syscall.S_IFREG | 0o644, Exclusive: true})
			return err
		})
		if err != nil {
			return fmt.Errorf("creates with %d clients: %w", n, err)
		}
		r.print("create", n)
		if *breakdn {
			after, err := scrapeAll(addrs)
			if err != nil {
				return fmt.Errorf("reading metrics for the breakdown: %w", err)
			}
			rows = append(rows, diffSamples(addrs, before, after, n)...)
		}
		if !*lookups {
			continue
		}
		lctx, lname := ctx, "lookup"
		if *stale {
			lctx, lname = ms.AllowStale(ctx), "stale lookup"
		}
		_, r, err = phase(cs, created, *duration, func(c *ms.Client, i int) error {
			_, err := c.Lookup(lctx, dir.Ino, "f"+strconv.Itoa(i))
			return err
		})
		if err != nil {
			return fmt.Errorf("lookups with %d clients: %w", n, err)
		}
		r.print(lname, n)
		for _, c := range cs {
			c.Close()
		}
	}
	if *breakdn {
		printBreakdown(rows)
	}
	return nil
}

type result struct {
	ops     int
	elapsed time.Duration
	cpu     time.Duration // CPU time of the whole process (cluster and clients)
	lat     []time.Duration
}

// cpuTime is the process's user+system CPU time so far. On a shared machine
// wall-clock rates depend on what else runs; CPU per operation does not.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func (r result) print(op string, clients int) {
	slices.Sort(r.lat)
	pct := func(p float64) time.Duration {
		if len(r.lat) == 0 {
			return 0
		}
		return r.lat[min(len(r.lat)-1, int(p*float64(len(r.lat))))]
	}
	fmt.Printf("| %s | %d | %d | %.0f | %s | %s | %.0f µs |\n", op, clients, r.ops,
		float64(r.ops)/r.elapsed.Seconds(), fmtDur(pct(0.50)), fmtDur(pct(0.99)),
		float64(r.cpu)/float64(time.Microsecond)/float64(max(r.ops, 1)))
}

func fmtDur(d time.Duration) string {
	return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond))
}

// phase runs op for indexes 0..total-1 spread over the clients and returns
// how many completed (all of them unless max ran out).
func phase(cs []*ms.Client, total int, max time.Duration, op func(*ms.Client, int) error) (int, result, error) {
	var (
		next     atomic.Int64
		wg       sync.WaitGroup
		mu       sync.Mutex
		lat      = make([]time.Duration, 0, total)
		firstErr error
	)
	start, cpu0 := time.Now(), cpuTime()
	deadline := start.Add(max)
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, total/len(cs)+1)
			defer func() {
				mu.Lock()
				lat = append(lat, local...)
				mu.Unlock()
			}()
			for {
				i := int(next.Add(1) - 1)
				if i >= total || time.Now().After(deadline) {
					return
				}
				t0 := time.Now()
				if err := op(c, i); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("op %d: %w", i, err)
					}
					mu.Unlock()
					return
				}
				local = append(local, time.Since(t0))
			}
		}()
	}
	wg.Wait()
	r := result{ops: len(lat), elapsed: time.Since(start), cpu: cpuTime() - cpu0, lat: lat}
	return len(lat), r, firstErr
}

func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

type cluster struct {
	nodes []*server.Node
	dir   string
}

func startCluster(size int, noSync bool, syncDelay time.Duration) (*cluster, error) {
	dir, err := os.MkdirTemp("", "metabench-")
	if err != nil {
		return nil, err
	}
	c := &cluster{dir: dir}
	for i := 1; i <= size; i++ {
		cfg := server.Config{
			ID: fmt.Sprintf("m%d", i), DataDir: fmt.Sprintf("%s/m%d", dir, i),
			APIAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0", NoSync: noSync, LogOutput: io.Discard,
			LeaderSyncDelay: syncDelay,
		}
		if i > 1 {
			cfg.Join = c.nodes[0].APIAddr()
		}
		n, err := server.Start(cfg)
		if err != nil {
			c.close()
			return nil, fmt.Errorf("starting node %d: %w", i, err)
		}
		c.nodes = append(c.nodes, n)
		if i == 1 {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			_, err := n.WaitLeader(ctx)
			cancel()
			if err != nil {
				c.close()
				return nil, err
			}
		}
	}
	return c, nil
}

func (c *cluster) addrs() []string {
	var out []string
	for _, n := range c.nodes {
		out = append(out, n.APIAddr())
	}
	return out
}

func (c *cluster) close() {
	for _, n := range c.nodes {
		_ = n.Close()
	}
	_ = os.RemoveAll(c.dir)
}
