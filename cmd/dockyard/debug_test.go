package main

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
)

func TestStartDebugServesProfiles(t *testing.T) {
	// Take a free port, then give it to startDebug.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	if err := startDebug(addr); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get("http://" + addr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
		t.Fatalf("goroutine profile: status %d, body %.200q", resp.StatusCode, body)
	}
	// The address is now taken: a second start fails at once, naming the flag.
	if err := startDebug(addr); err == nil || !strings.Contains(err.Error(), "--"+debugFlag) {
		t.Fatalf("second start on a busy address: %v, want an error naming --%s", err, debugFlag)
	}
	if err := startDebug(""); err != nil {
		t.Fatalf("no address: %v", err)
	}
}
