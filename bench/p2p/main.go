// Command p2p measures peer-to-peer block delivery between mounting hosts:
// N fs clients (each standing for one host, with its own block cache and, with
// P2P, its own peer server) read the same file at once, as a hundred hosts
// starting containers from one image do. It reports the bytes the
// chunkservers served and the time until the last client finished, once with
// P2P off and once with it on, side by side in one run.
//
// The cluster is six chunkservers (4+2) with memory stores and an in-memory
// metaserver (with the peer tracker) in this process; every client reaches
// the chunkservers and its peers over loopback HTTP, as separate hosts would.
// Chunkserver bytes are counted on the clients' side, as response bytes of
// shard reads. -cs-mbps caps what each chunkserver can send in all (a token
// bucket per server shared by every client), standing for the chunkservers'
// network links, which P2P exists to spare; 0 leaves loopback unlimited.
//
//	go run ./bench/p2p -clients 8 -size 256 -cs-mbps 400
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/local"
)

var verbose bool

func main() {
	clients := flag.Int("clients", 8, "clients (hosts) reading the file at once")
	sizeMiB := flag.Int64("size", 256, "file size in MiB")
	csMbps := flag.Float64("cs-mbps", 0, "cap on each chunkserver's sending rate in MB/s (0: unlimited)")
	stagger := flag.Duration("stagger", 0, "start client i this much after client i-1")
	flag.BoolVar(&verbose, "v", false, "print each client's P2P counters")
	flag.Parse()
	if err := run(*clients, *sizeMiB<<20, *csMbps, *stagger); err != nil {
		fmt.Fprintln(os.Stderr, "p2p bench:", err)
		os.Exit(1)
	}
}

func run(clients int, size int64, csMbps float64, stagger time.Duration) error {
	if clients < 1 || size < 1 {
		return errors.New("-clients and -size must be positive")
	}
	dir, err := os.MkdirTemp("", "dockyard-p2p-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cl, err := local.Start(local.Config{Dir: dir, NoSync: true, HTTPOnly: true, Logger: log})
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx := context.Background()
	data := make([]byte, size)
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i+8 <= len(data); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			data[i+j] = byte(v >> (8 * j))
		}
	}
	if _, err := cl.FS.WriteFile(ctx, "/layer", bytes.NewReader(data), 0o644); err != nil {
		return fmt.Errorf("writing the file: %w", err)
	}
	fmt.Printf("%d clients reading one %d MiB file at once (stagger %v), chunkservers capped at %s\n\n",
		clients, size>>20, stagger, rate(csMbps))
	fmt.Printf("| P2P | time to last finish | chunkserver bytes | x file size | bytes from peers | verify failures |\n|---|---|---|---|---|---|\n")
	for _, on := range []bool{false, true} {
		res, err := round(ctx, cl, data, clients, csMbps, stagger, on, log)
		if err != nil {
			return err
		}
		mode := "off"
		if on {
			mode = "on"
		}
		fmt.Printf("| %s | %.2f s | %d MiB | %.2f | %d MiB | %d |\n", mode, res.took.Seconds(), res.csBytes>>20,
			float64(res.csBytes)/float64(size), res.peerBytes>>20, res.verifyFailures)
	}
	return nil
}

func rate(mbps float64) string {
	if mbps <= 0 {
		return "nothing (loopback)"
	}
	return fmt.Sprintf("%.0f MB/s each", mbps)
}

type result struct {
	took           time.Duration
	csBytes        int64
	peerBytes      uint64
	verifyFailures uint64
}

// round runs one measurement with fresh clients (empty caches).
func round(ctx context.Context, cl *local.Cluster, data []byte, n int, csMbps float64, stagger time.Duration, p2p bool, log *slog.Logger) (result, error) {
	counting := &countingTransport{base: &http.Transport{MaxIdleConnsPerHost: 64}, limits: map[string]*bucket{}, mbps: csMbps}
	defer counting.base.(*http.Transport).CloseIdleConnections()
	var peers []*fs.P2P
	defer func() {
		for _, p := range peers {
			p.Close()
		}
	}()
	var fcs []*fs.Client
	for range n {
		opt := fs.Options{Logger: log, ReadAhead: 32 << 20}
		if p2p {
			p, err := fs.NewP2P(cl.Meta, fs.P2POptions{Listen: "127.0.0.1:0", Logger: log})
			if err != nil {
				return result{}, err
			}
			peers = append(peers, p)
			opt.P2P = p
		}
		fcs = append(fcs, fs.New(cl.Meta, chunkserver.NewClient(&http.Client{Transport: counting}), opt))
	}
	start := time.Now()
	errs := make(chan error, n)
	for i, c := range fcs {
		go func() {
			time.Sleep(time.Duration(i) * stagger)
			errs <- readAll(ctx, c, data)
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			return result{}, err
		}
	}
	res := result{took: time.Since(start), csBytes: counting.bytes.Load()}
	for _, p := range peers {
		st := p.Stats()
		res.peerBytes += st.PeerBytes
		res.verifyFailures += st.VerifyFailures
		if verbose {
			fmt.Fprintf(os.Stderr, "%+v\n", st)
		}
	}
	return res, nil
}

// readAll reads the file sequentially in 1 MiB reads, as a FUSE mount's
// reader would be served, and checks the bytes.
func readAll(ctx context.Context, c *fs.Client, want []byte) error {
	f, err := c.OpenPath(ctx, "/layer")
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for off := int64(0); off < int64(len(want)); {
		n, err := f.ReadAt(buf, off)
		if !bytes.Equal(buf[:n], want[off:off+int64(n)]) {
			return fmt.Errorf("wrong bytes at %d", off)
		}
		off += int64(n)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// countingTransport counts the response bytes of requests to chunkservers
// and, with mbps set, paces them per server.
type countingTransport struct {
	base   http.RoundTripper
	bytes  atomic.Int64
	mbps   float64
	mu     sync.Mutex
	limits map[string]*bucket
}

func (t *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	var b *bucket
	if t.mbps > 0 {
		t.mu.Lock()
		b = t.limits[r.URL.Host]
		if b == nil {
			b = &bucket{rate: t.mbps * 1e6, at: time.Now()}
			t.limits[r.URL.Host] = b
		}
		t.mu.Unlock()
	}
	resp.Body = &countingBody{ReadCloser: resp.Body, t: t, b: b}
	return resp, nil
}

type countingBody struct {
	io.ReadCloser
	t *countingTransport
	b *bucket
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.t.bytes.Add(int64(n))
	if c.b != nil {
		c.b.take(n)
	}
	return n, err
}

// bucket paces one server's bytes: each read waits until the server could
// have sent them at rate bytes/s, over all its clients.
type bucket struct {
	mu   sync.Mutex
	rate float64
	at   time.Time // when the bytes taken so far are all sent
}

func (b *bucket) take(n int) {
	b.mu.Lock()
	now := time.Now()
	if b.at.Before(now) {
		b.at = now
	}
	b.at = b.at.Add(time.Duration(float64(n) / b.rate * float64(time.Second)))
	wait := b.at.Sub(now)
	b.mu.Unlock()
	time.Sleep(wait)
}
