package main

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/cobra"

	"github.com/dockyard/dockyard/internal/clusterauth"
)

func TestLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:9500": true, "[::1]:9500": true, "localhost:1": true, "127.0.0.2:1": true,
		":9500": false, "0.0.0.0:9500": false, "10.0.0.1:9500": false, "meta1:9500": false, "garbage": false,
	} {
		if got := loopback(addr); got != want {
			t.Errorf("loopback(%q) = %v, want %v", addr, got, want)
		}
	}
}

func TestClusterSecretFlag(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "secret")
	text, err := clusterauth.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(good, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	short := filepath.Join(dir, "short")
	if err := os.WriteFile(short, []byte("abcd"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (*clusterauth.Secret, error) {
		cmd := &cobra.Command{Use: "x", RunE: func(*cobra.Command, []string) error { return nil }}
		addClusterSecretFlag(cmd.Flags())
		if err := cmd.ParseFlags(args); err != nil {
			t.Fatal(err)
		}
		return clusterSecret(cmd)
	}
	if s, err := run(); s != nil || err != nil {
		t.Fatalf("no flag: %v, %v; want no secret and no error", s, err)
	}
	if s, err := run("--cluster-secret-file", good); s == nil || err != nil {
		t.Fatalf("good file: %v, %v", s, err)
	}
	if _, err := run("--cluster-secret-file", short); !errors.Is(err, clusterauth.ErrSecretTooShort) {
		t.Fatalf("short file: %v", err)
	}
	if _, err := run("--cluster-secret-file", filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v", err)
	}
	// A command without the flag has no secret.
	if s, err := clusterSecret(&cobra.Command{Use: "y"}); s != nil || err != nil {
		t.Fatalf("command without the flag: %v, %v", s, err)
	}
}
