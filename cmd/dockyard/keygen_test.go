package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeygenAndRotate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys")
	run := func(args ...string) error {
		cmd := keygenCmd()
		cmd.SetArgs(args)
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetOut(&bytes.Buffer{})
		return cmd.Execute()
	}
	if err := run(path, "--id", "one"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	if err := run(path); err == nil || !strings.Contains(err.Error(), "--rotate") {
		t.Errorf("keygen over an existing file: %v, want a refusal that names --rotate", err)
	}
	if err := run(path, "--rotate", "--id", "two"); err != nil {
		t.Fatal(err)
	}
	keys, err := loadEncryptionKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(keys.IDs(), ","); got != "two,one" {
		t.Errorf("keys after rotation: %s, want two,one", got)
	}
	if err := run(path, "--rotate", "--id", "one"); err == nil {
		t.Error("rotating in a second key named one succeeded")
	}
	if err := run(filepath.Join(t.TempDir(), "x"), "--id", "a b"); err == nil {
		t.Error("keygen with an invalid ID succeeded")
	}
	if keys, err := loadEncryptionKeys(""); keys != nil || err != nil {
		t.Errorf("no key file: %v, %v; want no keys and no error", keys, err)
	}
	if _, err := loadEncryptionKeys(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("a missing key file loaded")
	}
}
