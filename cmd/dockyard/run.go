package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockyard/dockyard/container"
	"github.com/dockyard/dockyard/converter"
	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/image"
)

func init() { subcommands = append(subcommands, runCmd) }

func runCmd() *cobra.Command {
	var (
		meta, platform, workdir, user, entrypoint, network, stateDir, runtime, hostname, scheme string
		env, volumeSpecs                                                                        []string
		keep, verbose                                                                           bool
		spanCacheDir, verifyKey, policyPath, name, p2pListen, p2pAdvertise, metricsListen       string
		spanCacheMB                                                                             int64
	)
	cmd := &cobra.Command{
		Use:   "run [--meta ADDRS] REF [-- CMD ARGS...]",
		Short: "Start a container from an image in the cluster, without pulling it",
		Long: `run resolves REF against its registry (127.0.0.1:5000 when REF names none), makes sure the image is
indexed, mounts its merged tree read-only from the file system (bytes are fetched as the container reads
them), puts an overlay with a local upper directory on top and runs the image's command, or CMD, with runc.
Everything is torn down when the process exits, and run exits with the process's status.

-v NAME:/path mounts the Dockyard volume NAME (dfs:/volumes/NAME, created if missing; the
same volumes Docker's containers get through the volume plugin) at /path; -v /host/dir:/path
binds a host directory. Add :ro for read-only.

--name NAME keeps the container's state (its overlay upper dir: what it wrote and deleted) after it
exits, for "dockyard commit --container NAME REF"; "dockyard container rm NAME" removes it.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			scheme, err := registryScheme(cmd, scheme)
			if err != nil {
				return err
			}
			ref, err := image.ParseRef(args[0])
			if err != nil {
				return err
			}
			if name != "" {
				if err := container.CheckName(name); err != nil {
					return err
				}
			}
			plat, err := parsePlatform(platform)
			if err != nil {
				return err
			}
			vols, err := parseVolumeSpecs(volumeSpecs)
			if err != nil {
				return err
			}
			gate, err := newImageGate(policyPath, verifyKey)
			if err != nil {
				return err
			}
			if err := checkP2PFlags(p2pListen, p2pAdvertise); err != nil {
				return err
			}
			metricsLn, err := listenMetrics(metricsListen)
			if err != nil {
				return err
			}
			if metricsLn != nil {
				// Closed here too when run fails before mounting; twice
				// is harmless.
				defer metricsLn.Close()
			}
			level := slog.LevelWarn
			if verbose {
				level = slog.LevelInfo
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			ctx := cmd.Context()
			start := time.Now()

			resolver := &image.Resolver{Scheme: scheme, Platform: plat}
			res, err := resolver.Resolve(ctx, ref)
			if err != nil {
				return err
			}
			// Before a byte of the image is read.
			if err := gate.check(ctx, resolver, res); err != nil {
				return err
			}
			mc, err := metaClient(cmd)
			if err != nil {
				return err
			}
			defer mc.Close()
			var p2p *dfs.P2P
			if p2pListen != "" {
				if p2p, err = startP2P(mc, p2pListen, p2pAdvertise, log); err != nil {
					return err
				}
				defer func() {
					p2p.Close()
					logP2PStats(log, p2p)
				}()
			}
			// The image's clients count their reads together, so the
			// mount's metrics cover the layer reads too.
			images, err := image.New(mc, localShardClient(log, false), image.Options{
				Logger: log, SpanCacheDir: spanCacheDir, SpanCacheDiskBytes: spanCacheMB << 20,
				FS: dfs.Options{P2P: p2p, Counters: new(dfs.Counters)}})
			if err != nil {
				return err
			}
			root, _, err := images.Prepare(ctx, res)
			if err != nil {
				return err
			}

			id := newContainerID()
			started := false
			if name != "" {
				// A named container's state outlives it, until
				// `dockyard container rm`; one that never started is
				// not kept.
				if err := container.Reserve(stateDir, container.Record{Name: name, Image: ref.String(),
					Manifest: res.ManifestDigest.String(), Scheme: scheme, Created: time.Now().UTC()}); err != nil {
					return err
				}
				id = name
				keep = true
			}
			dir := container.Dir(stateDir, id)
			defer func() {
				switch {
				case !started:
					os.RemoveAll(dir)
				case name == "" && keep:
					// The image mount and volumes under dir are gone by
					// now; the bundle and upper dir stay for debugging.
					fmt.Fprintf(cmd.ErrOrStderr(), "dockyard: kept the container's bundle and upper dir in %s\n", dir)
				case name == "":
					os.RemoveAll(dir)
				}
			}()
			lower := filepath.Join(dir, "image")
			if err := os.MkdirAll(lower, 0o700); err != nil {
				return err
			}
			srv, err := images.Mount(ctx, lower, root)
			if err != nil {
				return err
			}
			defer func() {
				if err := srv.Unmount(); err != nil {
					log.Warn("unmounting the image", "dir", lower, "err", err)
				}
			}()
			log.Info("image mounted", "ref", ref, "manifest", res.ManifestDigest, "after", time.Since(start))
			defer serveMetrics(metricsLn, srv, log)()

			mounts, closeVolumes, err := mountVolumes(ctx, mc, vols, filepath.Join(dir, "volumes"), id, log)
			if err != nil {
				return err
			}
			defer closeVolumes()

			var ep []string
			if cmd.Flags().Changed("entrypoint") {
				ep = strings.Fields(entrypoint)
			}
			started = true
			return container.Run(ctx, container.RunOptions{
				Lower:    lower,
				StateDir: filepath.Join(dir, "bundle"),
				ID:       id,
				Image:    res.Config.Config,
				Spec: container.SpecOptions{
					Args: args[1:], Entrypoint: ep, Env: env, Workdir: workdir, User: user,
					Hostname: hostname, HostNetwork: network == "host", Mounts: mounts,
				},
				Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr,
				Runtime: runtime,
				Keep:    keep,
			})
		},
	}
	f := cmd.Flags()
	f.StringVar(&meta, "meta", defaultMeta, "metaserver API addresses, comma-separated")
	addClusterSecretFlag(f)
	f.StringVar(&platform, "platform", "linux/amd64", "platform to pick from a multi-platform image")
	f.StringArrayVarP(&env, "env", "e", nil, "set an environment variable (KEY=VALUE); repeatable")
	f.StringVarP(&workdir, "workdir", "w", "", "working directory inside the container")
	f.StringVarP(&user, "user", "u", "", "user[:group] to run as (names or ids)")
	f.StringVar(&entrypoint, "entrypoint", "", "replace the image's entrypoint (the image's CMD is then dropped)")
	f.StringVar(&network, "network", "none", "network: none (loopback only) or host")
	f.StringVar(&hostname, "hostname", "", "container host name")
	f.StringVar(&stateDir, "state-dir", "/run/dockyard", "where mounts and bundles of running containers live")
	f.StringVar(&runtime, "runtime", "runc", "OCI runtime binary")
	addRegistrySchemeFlag(f, &scheme)
	f.StringVar(&spanCacheDir, "span-cache-dir", defaultSpanCacheDir, "keep decompressed image bytes here between runs (empty: memory only, every run starts cold)")
	f.Int64Var(&spanCacheMB, "span-cache-mb", 4096, "most MiB the span cache may keep on disk")
	f.BoolVar(&keep, "keep", false, "keep the bundle and the upper dir after exit (for debugging)")
	f.StringVar(&name, "name", "", "name the container and keep its state after exit, for dockyard commit --container NAME (removed by dockyard container rm NAME)")
	f.StringArrayVarP(&volumeSpecs, "volume", "v", nil, "mount a Dockyard volume (NAME:/path) or a host directory (/dir:/path), :ro for read-only; repeatable")
	f.BoolVar(&verbose, "verbose", false, "log what run does")
	addP2PFlags(f, &p2pListen, &p2pAdvertise)
	addMetricsFlag(f, &metricsListen)
	f.StringVar(&verifyKey, "verify-key", "", "run only if the image carries a signature made with this PEM public key (cosign's format; see dockyard sign), in addition to what the policy requires")
	addPolicyFlag(f, &policyPath)
	return cmd
}

func newContainerID() string {
	var b [6]byte
	rand.Read(b[:])
	return "dockyard-" + hex.EncodeToString(b[:])
}

// parsePlatform parses OS/ARCH[/VARIANT].
func parsePlatform(s string) (converter.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" {
		return converter.Platform{}, fmt.Errorf("--platform %q: want OS/ARCH[/VARIANT]", s)
	}
	p := converter.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}
