package volume_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/volume"
)

func readDFS(t *testing.T, c *dfs.Client, p string) string {
	t.Helper()
	f, err := c.OpenPath(context.Background(), p)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.NewSectionReader(f, 0, int64(f.Attr().Size)))
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	return string(b)
}

func writeDFS(t *testing.T, c *dfs.Client, p, s string) {
	t.Helper()
	if _, err := c.WriteFile(context.Background(), p, strings.NewReader(s), 0o644); err != nil {
		t.Fatalf("%s: %v", p, err)
	}
}

func TestSnapshotsAndRestore(t *testing.T) {
	ctx := context.Background()
	d, cl := newDriver(t)
	c := cl.FS
	if err := d.Create(ctx, "data", map[string]string{"uid": "1000"}); err != nil {
		t.Fatal(err)
	}
	writeDFS(t, c, "/volumes/data/f", "before")
	s, err := volume.CreateSnapshot(ctx, c, "data", "v1")
	if err != nil {
		t.Fatal(err)
	}
	if s.Path() != "/volumes/.snapshots/data/v1" || s.CreatedAt.IsZero() {
		t.Fatalf("snapshot = %+v at %s", s, s.Path())
	}
	writeDFS(t, c, "/volumes/data/f", "after, and longer")
	if _, err := volume.CreateSnapshot(ctx, c, "data", "v2"); err != nil {
		t.Fatal(err)
	}
	if _, err := volume.CreateSnapshot(ctx, c, "data", "v1"); !errors.Is(err, volume.ErrExists) {
		t.Fatalf("snapshot under a taken name: %v", err)
	}

	// Snapshots are not volumes.
	vols, err := d.List(ctx)
	if err != nil || len(vols) != 1 || vols[0].Name != "data" {
		t.Fatalf("List with snapshots = %+v, %v", vols, err)
	}
	snaps, err := volume.ListSnapshots(ctx, c, "data")
	if err != nil || len(snaps) != 2 || snaps[0].Name != "v1" || snaps[1].Name != "v2" {
		t.Fatalf("ListSnapshots = %+v, %v", snaps, err)
	}

	if err := volume.Restore(ctx, c, "data", "v1", "old"); err != nil {
		t.Fatal(err)
	}
	if got := readDFS(t, c, "/volumes/old/f"); got != "before" {
		t.Fatalf("restored volume holds %q", got)
	}
	if a, _ := c.Stat(ctx, "/volumes/old"); a.Uid != 1000 {
		t.Fatalf("restored root lost its owner: %+v", a)
	}
	if err := volume.Restore(ctx, c, "data", "v1", "old"); !errors.Is(err, volume.ErrExists) {
		t.Fatalf("restore onto an existing volume: %v", err)
	}
	if err := volume.Restore(ctx, c, "data", "nope", "new"); !errors.Is(err, volume.ErrNoSnapshot) {
		t.Fatalf("restore of a missing snapshot: %v", err)
	}
	// Writing the restored volume leaves the snapshot.
	writeDFS(t, c, "/volumes/old/f", "changed")
	if got := readDFS(t, c, "/volumes/.snapshots/data/v1/f"); got != "before" {
		t.Fatalf("snapshot changed with its restored volume: %q", got)
	}

	// Removal: one snapshot, then the last, which takes the volume's
	// directory of snapshots with it.
	if err := volume.RemoveSnapshot(ctx, c, "data", "v1"); err != nil {
		t.Fatal(err)
	}
	if err := volume.RemoveSnapshot(ctx, c, "data", "v1"); !errors.Is(err, volume.ErrNoSnapshot) {
		t.Fatalf("removing a removed snapshot: %v", err)
	}
	if got := readDFS(t, c, "/volumes/.snapshots/data/v2/f"); got != "after, and longer" {
		t.Fatalf("v2 = %q", got)
	}
	// A snapshot outlives its volume.
	if err := d.Remove(ctx, "data"); err != nil {
		t.Fatal(err)
	}
	if snaps, err := volume.ListSnapshots(ctx, c, "data"); err != nil || len(snaps) != 1 {
		t.Fatalf("snapshots of a removed volume: %+v, %v", snaps, err)
	}
	if err := volume.RemoveSnapshot(ctx, c, "data", "v2"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat(ctx, "/volumes/.snapshots/data"); err == nil {
		t.Fatal("the directory of a volume's snapshots outlived its last snapshot")
	}
	if _, err := volume.ListSnapshots(ctx, c, "data"); !errors.Is(err, volume.ErrNotFound) {
		t.Fatalf("snapshots of a volume that never was: %v", err)
	}

	// Bad names.
	for _, tc := range []struct{ vol, snap string }{{"..", "v"}, {"data", "../x"}, {"data", ".s"}, {"a/b", "v1"}} {
		if _, err := volume.CreateSnapshot(ctx, c, tc.vol, tc.snap); err == nil || !strings.Contains(err.Error(), "invalid") {
			t.Errorf("CreateSnapshot(%q, %q) = %v", tc.vol, tc.snap, err)
		}
	}
	if _, err := volume.CreateSnapshot(ctx, c, "missing", "v1"); !errors.Is(err, volume.ErrNotFound) {
		t.Fatalf("snapshot of a missing volume: %v", err)
	}
}

func TestCreateFrom(t *testing.T) {
	ctx := context.Background()
	d, cl := newDriver(t)
	c := cl.FS
	if err := d.Create(ctx, "base", nil); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789"), 1<<20) // 10 MiB: several chunks
	if _, err := c.WriteFile(ctx, "/volumes/base/big", bytes.NewReader(big), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := volume.CreateSnapshot(ctx, c, "base", "s1"); err != nil {
		t.Fatal(err)
	}
	writeDFS(t, c, "/volumes/base/big", "overwritten")

	// From the volume as it is now, with a new owner for the root.
	if err := d.Create(ctx, "live", map[string]string{"from": "base", "mode": "0700", "uid": "42"}); err != nil {
		t.Fatal(err)
	}
	if got := readDFS(t, c, "/volumes/live/big"); got != "overwritten" {
		t.Fatalf("from=base holds %q", got)
	}
	if a, _ := c.Stat(ctx, "/volumes/live"); a.Mode&0o7777 != 0o700 || a.Uid != 42 {
		t.Fatalf("from= with mode and uid: root %+v", a)
	}
	// From the snapshot: the bytes of before the overwrite.
	if err := d.Create(ctx, "old", map[string]string{"from": "base@s1"}); err != nil {
		t.Fatal(err)
	}
	if got := readDFS(t, c, "/volumes/old/big"); got != string(big) {
		t.Fatalf("from=base@s1 holds %d bytes, want the %d of the snapshot", len(got), len(big))
	}
	vols, err := d.List(ctx)
	if err != nil || len(vols) != 3 {
		t.Fatalf("List = %+v, %v", vols, err)
	}
	// Asking again for an existing volume changes nothing.
	if err := d.Create(ctx, "old", map[string]string{"from": "base"}); err != nil {
		t.Fatal(err)
	}
	if got := readDFS(t, c, "/volumes/old/big"); got != string(big) {
		t.Fatal("a repeated create replaced the volume")
	}

	for _, tc := range []struct {
		from string
		want error
	}{
		{"nope", volume.ErrNotFound},
		{"base@nope", volume.ErrNoSnapshot},
		{"nope@s1", volume.ErrNoSnapshot},
		{"", volume.ErrBadOpt},
		{"../x", volume.ErrBadName},
	} {
		err := d.Create(ctx, "fresh", map[string]string{"from": tc.from})
		if !errors.Is(err, tc.want) {
			t.Errorf("from=%q: %v, want %v", tc.from, err, tc.want)
		}
	}
	if _, err := c.Stat(ctx, "/volumes/fresh"); err == nil {
		t.Fatal("a refused from= left a volume behind")
	}

	// Through the plugin protocol, as dockerd sends it.
	h := d.Handler()
	if code, out := post(t, h, "/VolumeDriver.Create", `{"Name":"viaapi","Opts":{"from":"base@s1"}}`); code != 200 || out["Err"] != "" {
		t.Fatalf("create from= over the protocol: %d %v", code, out)
	}
	if got := readDFS(t, c, "/volumes/viaapi/big"); len(got) != len(big) {
		t.Fatalf("viaapi holds %d bytes", len(got))
	}
	code, out := post(t, h, "/VolumeDriver.Create", `{"Name":"bad","Opts":{"from":"missing"}}`)
	if msg, _ := out["Err"].(string); code != 500 || !strings.Contains(msg, "volume missing: no such volume") {
		t.Fatalf("create from a missing volume over the protocol: %d %v", code, out)
	}
}
