package main

import (
	"net"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestMetricsListen(t *testing.T) {
	// Both commands that mount take the flag, off by default.
	for name, c := range map[string]*cobra.Command{"mount": mountCmd(), "run": runCmd()} {
		if f := c.Flags().Lookup(metricsFlag); f == nil || f.DefValue != "" {
			t.Errorf("%s --%s: %v, want a flag that is off by default", name, metricsFlag, f)
		}
	}
	if ln, err := listenMetrics(""); ln != nil || err != nil {
		t.Fatalf("no address: %v, %v; want neither a listener nor an error", ln, err)
	}
	// A busy address fails before anything is mounted, naming the flag.
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	if ln, err := listenMetrics(busy.Addr().String()); err == nil || !strings.Contains(err.Error(), "--"+metricsFlag) {
		if ln != nil {
			ln.Close()
		}
		t.Fatalf("busy address: %v, want an error naming --%s", err, metricsFlag)
	}
	// Without a listener there is nothing to serve or stop.
	serveMetrics(nil, nil, nil)()
}
