package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/spf13/cobra"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/fs/fuse"
	"github.com/dockyard/dockyard/volume"
)

// defaultVolumeSocket is where dockerd looks for plugins; the file's name
// is the driver's name (docker volume create -d dockyard).
const defaultVolumeSocket = "/run/docker/plugins/dockyard.sock"

func init() { subcommands = append(subcommands, volumePluginCmd) }

func volumePluginCmd() *cobra.Command {
	var (
		meta, socket, mountDir string
		cacheMB                int64
	)
	cmd := &cobra.Command{
		Use:   "volume-plugin [--meta ADDRS] [--socket PATH]",
		Short: "Serve Docker volumes stored in the Dockyard file system (a Docker volume plugin)",
		Long: `Serve Docker's volume plugin protocol on a Unix socket, so that

  docker volume create -d dockyard data
  docker run -v data:/data IMAGE

stores the volume in the Dockyard file system, under dfs:/volumes/data. A volume
is mounted on a host (with FUSE, under --mount-dir) while containers there use
it, so containers on every host running the plugin against the same cluster see
the same files. The driver's name is the socket file's name without ".sock".
Runs until interrupted; volumes still mounted are unmounted then.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			mc, err := dialMeta(cmd, meta)
			if err != nil {
				return err
			}
			defer mc.Close()
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			// As a mount does: names and attributes from a cache the
			// change feed keeps fresh, since other hosts write the
			// same volumes, and shards of chunkservers on this host
			// through their sockets.
			cache := dfs.NewMetaCache(mc, mc, dfs.MetaCacheOptions{Logger: log})
			defer cache.Close()
			client := dfs.New(cache, localShardClient(log, true), dfs.Options{CacheBytes: cacheMB << 20, ReadAhead: mountReadAheadMB << 20, Logger: log})

			vp, err := startVolumePlugin(ctx, client, socket, mountDir, log)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "dockyard: volume plugin on %s (volumes in dfs:%s, mounted under %s)\n", socket, volume.Dir, mountDir)
			select {
			case err := <-vp.done:
				vp.stop()
				return err
			case <-ctx.Done():
			}
			return vp.stop()
		},
	}
	f := cmd.Flags()
	f.StringVar(&meta, "meta", defaultMeta, "metaserver API addresses, comma-separated")
	addClusterSecretFlag(f)
	f.StringVar(&socket, "socket", defaultVolumeSocket, "Unix socket to serve the plugin protocol on; dockerd finds plugins in /run/docker/plugins")
	f.StringVar(&mountDir, "mount-dir", "/var/lib/dockyard/volumes", "where volumes in use on this host are mounted")
	f.Int64Var(&cacheMB, "cache-mb", dfs.DefaultCacheBytes>>20, "client block cache in MiB, shared by the volumes mounted here")
	return cmd
}

// volumePlugin is a volume driver serving the plugin protocol on a socket.
type volumePlugin struct {
	d      *volume.Driver
	srv    *http.Server
	socket string
	done   chan error // the server's end, if it stops by itself
}

// startVolumePlugin serves Docker volumes stored through client on socket,
// mounting them under mountDir, until stop.
func startVolumePlugin(ctx context.Context, client *dfs.Client, socket, mountDir string, log *slog.Logger) (*volumePlugin, error) {
	sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	d, err := volume.New(sctx, client, volume.Options{
		MountDir: mountDir,
		// Containers run as any user; the kernel checks their
		// permissions, as on a local volume.
		FUSE:   fuse.Options{AllowOther: os.Geteuid() == 0, Logger: log},
		Logger: log,
	})
	if err != nil {
		return nil, err
	}
	ln, err := volume.Listen(socket)
	if err != nil {
		d.Close()
		return nil, err
	}
	vp := &volumePlugin{d: d, srv: &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second}, socket: socket, done: make(chan error, 1)}
	go func() { vp.done <- vp.srv.Serve(ln) }()
	return vp, nil
}

// stop stops answering, removes the socket and unmounts every volume
// mounted here; containers still using one keep it, detached, until they
// let go.
func (vp *volumePlugin) stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := vp.srv.Shutdown(ctx)
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	_ = os.Remove(vp.socket)
	vp.d.Close()
	return err
}
