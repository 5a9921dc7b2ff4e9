package container

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestKeptContainerState(t *testing.T) {
	state := filepath.Join(t.TempDir(), "state")
	rec := Record{Name: "web.1", Image: "127.0.0.1:5000/web:latest", Manifest: "sha256:" + strings.Repeat("a", 64),
		Scheme: "http", Created: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	if err := Reserve(state, rec); err != nil {
		t.Fatal(err)
	}
	if err := Reserve(state, rec); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("a second container with the name: %v", err)
	}
	got, err := Load(state, "web.1")
	if err != nil || got != rec {
		t.Fatalf("Load = %+v, %v; want %+v", got, err, rec)
	}
	if want := filepath.Join(state, "web.1", "bundle", "web.1", "upper"); UpperDir(state, "web.1") != want {
		t.Errorf("UpperDir = %s, want %s (where Run puts a bundle named by its ID)", UpperDir(state, "web.1"), want)
	}
	// A directory that is not a kept container (an unnamed run in
	// progress has no record) is not listed.
	if err := os.MkdirAll(filepath.Join(state, "dockyard-0123"), 0o700); err != nil {
		t.Fatal(err)
	}
	if l, err := List(state); err != nil || len(l) != 1 || l[0].Name != "web.1" {
		t.Errorf("List = %+v, %v", l, err)
	}
	if busy, err := InUse(state, "web.1"); err != nil || busy {
		t.Errorf("InUse = %v, %v", busy, err)
	}
	if err := Remove(state, "web.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(Dir(state, "web.1")); !os.IsNotExist(err) {
		t.Errorf("state left after Remove: %v", err)
	}
	if _, err := Load(state, "web.1"); !errors.Is(err, ErrNoContainer) {
		t.Errorf("Load after Remove: %v", err)
	}
	if err := Remove(state, "web.1"); !errors.Is(err, ErrNoContainer) {
		t.Errorf("Remove twice: %v", err)
	}
	for _, bad := range []string{"", "../x", "a/b", ".hidden", "-x", strings.Repeat("a", 64), "a b"} {
		if err := CheckName(bad); err == nil {
			t.Errorf("name %q accepted", bad)
		}
		if err := Reserve(state, Record{Name: bad}); err == nil {
			t.Errorf("Reserve with name %q accepted", bad)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	for in, want := range map[string]string{
		`/run/a\040b`: "/run/a b",
		`/plain`:      "/plain",
		`/tab\011x`:   "/tab\tx",
		`/odd\04`:     `/odd\04`,
		`/back\134s`:  `/back\s`,
	} {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescapeMountinfo(%q) = %q, want %q", in, got, want)
		}
	}
}
