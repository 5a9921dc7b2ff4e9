package main

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// debugFlag names the persistent flag that serves Go's profiling endpoints
// (/debug/pprof/) of whatever command runs: a server, a mount, a container
// start. They answer without authentication and can stall the process while a
// profile is taken, so the listener is separate from every API port and meant
// for a loopback address.
const debugFlag = "debug-listen"

// startDebug serves the profiling endpoints on addr until the process exits.
// It listens before returning, so a bad or busy address fails the command at
// once instead of being logged later.
func startDebug(addr string) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("--%s: %w", debugFlag, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			// The command goes on without its profiling endpoints; they are
			// not worth stopping a server for.
			fmt.Printf("dockyard: debug listener on %s stopped: %v\n", ln.Addr(), err)
		}
	}()
	return nil
}
