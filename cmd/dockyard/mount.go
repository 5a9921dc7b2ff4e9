package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/fs/fuse"
	"github.com/dockyard/dockyard/metaserver"
)

// mountReadAheadMB is the mount's read-ahead window, larger than the fs
// client's default: a mount serves whole-file sequential readers (cp, tar,
// fio), and cold 1 GiB reads measured 397 MB/s at 8 MiB, 426–457 at 32 and
// 452–465 at 64 on one disk (docs/benchmarks.md, FUSE mount). With the
// window now fetched chunk by chunk without pauses, alternating runs on a
// loaded machine gave 273–324 MB/s at 16 MiB, 341–371 at 32 and 336–365 at
// 64. 32 MiB takes the gain while eight concurrent readers still fit the
// 256 MiB block cache.
const mountReadAheadMB = 32

func init() { subcommands = append(subcommands, mountCmd) }

// startP2P starts the mount's peer server and its announcements to the
// tracker. Without a cluster secret, and listening where other hosts can
// connect, it warns: the blocks become readable by anyone who can reach it.
func startP2P(mc *metaserver.Client, listen, advertise string, log *slog.Logger) (*dfs.P2P, error) {
	secret := loadedSecret.Load()
	p, err := dfs.NewP2P(mc, dfs.P2POptions{Listen: listen, Advertise: advertise, Secret: secret, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("--p2p-listen: %w", err)
	}
	if secret == nil && !loopback(p.ListenAddr()) {
		log.Warn("no --"+clusterSecretFlag+": any host that can reach the peer server may read the blocks this mount caches; see docs/security.md",
			"listen", p.ListenAddr())
	}
	return p, nil
}

// addP2PFlags gives a command that mounts (mount, run) the peer-to-peer
// flags.
func addP2PFlags(f *pflag.FlagSet, listen, advertise *string) {
	f.StringVar(listen, "p2p-listen", "", "serve the blocks this host caches to other mounting hosts on `ADDR` (host:port) and fetch blocks "+
		"they hold before asking the chunkservers (off when empty). Without --"+clusterSecretFlag+" any host that can reach ADDR can read the cached blocks")
	f.StringVar(advertise, "p2p-advertise", "", "`ADDR` other hosts dial to reach this host's peer server, when --p2p-listen's address is not reachable as is "+
		"(a wildcard such as 0.0.0.0:7000, or behind NAT)")
}

// checkP2PFlags refuses --p2p-advertise without --p2p-listen.
func checkP2PFlags(listen, advertise string) error {
	if advertise != "" && listen == "" {
		return fmt.Errorf("--p2p-advertise names the address of the peer server; it needs --p2p-listen")
	}
	return nil
}

// p2pSummary says in one line what peer-to-peer delivery did.
func p2pSummary(ps dfs.P2PStats) string {
	return fmt.Sprintf("%d blocks (%d bytes) read from peers, %d peer answers failed verification, %d fell back to the chunkservers; %d blocks (%d bytes) served to peers",
		ps.PeerBlocks, ps.PeerBytes, ps.VerifyFailures, ps.PeerMisses, ps.ServedBlocks, ps.ServedBytes)
}

// logP2PStats logs p2pSummary at info level (run shows it with --verbose).
func logP2PStats(log *slog.Logger, p *dfs.P2P) {
	log.Info("p2p: " + p2pSummary(p.Stats()))
}

func mountCmd() *cobra.Command {
	var (
		meta             string
		opt              fuse.Options
		cacheMB          int64
		readAheadMB      int64
		kernelReadAhead  int
		debug            bool
		lazyOnSignal     bool
		imageRef         string
		verifyKey        string
		policyPath       string
		scheme           string
		metaCache        bool
		metaCacheEntries int
		durableWrites    bool
		shortCircuit     bool
		scWrites         bool
		passthrough      bool
		fileCacheMB      int64
		p2pListen        string
		p2pAdvertise     string
		metricsListen    string
	)
	cmd := &cobra.Command{
		Use:   "mount [--meta ADDRS] [--image REF] DIR",
		Short: "Mount the Dockyard file system on DIR (runs until unmounted or interrupted)",
		Long: `Mount the whole Dockyard file system read-write on DIR through FUSE. The command
stays in the foreground serving the mount; SIGINT or SIGTERM, or "dockyard umount DIR",
unmounts it. /.dockyard, the file system's reserved tree, is hidden unless
--show-reserved is given. With --image REF, DIR shows that image's merged tree
instead, read-only, its bytes fetched lazily as they are read.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if verifyKey != "" && imageRef == "" {
				return fmt.Errorf("--verify-key checks an image's signature; it needs --image")
			}
			// The policy is about images; a file-system mount has none to
			// check, even where the host has a policy.
			var gate imageGate
			if imageRef != "" {
				var err error
				if gate, err = newImageGate(policyPath, verifyKey); err != nil {
					return err
				}
				if scheme, err = registryScheme(cmd, scheme); err != nil {
					return err
				}
			}
			if err := checkP2PFlags(p2pListen, p2pAdvertise); err != nil {
				return err
			}
			metricsLn, err := listenMetrics(metricsListen)
			if err != nil {
				return err
			}
			if metricsLn != nil {
				// Closed here too when the mount fails; twice is harmless.
				defer metricsLn.Close()
			}
			mc, err := dialMeta(cmd, meta)
			if err != nil {
				return err
			}
			defer mc.Close()
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			var p2p *dfs.P2P
			if p2pListen != "" {
				if p2p, err = startP2P(mc, p2pListen, p2pAdvertise, log); err != nil {
					return err
				}
				defer p2p.Close()
			}
			var meta metaserver.API = mc
			var cacheDrops func() uint64
			if metaCache && imageRef == "" {
				// Lookups and getattrs are answered from memory, kept
				// fresh by the metaserver's change feed.
				cache := dfs.NewMetaCache(mc, mc, dfs.MetaCacheOptions{MaxEntries: metaCacheEntries, Logger: log})
				defer cache.Close()
				meta = cache
				cacheDrops = func() uint64 { return cache.Stats().Drops }
			}
			shards := shardClient()
			if shortCircuit {
				// Chunkservers on this host hand over shard files, so
				// reads skip two loopback copies and the servers' CPU.
				shards = localShardClient(log, scWrites)
			}
			client := dfs.New(meta, shards, dfs.Options{
				CacheBytes:    cacheMB << 20,
				ReadAhead:     readAheadMB << 20,
				DurableWrites: durableWrites,
				Logger:        log,
				P2P:           p2p,
			})
			opt.Logger = log
			opt.Debug = debug
			opt.KernelReadAhead = kernelReadAhead << 10
			// A mount made by root serves every user, as a local disk
			// does; the kernel checks their permissions.
			opt.AllowOther = os.Geteuid() == 0
			// Passthrough needs root; a user's mount goes without it. On a
			// read-write mount it is asked for, not assumed: while a
			// passthrough reader has a file open the kernel refuses
			// every other open of it, so writers on this host would get
			// ETXTBSY where a local disk lets them in (docs/mount.md).
			if !cmd.Flags().Changed("passthrough") {
				passthrough = opt.ReadOnly
			}
			opt.Passthrough = passthrough && os.Geteuid() == 0
			opt.FileCacheBytes = fileCacheMB << 20
			// Mounting talks to the metaserver; an unreachable one must
			// fail the command, not hang it.
			mctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			var srv *fuse.Server
			if imageRef != "" {
				// The image's clients count their reads together, so the
				// mount's metrics cover the layer reads too.
				srv, err = mountImage(mctx, mc, imageRef, scheme, gate, args[0], dfs.Options{P2P: p2p, Counters: new(dfs.Counters)}, log)
			} else {
				srv, err = fuse.Mount(mctx, args[0], client, opt)
			}
			cancel()
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "dockyard: mounted on %s\n", srv.Dir)
			defer serveMetrics(metricsLn, srv, log)()
			// What reached the mount, for judging the kernel's caching: a
			// file read again unchanged should cost no READs, and each
			// drop of the metadata cache makes the kernel forget names,
			// and with them the pages of files not open.
			defer func() {
				st := srv.Stats()
				var drops uint64
				if cacheDrops != nil {
					drops = cacheDrops()
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "dockyard: unmounted %s: %d READ requests (%d bytes) reached the mount; %d opens served by passthrough; metadata cache dropped %d times\n",
					srv.Dir, st.ReadRequests, st.ReadBytes, st.PassthroughOpens, drops)
				if p2p != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "dockyard: p2p: %s\n", p2pSummary(p2p.Stats()))
				}
			}()
			done := make(chan error, 1)
			go func() { done <- srv.Wait() }()
			select {
			case err := <-done:
				// Unmounted from outside (dockyard umount, umount, fusermount -u).
				return err
			case <-ctx.Done():
			}
			err = srv.Unmount()
			if errors.Is(err, fuse.ErrBusy) {
				if !lazyOnSignal {
					return fmt.Errorf("%w; close the files or run \"dockyard umount --lazy %s\"", err, srv.Dir)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "dockyard: %s is busy; detached, serving open files until they are closed\n", srv.Dir)
				if err := srv.UnmountLazy(); err != nil {
					return err
				}
				return <-done
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&meta, "meta", "127.0.0.1:9500", "metaserver API addresses, comma-separated")
	addClusterSecretFlag(f)
	f.BoolVar(&opt.ReadOnly, "read-only", false, "mount read-only")
	f.BoolVar(&opt.ShowReserved, "show-reserved", false, "show the reserved tree /"+fuse.ReservedName)
	f.DurationVar(&opt.EntryTimeout, "entry-timeout", fuse.DefaultEntryTimeout, "how long the kernel caches names (negative: not at all)")
	f.DurationVar(&opt.AttrTimeout, "attr-timeout", fuse.DefaultAttrTimeout, "how long the kernel caches attributes (negative: not at all)")
	f.DurationVar(&opt.FeedTimeout, "feed-timeout", fuse.DefaultFeedTimeout, "how long the kernel caches names and attributes while the metadata cache follows the change feed, which pushes other clients' changes to it (negative: --entry-timeout and --attr-timeout apply)")
	f.DurationVar(&opt.NegativeTimeout, "negative-timeout", 0, "how long the kernel caches failed lookups")
	f.IntVar(&opt.MaxWrite, "max-write", fuse.DefaultMaxWrite, "largest read/write request in bytes (at most 1 MiB)")
	f.Int64Var(&cacheMB, "cache-mb", dfs.DefaultCacheBytes>>20, "client block cache in MiB")
	f.Int64Var(&readAheadMB, "read-ahead-mb", mountReadAheadMB, "sequential read-ahead window in MiB")
	f.IntVar(&kernelReadAhead, "kernel-read-ahead-kb", fuse.DefaultKernelReadAhead>>10, "how far ahead of a sequential reader the kernel asks the mount for pages, in KiB (the device's read_ahead_kb; negative: the kernel's default)")
	f.BoolVar(&lazyOnSignal, "lazy-on-signal", true, "on SIGINT/SIGTERM with files still open, detach and serve them until closed")
	f.BoolVar(&durableWrites, "durable-writes", false, "make every shard durable before a write completes, instead of "+
		"at fsync as a local file system does (slower; only for programs that never fsync yet need their data to survive a power loss)")
	f.BoolVar(&shortCircuit, "short-circuit", true, "read shards of chunkservers on this host from their files, "+
		"through descriptors they hand over a Unix socket, instead of over loopback HTTP")
	f.BoolVar(&scWrites, "short-circuit-writes", true, "with --short-circuit, also send the bytes written to chunkservers on this host "+
		"over their Unix sockets instead of loopback HTTP")
	f.BoolVar(&debug, "debug", false, "log every FUSE request")
	f.BoolVar(&metaCache, "meta-cache", true, "answer lookups and stats from a metadata cache kept fresh by the metaserver's change feed")
	f.IntVar(&metaCacheEntries, "meta-cache-entries", dfs.DefaultMetaCacheEntries, "names plus attributes the metadata cache holds at most")
	f.BoolVar(&passthrough, "passthrough", false, "keep a local copy of each file read whole and serve later opens of the unchanged file "+
		"from it through FUSE passthrough (root, Linux 6.9+; while such a reader is open, opening the file for writing on this host fails with ETXTBSY); "+
		"default: on for --read-only and --image mounts, off for read-write ones")
	f.StringVar(&opt.FileCacheDir, "file-cache-dir", fuse.DefaultFileCacheDir(), "directory for the passthrough copies (in a files/PID subdirectory, emptied at mount, removed at unmount)")
	f.Int64Var(&fileCacheMB, "file-cache-mb", 0, "bound on the passthrough copies in MiB (0: 10 GiB or a tenth of the cache directory's file system, whichever is less)")
	f.StringVar(&imageRef, "image", "", "mount this image's merged tree (read-only, lazy) instead of the whole file system")
	addP2PFlags(f, &p2pListen, &p2pAdvertise)
	addMetricsFlag(f, &metricsListen)
	f.StringVar(&verifyKey, "verify-key", "", "with --image: mount only if the image carries a signature made with this PEM public key (cosign's format), in addition to what the policy requires")
	addPolicyFlag(f, &policyPath)
	addRegistrySchemeFlag(f, &scheme)
	return cmd
}
