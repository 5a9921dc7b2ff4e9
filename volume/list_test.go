package volume_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/dockyard/dockyard/local"
	"github.com/dockyard/dockyard/volume"
)

// TestListWithoutDriver: readers that run no plugin (the web UI) list and
// look up volumes straight from the file system, before any plugin made
// /volumes and after.
func TestListWithoutDriver(t *testing.T) {
	ctx := context.Background()
	cl, err := local.Start(local.Config{Dir: t.TempDir(), HeartbeatInterval: 100 * time.Millisecond, Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	c := cl.FS
	if vols, err := volume.List(ctx, c); err != nil || len(vols) != 0 {
		t.Fatalf("List before any volume = %+v, %v", vols, err)
	}
	for _, p := range []string{"/volumes/web", "/volumes/db"} {
		if _, err := c.MkdirAll(ctx, p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := volume.CreateSnapshot(ctx, c, "db", "s1"); err != nil {
		t.Fatal(err)
	}
	vols, err := volume.List(ctx, c)
	if err != nil || len(vols) != 2 || vols[0].Name != "db" || vols[1].Name != "web" {
		t.Fatalf("List = %+v, %v", vols, err)
	}
	a, err := c.Stat(ctx, "/volumes/db")
	if err != nil {
		t.Fatal(err)
	}
	if vols[0].Ino != a.Ino || vols[0].CreatedAt.IsZero() || vols[0].Mountpoint != "" {
		t.Errorf("db listed as %+v, its directory is inode %d", vols[0], a.Ino)
	}
	v, err := volume.Lookup(ctx, c, "db")
	if err != nil || v != vols[0] {
		t.Errorf("Lookup(db) = %+v, %v; List gave %+v", v, err, vols[0])
	}
	if _, err := volume.Lookup(ctx, c, "gone"); !errors.Is(err, volume.ErrNotFound) {
		t.Errorf("Lookup of a missing volume: %v", err)
	}
	if _, err := volume.Lookup(ctx, c, ".snapshots"); !errors.Is(err, volume.ErrBadName) {
		t.Errorf("Lookup(.snapshots): %v", err)
	}
}
