package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/dockyard/dockyard/container"
	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/fs/fuse"
	"github.com/dockyard/dockyard/metaserver"
	"github.com/dockyard/dockyard/volume"
)

// volumeSpec is one -v of `dockyard run`: a Dockyard volume (Name) or a host
// directory (HostDir) at Dest in the container.
type volumeSpec struct {
	Name, HostDir, Dest string
	ReadOnly            bool
}

// parseVolumeSpecs parses -v values, SOURCE:DEST[:ro|rw], as docker run
// does: a SOURCE starting with / is a host directory, anything else names a
// volume.
func parseVolumeSpecs(specs []string) ([]volumeSpec, error) {
	out := make([]volumeSpec, 0, len(specs))
	for _, s := range specs {
		parts := strings.Split(s, ":")
		if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
			return nil, fmt.Errorf("-v %q: want NAME:/path or /host/dir:/path, optionally followed by :ro or :rw", s)
		}
		v := volumeSpec{Dest: parts[1]}
		if len(parts) == 3 {
			switch parts[2] {
			case "ro":
				v.ReadOnly = true
			case "rw":
			default:
				return nil, fmt.Errorf("-v %q: mode %q, want ro or rw", s, parts[2])
			}
		}
		if strings.HasPrefix(parts[0], "/") {
			v.HostDir = parts[0]
		} else {
			v.Name = parts[0]
		}
		out = append(out, v)
	}
	return out, nil
}

// mountVolumes mounts the Dockyard volumes among vols under dir for the
// container id (creating those that do not exist yet, as docker run does) and
// returns the container's bind mounts, with a function that unmounts them.
// On failure nothing stays mounted.
func mountVolumes(ctx context.Context, mc *metaserver.Client, vols []volumeSpec, dir, id string, log *slog.Logger) ([]container.Mount, func(), error) {
	mounts := make([]container.Mount, 0, len(vols))
	var d *volume.Driver
	closeAll := func() {
		if d != nil {
			d.Close()
		}
	}
	for _, v := range vols {
		src := v.HostDir
		if v.Name != "" {
			if d == nil {
				var err error
				d, err = volume.New(ctx, dfs.New(mc, localShardClient(log, true), dfs.Options{Logger: log}), volume.Options{
					MountDir: dir, FUSE: fuse.Options{AllowOther: true, Logger: log}, Logger: log})
				if err != nil {
					return nil, nil, err
				}
			}
			if err := d.Create(ctx, v.Name, nil); err != nil {
				closeAll()
				return nil, nil, err
			}
			p, err := d.Mount(ctx, v.Name, id)
			if err != nil {
				closeAll()
				return nil, nil, err
			}
			src = p
		}
		mounts = append(mounts, container.Mount{Source: filepath.Clean(src), Destination: v.Dest, ReadOnly: v.ReadOnly})
	}
	return mounts, closeAll, nil
}
