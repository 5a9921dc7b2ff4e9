package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/registry"
)

func init() { subcommands = append(subcommands, registryCmd) }

func registryCmd() *cobra.Command {
	var (
		listen, meta, ec, logLevel     string
		maxBlobMB, maxManifestKB       int64
		gcInterval, gcGrace, uploadTTL time.Duration
		convertMaxDefer                time.Duration
		durableWrites                  bool
		localDownloads                 int
		authOpts                       authFlags
	)
	cmd := &cobra.Command{
		Use:   "registry --listen ADDR --meta ADDR[,ADDR...]",
		Short: "Serve the OCI / Docker registry over a Dockyard cluster",
		Long: `Serve the container registry (OCI distribution 1.1, Docker Registry V2) on ADDR.
Blobs are files of the cluster's file system under /.dockyard/registry, erasure
coded across the chunkservers; manifests, tags and upload state are records in the
metaservers. The registry keeps no state of its own, so several can serve one
cluster. /metrics serves Prometheus metrics. --auth requires users (dockyard admin
user add) and docker's token login (docs/auth.md). Unreferenced blobs and idle uploads
are collected online every --gc-interval (0 disables it). It runs until SIGINT or
SIGTERM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			k, m, err := registryECFlag(ec)
			if err != nil {
				return fmt.Errorf("--ec: %w", err)
			}
			if err := authOpts.check(); err != nil {
				return err
			}
			level := slog.LevelInfo
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level: %w", err)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			mc, err := dialMeta(cmd, meta)
			if err != nil {
				return err
			}
			defer mc.Close()
			ctx := cmd.Context()
			authCfg, err := authOpts.config(ctx, mc, log)
			if err != nil {
				return err
			}
			client := dfs.New(mc, shardClient(), dfs.Options{K: k, M: m, DurableWrites: durableWrites, Logger: log})
			reg, queue, err := newRegistry(ctx, client, registry.Config{
				Auth:            authCfg,
				MaxBlobSize:     maxBlobMB << 20,
				MaxManifestSize: maxManifestKB << 10,
				GCGrace:         gcGrace,
				UploadTTL:       uploadTTL,
				LocalDownloads:  localDownloads,
			}, log, convertMaxDefer)
			if err != nil {
				return err
			}
			defer closeQueue(queue)
			if err := mountWebUI(reg, mc, client, authCfg, log); err != nil {
				return err
			}
			return serveRegistry(ctx, cmd, reg, listen, gcInterval)
		},
	}
	f := cmd.Flags()
	f.StringVar(&listen, "listen", "127.0.0.1:5000", "address to serve the registry on")
	f.StringVar(&meta, "meta", defaultMeta, "metaserver API addresses, comma-separated")
	addClusterSecretFlag(f)
	f.StringVar(&ec, "ec", "4+2", "erasure coding of blob chunks, data+parity")
	f.Int64Var(&maxBlobMB, "max-blob-mb", 64<<10, "largest blob accepted, in MiB")
	f.Int64Var(&maxManifestKB, "max-manifest-kb", 4<<10, "largest manifest accepted, in KiB")
	f.DurationVar(&gcInterval, "gc-interval", 10*time.Minute, "how often to collect unreferenced blobs and idle uploads (0 = never)")
	f.DurationVar(&gcGrace, "gc-grace", time.Hour, "how long an unreferenced blob is kept after its last upload, mount or reference")
	f.DurationVar(&uploadTTL, "upload-ttl", 24*time.Hour, "how long an idle upload session is kept")
	f.StringVar(&logLevel, "log-level", "info", "log level: debug (every request), info, warn, error")
	addConvertFlag(f, &convertMaxDefer)
	addLocalDownloadsFlag(f, &localDownloads)
	addDurableWritesFlag(f, &durableWrites)
	addAuthFlags(f, &authOpts)
	return cmd
}

// serveRegistry serves reg on listen and runs its collector until ctx ends,
// then shuts down gracefully. `dockyard serve` may call it too.
func serveRegistry(ctx context.Context, cmd *cobra.Command, reg *registry.Registry, listen string, gcInterval time.Duration) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler: reg.Handler(),
		// No write timeout: a multi-GiB layer takes as long as it takes.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	if gcInterval > 0 {
		go reg.RunGC(ctx, gcInterval)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(cmd.ErrOrStderr(), "dockyard: registry serving on %s\n", ln.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return nil
}

// registryECFlag parses "K+M".
func registryECFlag(s string) (k, m int, err error) {
	a, b, ok := strings.Cut(s, "+")
	if ok {
		k, err = strconv.Atoi(a)
	}
	if ok && err == nil {
		m, err = strconv.Atoi(b)
	}
	if !ok || err != nil || k < 1 || m < 0 {
		return 0, 0, fmt.Errorf("%q is not DATA+PARITY, e.g. 4+2", s)
	}
	return k, m, nil
}

// addDurableWritesFlag adds --durable-writes, shared by serve and registry:
// the registry makes every blob durable before acknowledging it either way;
// the flag only moves the flushes from the end of an upload to every shard.
func addDurableWritesFlag(f *pflag.FlagSet, durable *bool) {
	f.BoolVar(durable, "durable-writes", false, "make every shard durable before it is acknowledged instead of once per "+
		"finished blob or file (the old behaviour: slower, the same durability for blobs)")
}
