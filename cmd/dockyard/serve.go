package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/local"
	"github.com/dockyard/dockyard/metaserver"
	msserver "github.com/dockyard/dockyard/metaserver/server"
	"github.com/dockyard/dockyard/registry"
)

func init() { subcommands = append(subcommands, serveCmd) }

func serveCmd() *cobra.Command {
	var (
		data, listen, metaListen, raftListen, ec, logLevel         string
		volumeSocket, keyFile                                      string
		chunkservers, chunkBasePort, localDownloads                int
		chunkCapacityMB                                            int64
		gcInterval, convertMaxDefer, flushInterval                 time.Duration
		fsync, shardHTTP, durableWrites, shortCircuit, groupCommit bool
		authOpts                                                   authFlags
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run everything in one process: metaserver, chunkservers and the registry",
		Long: `serve runs a whole Dockyard on one machine, on one data directory: a single-node metaserver
(durable, Raft with one voter), --chunkservers chunkservers on sub-directories (six by default, so 4+2
erasure coding works on one machine) and the registry on --listen. Run as root, it also serves Docker
volumes stored in the file system (--volume-socket; docs/volumes.md). Every other command finds it
through --meta, which defaults to the address serve uses. It runs until SIGINT or SIGTERM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, m, err := registryECFlag(ec)
			if err != nil {
				return fmt.Errorf("--ec: %w", err)
			}
			if err := authOpts.check(); err != nil {
				return err
			}
			if k+m > chunkservers {
				return fmt.Errorf("--ec %s needs at least %d chunkservers, --chunkservers is %d", ec, k+m, chunkservers)
			}
			level := slog.LevelInfo
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			if raftListen == "" {
				if raftListen, err = nextPort(metaListen); err != nil {
					return fmt.Errorf("--meta-listen: %w", err)
				}
			}
			keys, err := loadEncryptionKeys(keyFile)
			if err != nil {
				return err
			}
			if err := os.MkdirAll(data, 0o755); err != nil {
				return err
			}
			ctx := cmd.Context()
			secret, err := serveClusterSecret(cmd, log, data, metaListen)
			if err != nil {
				return err
			}

			node, err := msserver.Start(msserver.Config{
				ID:       "serve",
				DataDir:  filepath.Join(data, "meta"),
				APIAddr:  metaListen,
				RaftAddr: raftListen,
				Auth:     secret,
			})
			if err != nil {
				return fmt.Errorf("starting the metaserver: %w", err)
			}
			wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			_, err = node.WaitLeader(wctx)
			cancel()
			if err != nil {
				node.Close()
				return fmt.Errorf("the metaserver did not elect itself leader: %w", err)
			}
			log.Info("metaserver up", "api", node.APIAddr(), "raft", node.RaftAddr())

			cluster, err := local.Start(local.Config{
				Dir:           data,
				Chunkservers:  chunkservers,
				ChunkBasePort: chunkBasePort,
				ChunkCapacity: chunkCapacityMB << 20,
				NoSync:        !fsync,
				FlushInterval: flushIntervalConfig(flushInterval),
				GroupCommit:   groupCommit,
				HTTPOnly:      shardHTTP,
				ShortCircuit:  shortCircuit,
				Encryption:    keys,
				Meta:          nodeMeta{node},
				Auth:          secret,
				FS:            dfs.Options{K: k, M: m, DurableWrites: durableWrites, Logger: log},
				Logger:        log,
			})
			if err != nil {
				node.Close()
				return err
			}
			defer cluster.Close()
			log.Info("chunkservers up", "count", chunkservers, "ec", ec)

			authCfg, err := authOpts.config(ctx, node.API(), log)
			if err != nil {
				return err
			}
			reg, queue, err := newRegistry(ctx, cluster.FS, registry.Config{LocalDownloads: localDownloads, Logger: log, Auth: authCfg}, log, convertMaxDefer)
			if err != nil {
				return err
			}
			defer closeQueue(queue)
			if err := mountWebUI(reg, node.API(), cluster.FS, authCfg, log); err != nil {
				return err
			}
			if volumeSocket != "" {
				// Optional: the registry serves without it, and another
				// serve on this host may hold the socket already.
				vp, err := startVolumePlugin(ctx, cluster.FS, volumeSocket, filepath.Join(data, "volumes"), log)
				if err != nil {
					log.Warn("Docker volume plugin not started", "socket", volumeSocket, "err", err)
				} else {
					defer vp.stop()
					log.Info("Docker volume plugin up; try: docker run -v NAME:/data --volume-driver "+
						strings.TrimSuffix(filepath.Base(volumeSocket), ".sock")+" IMAGE", "socket", volumeSocket)
				}
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "dockyard: serving on %s (metaserver %s, data %s); try: docker push %s/IMAGE\n",
				listen, node.APIAddr(), data, listen)
			return serveRegistry(ctx, cmd, reg, listen, gcInterval)
		},
	}
	f := cmd.Flags()
	f.StringVar(&data, "data", "./dockyard-data", "data directory for the metaserver and the chunkservers")
	f.StringVar(&listen, "listen", "127.0.0.1:5000", "registry address")
	f.StringVar(&metaListen, "meta-listen", defaultMeta, "metaserver API address")
	f.StringVar(&raftListen, "raft-listen", "", "metaserver Raft address (default: the API port + 1)")
	f.IntVar(&chunkservers, "chunkservers", 6, "chunkservers to run, on sub-directories of --data")
	f.IntVar(&chunkBasePort, "chunkserver-base-port", 9600, "chunkserver i listens on this port + i (0 = free ports)")
	f.Int64Var(&chunkCapacityMB, "chunkserver-capacity-mb", 0, "bytes each chunkserver may hold, in MiB (0 = the disk's free space)")
	f.StringVar(&ec, "ec", "4+2", "erasure coding of file chunks, data+parity")
	f.BoolVar(&fsync, "fsync", true, "make shards durable: at a client's fsync, within --flush-interval, or before each "+
		"write is acknowledged with --durable-writes; false never syncs them, not even at fsync (a power loss can lose "+
		"the last seconds of writes)")
	addFlushIntervalFlag(f, &flushInterval)
	addGroupCommitFlag(f, &groupCommit)
	f.BoolVar(&shardHTTP, "shard-http", false, "send this process's own shard traffic over loopback HTTP instead of "+
		"calling its chunkservers directly (for comparison; other processes always use HTTP)")
	addShortCircuitServerFlag(f, &shortCircuit)
	addEncryptionKeyFlag(f, &keyFile)
	f.DurationVar(&gcInterval, "gc-interval", 10*time.Minute, "how often the registry collects unreferenced blobs and idle uploads (0 = never)")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn, error")
	addConvertFlag(f, &convertMaxDefer)
	addLocalDownloadsFlag(f, &localDownloads)
	addDurableWritesFlag(f, &durableWrites)
	addClusterSecretFlag(f)
	addAuthFlags(f, &authOpts)
	f.StringVar(&volumeSocket, "volume-socket", defaultServeVolumeSocket(), "serve Docker volumes stored in the file system (a volume "+
		"plugin) on this Unix socket; dockerd finds plugins in /run/docker/plugins, and the driver's name is the file's name "+
		"without .sock (\"\" = off; default on for root, who can mount volumes)")
	return cmd
}

// defaultServeVolumeSocket is serve's volume plugin socket: Docker's plugin
// directory for root, who can mount the volumes with FUSE; off otherwise.
func defaultServeVolumeSocket() string {
	if os.Geteuid() != 0 {
		return ""
	}
	return defaultVolumeSocket
}

// nodeMeta adapts a Raft node to local.Meta.
type nodeMeta struct{ n *msserver.Node }

func (m nodeMeta) API() *metaserver.Client { return m.n.API() }
func (m nodeMeta) Close() error            { return m.n.Close() }

// nextPort returns addr with its port plus one.
func nextPort(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	p, err := strconv.Atoi(port)
	if err != nil || p == 0 {
		return "", errors.New("give --raft-listen explicitly when the API port is not fixed")
	}
	return net.JoinHostPort(host, strconv.Itoa(p+1)), nil
}
