package fuse

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestChangesReachOtherMountThroughFeed: mount B asks its metadata cache on
// every stat (no kernel caching), and the cache holds what B saw; only the
// change feed can tell it that mount A changed something.
func TestChangesReachOtherMountThroughFeed(t *testing.T) {
	c := newCluster(t)
	a, _ := c.mount(t, Options{})
	clientB, cacheB := c.cachedClient(t)
	b, _ := c.mountWith(t, clientB, Options{EntryTimeout: -1, AttrTimeout: -1})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := cacheB.WaitLive(ctx); err != nil {
		t.Fatal(err)
	}

	if err := os.WriteFile(filepath.Join(a, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	stat := func(name string) (os.FileInfo, error) { return os.Stat(filepath.Join(b, name)) }
	waitFor(t, 5*time.Second, "B to see f", func() bool { _, err := stat("f"); return err == nil })
	hits := cacheB.Stats().Hits
	for range 3 {
		if fi, err := stat("f"); err != nil || fi.Mode().Perm() != 0o644 {
			t.Fatalf("B stat f: %v, %v", fi, err)
		}
	}
	if cacheB.Stats().Hits == hits {
		t.Fatal("B's stats never hit its metadata cache; the test would not exercise the feed")
	}

	if err := os.Chmod(filepath.Join(a, "f"), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "B to see the chmod", func() bool {
		fi, err := stat("f")
		return err == nil && fi.Mode().Perm() == 0o600
	})

	if err := os.Rename(filepath.Join(a, "f"), filepath.Join(a, "g")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "B to see the rename", func() bool {
		_, errOld := stat("f")
		fi, errNew := stat("g")
		return errors.Is(errOld, fs.ErrNotExist) && errNew == nil && fi.Mode().Perm() == 0o600
	})

	if err := os.Remove(filepath.Join(a, "g")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "B to see the unlink", func() bool {
		_, err := stat("g")
		return errors.Is(err, fs.ErrNotExist)
	})
}
