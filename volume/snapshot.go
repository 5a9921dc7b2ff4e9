package volume

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"syscall"
	"time"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/metaserver"
)

// Snapshots. A snapshot of volume NAME is a clone of its directory at
// SnapshotDir/NAME/SNAP: the metaserver copies the tree's metadata in one
// step and the copy shares every chunk, so taking one costs no bytes and
// the volume's later writes never reach it. It is crash-consistent as the
// metaserver sees it: what containers wrote and their mounts have not
// committed yet (buffered, or a write without fsync still in flight) is not
// in it.
//
// SnapshotDir sits inside Dir but starts with a dot, which no volume name
// may, so List (and so `docker volume ls`) never shows it as a volume.
// Snapshots outlive their volume: removing the volume leaves them.

// SnapshotDir is the directory of the Dockyard file system holding snapshots.
const SnapshotDir = Dir + "/.snapshots"

// ErrNoSnapshot is the failure of naming a snapshot that does not exist.
var ErrNoSnapshot = errors.New("no such snapshot")

// ErrExists is the failure of making a volume or snapshot under a name
// that is taken.
var ErrExists = errors.New("already exists")

// Snapshot describes one snapshot.
type Snapshot struct {
	Volume    string
	Name      string
	CreatedAt time.Time
}

// Path is where the snapshot's tree lives in the Dockyard file system.
func (s Snapshot) Path() string { return snapPath(s.Volume, s.Name) }

func snapPath(vol, snap string) string { return path.Join(SnapshotDir, vol, snap) }

func checkSnapName(snap string) error {
	if !validName.MatchString(snap) {
		return fmt.Errorf("invalid snapshot name %q: want a letter or digit, then letters, digits, '_', '.' or '-' (2 to 255 characters)", snap)
	}
	return nil
}

// CreateSnapshot takes a snapshot named snap of volume vol.
func CreateSnapshot(ctx context.Context, c *dfs.Client, vol, snap string) (Snapshot, error) {
	if err := checkName(vol); err != nil {
		return Snapshot{}, err
	}
	if err := checkSnapName(snap); err != nil {
		return Snapshot{}, err
	}
	if err := volumeDir(ctx, c, vol); err != nil {
		return Snapshot{}, err
	}
	if _, err := c.MkdirAll(ctx, path.Join(SnapshotDir, vol), 0o755); err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s@%s: %w", vol, snap, err)
	}
	a, err := c.Clone(ctx, volPath(vol), snapPath(vol, snap))
	if errors.Is(err, syscall.EEXIST) {
		return Snapshot{}, fmt.Errorf("snapshot %s@%s: %w", vol, snap, ErrExists)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("snapshot %s@%s: %w", vol, snap, err)
	}
	return Snapshot{Volume: vol, Name: snap, CreatedAt: time.Unix(0, a.Ctime).UTC()}, nil
}

// ListSnapshots lists the snapshots of volume vol (which may be gone),
// sorted by name.
func ListSnapshots(ctx context.Context, c *dfs.Client, vol string) ([]Snapshot, error) {
	if err := checkName(vol); err != nil {
		return nil, err
	}
	ents, err := c.ReadDirPlus(ctx, path.Join(SnapshotDir, vol))
	if errors.Is(err, syscall.ENOENT) {
		if err := volumeDir(ctx, c, vol); err != nil {
			return nil, err
		}
		return []Snapshot{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing snapshots of %s: %w", vol, err)
	}
	out := make([]Snapshot, 0, len(ents))
	for _, e := range ents {
		if e.Attr == nil || !e.Attr.IsDir() || !validName.MatchString(e.Name) {
			continue
		}
		out = append(out, Snapshot{Volume: vol, Name: e.Name, CreatedAt: time.Unix(0, e.Attr.Ctime).UTC()})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// RemoveSnapshot deletes a snapshot; the chunks it shared stay as long as
// the volume or another snapshot uses them.
func RemoveSnapshot(ctx context.Context, c *dfs.Client, vol, snap string) error {
	if err := checkName(vol); err != nil {
		return err
	}
	if err := checkSnapName(snap); err != nil {
		return err
	}
	if err := snapshotDir(ctx, c, vol, snap); err != nil {
		return err
	}
	if err := c.RemoveAll(ctx, snapPath(vol, snap)); err != nil {
		return fmt.Errorf("removing snapshot %s@%s: %w", vol, snap, err)
	}
	// The volume's own directory under SnapshotDir goes with its last
	// snapshot; another snapshot taken meanwhile keeps it.
	if err := c.Remove(ctx, path.Join(SnapshotDir, vol)); err != nil &&
		!errors.Is(err, syscall.ENOTEMPTY) && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("removing snapshot %s@%s: %w", vol, snap, err)
	}
	return nil
}

// Restore makes a new volume, newVol, from snapshot snap of volume vol.
// The volume itself is left as it is.
func Restore(ctx context.Context, c *dfs.Client, vol, snap, newVol string) error {
	return cloneVolume(ctx, c, vol+"@"+snap, newVol)
}

// cloneVolume makes volume newVol a clone of from: VOLUME (the volume as
// it is now) or VOLUME@SNAPSHOT.
func cloneVolume(ctx context.Context, c *dfs.Client, from, newVol string) error {
	if err := checkName(newVol); err != nil {
		return err
	}
	vol, snap, isSnap := strings.Cut(from, "@")
	if err := checkName(vol); err != nil {
		return fmt.Errorf("from=%s: %w", from, err)
	}
	src := volPath(vol)
	if isSnap {
		if err := checkSnapName(snap); err != nil {
			return fmt.Errorf("from=%s: %w", from, err)
		}
		if err := snapshotDir(ctx, c, vol, snap); err != nil {
			return err
		}
		src = snapPath(vol, snap)
	} else if err := volumeDir(ctx, c, vol); err != nil {
		return err
	}
	_, err := c.Clone(ctx, src, volPath(newVol))
	if errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("volume %s: %w", newVol, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("creating volume %s from %s: %w", newVol, from, err)
	}
	return nil
}

// volumeDir fails with ErrNotFound unless volume vol exists.
func volumeDir(ctx context.Context, c *dfs.Client, vol string) error {
	return isDir(ctx, c, volPath(vol), fmt.Errorf("volume %s: %w", vol, ErrNotFound))
}

// snapshotDir fails with ErrNoSnapshot unless the snapshot exists.
func snapshotDir(ctx context.Context, c *dfs.Client, vol, snap string) error {
	return isDir(ctx, c, snapPath(vol, snap), fmt.Errorf("%s@%s: %w", vol, snap, ErrNoSnapshot))
}

func isDir(ctx context.Context, c *dfs.Client, p string, missing error) error {
	a, err := c.Stat(ctx, p)
	switch {
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ENOTDIR), err == nil && !a.IsDir():
		return missing
	case err != nil:
		return fmt.Errorf("dfs:%s: %w", p, err)
	}
	return nil
}

// cloneRootAttrs sets the options a create gave on a volume made by a
// clone: its root is the source's otherwise.
func cloneRootAttrs(ctx context.Context, c *dfs.Client, name string, set metaserver.SetAttrIn) error {
	if set.Mode == nil && set.Uid == nil && set.Gid == nil {
		return nil
	}
	a, err := c.Stat(ctx, volPath(name))
	if err != nil {
		return fmt.Errorf("volume %s: %w", name, err)
	}
	if _, err := c.Meta().SetAttr(ctx, a.Ino, set); err != nil {
		return fmt.Errorf("volume %s: setting mode and owner: %w", name, err)
	}
	return nil
}
