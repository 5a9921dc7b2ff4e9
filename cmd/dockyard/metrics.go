package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/spf13/pflag"

	"github.com/dockyard/dockyard/fs/fuse"
)

// metricsFlag names the flag of the commands that mount (mount, run) that
// serves the mount's Prometheus metrics. Like --debug-listen it answers
// without authentication on a port of its own and is not refused on a
// non-loopback address: the counters reveal no file names or bytes, and a
// scraper on another host is what the flag is for.
const metricsFlag = "metrics-listen"

func addMetricsFlag(f *pflag.FlagSet, addr *string) {
	f.StringVar(addr, metricsFlag, "", "serve the mount's Prometheus metrics (dockyard_mount_*, see docs/mount.md) at /metrics on `ADDR` (host:port; off when empty); "+
		"unauthenticated, keep it on loopback or a network only scrapers reach")
}

// listenMetrics listens on addr, before anything is mounted, so a bad or
// busy address fails the command at once. Nil when addr is empty.
func listenMetrics(addr string) (net.Listener, error) {
	if addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", metricsFlag, err)
	}
	return ln, nil
}

// serveMetrics serves srv's metrics on ln (from listenMetrics; nil: none)
// until the returned stop is called; stop closes ln.
func serveMetrics(ln net.Listener, srv *fuse.Server, log *slog.Logger) (stop func()) {
	if ln == nil {
		return func() {}
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", fuse.MetricsHandler(srv))
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			// The mount goes on without its metrics; they are not worth
			// unmounting for.
			log.Warn("metrics listener stopped", "addr", ln.Addr(), "err", err)
		}
	}()
	return func() {
		hs.Close()
		<-done
	}
}
