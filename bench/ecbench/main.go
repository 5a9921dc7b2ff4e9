// Command ecbench measures Dockyard's erasure-coded data path on one machine:
// the raw klauspost/reedsolomon encode rate on one core, then writing and
// reading a large file through the fs Go client into six in-process
// chunkservers — healthy, and degraded with two of them stopped — once with
// disk stores (fsync'd, the real thing) and once with memory stores (the
// same path with the disk taken out, to show what else limits it).
//
// By default every shard is made durable before it is acknowledged (the
// fs client's DurableWrites); -buffered writes shards buffered and makes the
// file durable with one Sync at the end, inside the timed write, as an
// application that writes a file and fsyncs it does.
//
// The metaserver is a single-node Raft metaserver in the same process,
// reached over its HTTP API with the Go client, as `dockyard serve` runs it
// (-meta memory uses the FSM without Raft instead). A 1 GiB file is a few
// hundred chunk allocations and a few dozen commits, so metadata is not what
// this measures.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/klauspost/reedsolomon"

	"github.com/dockyard/dockyard/chunkserver"
	csserver "github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/metaserver"
	msserver "github.com/dockyard/dockyard/metaserver/server"
)

func main() {
	size := flag.Int64("size", 1<<30, "bytes to write and read")
	dir := flag.String("dir", "", "parent of the chunkservers' data directories (default: a new temporary directory, removed afterwards)")
	stores := flag.String("stores", "disk,memory", "which shard stores to run: disk, memory or both")
	servers := flag.Int("chunkservers", 6, "chunkservers to start")
	k := flag.Int("k", 4, "data shards")
	m := flag.Int("m", 2, "parity shards")
	down := flag.Int("down", 2, "chunkservers stopped for the degraded read")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	metaKind := flag.String("meta", "raft", "metaserver: raft (single node over HTTP) or memory (the FSM in process)")
	uploads := flag.Int("uploads", 0, "chunks the fs client encodes and uploads at once (fs.Options.MaxUploads; 0 = its default)")
	nosync := flag.Bool("nosync", false, "disk stores skip fsync (store.WithoutSync), to show what the fsyncs cost")
	group := flag.Bool("group-commit", false, "disk stores share file-system flushes between concurrent shard writes (store.WithGroupCommit) instead of an fsync pair per shard")
	buffered := flag.Bool("buffered", false, "write shards buffered and make the file durable with one Sync at the end (counted in the write), instead of every shard durable on its own")
	earlyWriteback := flag.Bool("early-writeback", true, "with -buffered, disk stores start each shard file's writeback as soon as it is written (sync_file_range)")
	transport := flag.String("transport", "local", "how the fs client reaches the chunkservers: local (in-process calls, as `dockyard serve` does) or http (loopback HTTP, as another process does)")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "ecbench:", err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if *transport != "local" && *transport != "http" {
		fmt.Fprintf(os.Stderr, "ecbench: -transport %q: want local or http\n", *transport)
		os.Exit(2)
	}
	mode := syncMode(*nosync, *group, *buffered, *earlyWriteback)
	if err := run(*size, *dir, *stores, *metaKind, *transport, mode, *uploads, *servers, *k, *m, *down); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "ecbench:", err)
		os.Exit(1)
	}
}

func run(size int64, dir, stores, metaKind, transport, sync string, uploads, servers, k, m, down int) error {
	fmt.Printf("ecbench: %d MiB, %d+%d over %d chunkservers (%s transport, %s), GOMAXPROCS=%d, %s\n", size>>20, k, m, servers, transport, sync, runtime.GOMAXPROCS(0), runtime.Version())
	raw, err := rawEncode(k, m, 4<<20, 2*time.Second)
	if err != nil {
		return err
	}
	fmt.Printf("%-34s %8.0f MB/s\n", fmt.Sprintf("raw encode %d+%d, 4 MiB, one core", k, m), raw)
	fmt.Printf("  (load average at start: %s)\n", loadAvg())
	// The other limit of a durable write: what the disk takes. Every data
	// byte costs (k+m)/k bytes of shards, all fsynced.
	var diskLimit float64
	if contains(stores, "disk") && sync != "no fsync" {
		disk, err := diskRate(dir, 768<<20, servers)
		if err != nil {
			return fmt.Errorf("measuring the disk: %w", err)
		}
		diskLimit = disk * float64(k) / float64(k+m)
		fmt.Printf("%-34s %8.0f MB/s  -> at most %.0f MB/s of data at %d+%d\n", fmt.Sprintf("disk: %d writers, 768 MiB + fsync", servers), disk, diskLimit, k, m)
	}
	for _, kind := range []string{"disk", "memory"} {
		if !contains(stores, kind) {
			continue
		}
		limit := 0.0
		if kind == "disk" {
			limit = diskLimit
		}
		if err := runStore(kind, metaKind, transport, sync, uploads, size, dir, servers, k, m, down, raw, limit); err != nil {
			return fmt.Errorf("%s stores: %w", kind, err)
		}
	}
	return nil
}

// syncMode names how the disk stores make shards durable.
func syncMode(nosync, group, buffered, early bool) string {
	switch {
	case nosync:
		return "no fsync"
	case group && buffered:
		return "buffered + one sync, group commit"
	case group:
		return "group commit"
	case buffered && !early:
		return "buffered + one sync, no early writeback"
	case buffered:
		return "buffered + one sync"
	}
	return "fsync per file"
}

func contains(list, s string) bool {
	for _, item := range strings.Split(list, ",") {
		if strings.TrimSpace(item) == s {
			return true
		}
	}
	return false
}

// rawEncode is the reference: reedsolomon's own encoder, one goroutine, on
// one chunk's shards, in data bytes per second.
func rawEncode(k, m int, chunk int, d time.Duration) (float64, error) {
	enc, err := reedsolomon.New(k, m, reedsolomon.WithMaxGoroutines(1))
	if err != nil {
		return 0, err
	}
	shards, err := enc.Split(randomBytes(chunk, 1))
	if err != nil {
		return 0, err
	}
	// Timed by CPU time, not the wall clock, so other work on a shared
	// machine does not lower the reference.
	var n int64
	start, cpu0 := time.Now(), cpuTime()
	for time.Since(start) < d {
		if err := enc.Encode(shards); err != nil {
			return 0, err
		}
		n += int64(chunk)
	}
	return mbps(n, cpuTime()-cpu0), nil
}

func runStore(kind, metaKind, transport, sync string, uploads int, size int64, dir string, n, k, m, down int, raw, diskLimit float64) error {
	base, err := os.MkdirTemp(dir, "ecbench-"+kind+"-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var api *metaserver.Client
	switch metaKind {
	case "memory":
		api = msserver.NewMemory().API()
	case "raft":
		node, err := msserver.Start(msserver.Config{
			ID: "m1", DataDir: base + "/meta", APIAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		})
		if err != nil {
			return err
		}
		defer node.Close()
		wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
		_, err = node.WaitLeader(wctx)
		wcancel()
		if err != nil {
			return fmt.Errorf("metaserver: %w", err)
		}
		if api, err = metaserver.NewClient([]string{node.APIAddr()}); err != nil {
			return err
		}
	default:
		return fmt.Errorf("-meta %q: want raft or memory", metaKind)
	}
	var css []*csserver.Server
	defer func() {
		for _, s := range css {
			s.Close()
		}
	}()
	for i := range n {
		cfg := csserver.Config{
			DataDir: fmt.Sprintf("%s/cs%d", base, i), Cluster: api, Chunks: api,
			ScrubRate: -1, Logger: quiet, NoSync: sync == "no fsync", GroupCommit: strings.Contains(sync, "group commit"),
		}
		if kind == "memory" {
			cfg.Store, cfg.ID = store.NewMemory(0), metaserver.ServerID(fmt.Sprintf("cs%d", i))
		} else if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
			return err
		}
		if kind == "disk" && strings.Contains(sync, "no early writeback") {
			// The server has no setting for it: open the store here.
			d, err := store.OpenDisk(cfg.DataDir, 0, store.WithoutEarlyWriteback())
			if err != nil {
				return err
			}
			defer d.Close()
			cfg.Store, cfg.ID = d, metaserver.ServerID(fmt.Sprintf("cs%d", i))
		}
		s, err := csserver.New(cfg)
		if err != nil {
			return err
		}
		if err := s.Start(ctx); err != nil {
			return err
		}
		css = append(css, s)
	}
	if err := waitUp(ctx, api, n); err != nil {
		return err
	}
	// One shard client for every phase, as a process has: with the local
	// transport it calls the servers it holds instead of dialling them.
	shards := chunkserver.NewClient(nil)
	if transport == "local" {
		for _, s := range css {
			shards.Attach(s.Addr(), s)
		}
	}
	buffered := strings.HasPrefix(sync, "buffered")
	opt := fs.Options{K: k, M: m, Logger: quiet, MaxUploads: uploads, DurableWrites: !buffered}
	newClient := func() *fs.Client { return fs.New(api, shards, opt) }

	src := &stream{left: size, block: randomBytes(16<<20, 2), h: xxhash.New()}
	start, cpu0 := time.Now(), cpuTime()
	wc := newClient()
	a, err := wc.WriteFile(ctx, "/ecbench", src, 0o644)
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	var syncTime time.Duration
	if buffered {
		// What fsync on the file costs: every chunkserver it wrote to
		// flushes what it holds buffered.
		s0 := time.Now()
		if err := wc.SyncInode(ctx, a.Ino); err != nil {
			return fmt.Errorf("sync: %w", err)
		}
		syncTime = time.Since(s0)
	}
	wall := time.Since(start)
	report(kind+" stores: write", size, wall, cpuTime()-cpu0, raw)
	if buffered {
		fmt.Printf("  (the Sync at the end took %.2f s of it)\n", syncTime.Seconds())
	}
	if diskLimit > 0 {
		fmt.Printf("  (%.0f%% of what the disk takes at %d+%d)\n", 100*mbps(size, wall)/diskLimit, k, m)
	}

	start, cpu0 = time.Now(), cpuTime()
	sum, err := readBack(ctx, newClient(), size)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	if sum != src.h.Sum64() {
		return errors.New("read back different bytes than written")
	}
	report(kind+" stores: read, healthy", size, time.Since(start), cpuTime()-cpu0, 0)

	for _, s := range css[:down] {
		// Detached first, as `dockyard serve` does, so the client meets a
		// refused call rather than a closing store.
		shards.Detach(s.Addr())
		s.Close()
	}
	start, cpu0 = time.Now(), cpuTime()
	sum, err = readBack(ctx, newClient(), size)
	if err != nil {
		return fmt.Errorf("degraded read: %w", err)
	}
	if sum != src.h.Sum64() {
		return errors.New("degraded read returned different bytes than written")
	}
	report(fmt.Sprintf("%s stores: read, %d of %d down", kind, down, n), size, time.Since(start), cpuTime()-cpu0, 0)
	return nil
}

func waitUp(ctx context.Context, api metaserver.API, n int) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		cs, err := api.Chunkservers(ctx)
		if err == nil && len(cs) == n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d chunkservers registered: %v", len(cs), n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// report prints a phase: wall-clock MB/s, and MB per CPU-second of the
// whole process (client and the in-process chunkservers together), which
// stays meaningful when other work shares the machine.
func report(what string, size int64, wall, cpu time.Duration, raw float64) {
	line := fmt.Sprintf("%-34s %8.0f MB/s  cpu %5.1f s  %6.0f MB/cpu-s", what, mbps(size, wall), cpu.Seconds(), mbps(size, cpu))
	if raw > 0 {
		line += fmt.Sprintf("  (%.0f%% of raw encode per core)", 100*mbps(size, cpu)/raw)
	}
	fmt.Println(line)
}

// diskRate writes n bytes to files in dir (the system's temporary directory
// when empty), from the given number of writers at once in 4 MiB writes,
// fsyncs them and returns the rate in MB/s: how fast this disk makes bytes
// durable when several chunkservers write to it, the ceiling for shards
// written and fsynced however they are batched.
func diskRate(dir string, n int64, writers int) (float64, error) {
	buf := randomBytes(4<<20, 3)
	errs := make(chan error, writers)
	start := time.Now()
	for range writers {
		go func() {
			f, err := os.CreateTemp(dir, "ecbench-disk-")
			if err != nil {
				errs <- err
				return
			}
			defer os.Remove(f.Name())
			defer f.Close()
			for off := int64(0); off < n/int64(writers); off += int64(len(buf)) {
				if _, err := f.Write(buf); err != nil {
					errs <- err
					return
				}
			}
			errs <- f.Sync()
		}()
	}
	var err error
	for range writers {
		err = errors.Join(err, <-errs)
	}
	if err != nil {
		return 0, err
	}
	return mbps(n, time.Since(start)), nil
}

// cpuTime is the user+system CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// readBack reads the file sequentially in 4 MiB reads, the way cp does.
func readBack(ctx context.Context, c *fs.Client, size int64) (uint64, error) {
	f, err := c.OpenPath(ctx, "/ecbench")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := xxhash.New()
	buf := make([]byte, 4<<20)
	var off int64
	for {
		n, err := f.ReadAt(buf, off)
		h.Write(buf[:n])
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if off != size {
		return 0, fmt.Errorf("read %d bytes, wrote %d", off, size)
	}
	return h.Sum64(), nil
}

// stream yields size incompressible bytes without holding them: a random
// block repeated, each repetition stamped with its offset so no two chunks
// are alike. It hashes what it yields.
type stream struct {
	left  int64
	off   int64
	block []byte
	h     *xxhash.Digest
}

func (s *stream) Read(p []byte) (int, error) {
	if s.left == 0 {
		return 0, io.EOF
	}
	n := 0
	for n < len(p) && s.left > 0 {
		pos := s.off % int64(len(s.block))
		c := copy(p[n:min(len(p), n+int(s.left))], s.block[pos:])
		if pos == 0 && c >= 8 {
			for i := range 8 {
				p[n+i] ^= byte(s.off >> (8 * i))
			}
		}
		n += c
		s.off += int64(c)
		s.left -= int64(c)
	}
	s.h.Write(p[:n])
	return n, nil
}

func randomBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := 0; i+8 <= n; i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	return b
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func mbps(n int64, d time.Duration) float64 { return float64(n) / 1e6 / d.Seconds() }
