package volume_test

import (
	"context"
	"errors"
	"testing"

	"github.com/dockyard/dockyard/volume"
)

// TestListWithoutDriver: readers that run no plugin (the web UI) list and
// look up volumes straight from the file system, before any plugin made
// /volumes and after.
func TestListWithoutDriver(t *testing.T) {
	ctx := context.Background()
	c := startCluster(t).FS
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

// TestCreateRemoveWithoutDriver: `dockyard volume create|rm` manage volumes
// from any host, with the options and refusals the plugin has.
func TestCreateRemoveWithoutDriver(t *testing.T) {
	ctx := context.Background()
	c := startCluster(t).FS
	created, err := volume.Create(ctx, c, "web", map[string]string{"mode": "0770", "uid": "1000"})
	if err != nil || !created {
		t.Fatalf("Create = %v, %v", created, err)
	}
	a, err := c.Stat(ctx, "/volumes/web")
	if err != nil || a.Mode&0o7777 != 0o770 || a.Uid != 1000 {
		t.Fatalf("the volume's root: %+v, %v", a, err)
	}
	if created, err := volume.Create(ctx, c, "web", nil); err != nil || created {
		t.Fatalf("Create of an existing volume = %v, %v; want no error, not created", created, err)
	}
	for _, bad := range []struct {
		name string
		opts map[string]string
	}{
		{"../x", nil},
		{"ok", map[string]string{"size": "1G"}},
		{"ok", map[string]string{"mode": "99"}},
	} {
		if _, err := volume.Create(ctx, c, bad.name, bad.opts); err == nil {
			t.Errorf("Create(%q, %v) succeeded", bad.name, bad.opts)
		}
	}
	if _, err := volume.Create(ctx, c, "copy", map[string]string{"from": "missing"}); err == nil {
		t.Error("Create from a missing volume succeeded")
	}
	if err := volume.Remove(ctx, c, "web"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat(ctx, "/volumes/web"); err == nil {
		t.Fatal("the removed volume's directory is still there")
	}
	if err := volume.Remove(ctx, c, "web"); !errors.Is(err, volume.ErrNotFound) {
		t.Fatalf("Remove of a missing volume: %v, want ErrNotFound", err)
	}
}
