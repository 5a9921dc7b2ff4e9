package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"

	"github.com/dockyard/dockyard/container"
	"github.com/dockyard/dockyard/image"
)

func init() { subcommands = append(subcommands, commitCmd) }

func commitCmd() *cobra.Command {
	var (
		from, name, message, author, compression, stateDir, scheme, platform string
		changes                                                              []string
		epoch                                                                int64
	)
	cmd := &cobra.Command{
		Use:   "commit DIR REF | commit --container NAME REF",
		Short: "Make a directory, a volume or a container's changes a layer of a new image in a registry",
		Long: `commit writes DIR as one layer (a gzip tar, or zstd with --compression zstd) and pushes an image
with that layer to REF. DIR is a local directory or a directory of the Dockyard file system, dfs:/path
(a volume is dfs:/volumes/NAME). With --from IMAGE the new image is IMAGE's layers and config plus this
layer; without it, an image of this one layer for this host's OS and architecture.

--container NAME commits what a container started with "dockyard run --name NAME" changed, on top of
the image it ran: files it deleted become whiteouts.

The layer keeps modes, owners, modification times, symlinks (never followed), hard links within DIR,
xattrs and device nodes; sockets are skipped with a note. Entries are sorted, so the same tree gives
the same layer digest.`,
		Example: `  dockyard commit ./site 127.0.0.1:5000/site:v1 --from 127.0.0.1:5000/nginx:latest
  dockyard commit dfs:/volumes/data 127.0.0.1:5000/data:snapshot
  dockyard run --name build 127.0.0.1:5000/alpine -- sh -c 'apk add curl'
  dockyard commit --container build 127.0.0.1:5000/alpine-curl:1 --change 'CMD ["curl"]'`,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			scheme, err := registryScheme(cmd, scheme)
			if err != nil {
				return err
			}
			want := 2
			if name != "" {
				want = 1
			}
			if len(args) != want {
				return errors.New("commit: want DIR REF, or --container NAME REF")
			}
			if name != "" && from != "" {
				return errors.New("commit: --container commits on top of the container's own image; --from does not apply")
			}
			ref, err := image.ParseRef(args[len(args)-1])
			if err != nil {
				return err
			}
			if ref.Digest != "" {
				return fmt.Errorf("commit: %s: REF must name a tag, not a digest", args[len(args)-1])
			}
			opts := image.LayerOptions{
				Compression: compression,
				Skipped: func(p, why string) {
					fmt.Fprintf(cmd.ErrOrStderr(), "dockyard: skipping %s: %s\n", p, why)
				},
			}
			created := time.Now().UTC()
			if epoch >= 0 {
				t := time.Unix(epoch, 0).UTC()
				opts.SourceDateEpoch, created = &t, t
			}
			if compression != image.Gzip && compression != image.Zstd {
				return fmt.Errorf("commit: --compression %q: want gzip or zstd", compression)
			}
			cc := image.CommitConfig{Created: created, Author: author, Comment: message, Changes: changes}
			// --change errors are found before any layer is written.
			if err := image.ApplyChanges(new(ocispec.ImageConfig), changes); err != nil {
				return err
			}

			r := &image.Resolver{Scheme: scheme}
			var (
				tree image.Tree
				base *image.Resolved
			)
			switch src := args[0]; {
			case name != "":
				rec, err := container.Load(stateDir, name)
				if err != nil {
					return err
				}
				if busy, err := container.InUse(stateDir, name); err != nil {
					return err
				} else if busy {
					return fmt.Errorf("commit: container %q is still running; commit it after it exits", name)
				}
				if tree, err = image.NewDirTree(container.UpperDir(stateDir, name)); err != nil {
					return fmt.Errorf("commit: container %q: %w", name, err)
				}
				opts.Overlay = true
				cc.CreatedBy = "dockyard commit --container " + name
				if base, err = resolveRecorded(ctx, rec); err != nil {
					return err
				}
			case strings.HasPrefix(src, dfsPrefix):
				p, err := mustDFSPath(src)
				if err != nil {
					return fmt.Errorf("commit: %w", err)
				}
				c, err := newFSClient(cmd)
				if err != nil {
					return fmt.Errorf("commit: %w", err)
				}
				if tree, err = image.NewDFSTree(ctx, c, p); err != nil {
					return fmt.Errorf("commit: %w", err)
				}
				cc.CreatedBy = "dockyard commit " + dfsPrefix + p
			default:
				if tree, err = image.NewDirTree(src); err != nil {
					return fmt.Errorf("commit: %w", err)
				}
				cc.CreatedBy = "dockyard commit"
			}
			if from != "" {
				fref, err := image.ParseRef(from)
				if err != nil {
					return fmt.Errorf("--from: %w", err)
				}
				plat, err := parsePlatform(platform)
				if err != nil {
					return err
				}
				br := &image.Resolver{Scheme: scheme, Platform: plat}
				if base, err = br.Resolve(ctx, fref); err != nil {
					return fmt.Errorf("--from: %w", err)
				}
			}
			if err := r.Ping(ctx, ref); err != nil {
				return fmt.Errorf("commit: %w", err)
			}

			tmp, err := os.CreateTemp("", "dockyard-commit-*.layer")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			defer tmp.Close()
			layer, err := image.WriteLayer(ctx, tmp, tree, opts)
			if err != nil {
				return fmt.Errorf("commit: %w", err)
			}
			var baseCfg *ocispec.Image
			if base != nil {
				baseCfg = &base.Config
			}
			cfg, err := image.BuildConfig(baseCfg, layer.DiffID, cc)
			if err != nil {
				return err
			}
			d, err := r.Push(ctx, ref, image.Commit{Base: base, Layer: layer, Blob: tmp, Config: cfg})
			if err != nil {
				return fmt.Errorf("commit: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s@%s\n", ref, d)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&from, "from", "", "base image: the new image is its layers and config plus this layer")
	f.StringVar(&name, "container", "", "commit the changes of the container started with dockyard run --name NAME")
	f.StringVarP(&message, "message", "m", "", "comment recorded in the image's history")
	f.StringVarP(&author, "author", "a", "", "author recorded in the image config and history")
	f.StringArrayVarP(&changes, "change", "c", nil, "apply a Dockerfile instruction to the config: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL; repeatable")
	f.StringVar(&compression, "compression", image.Gzip, "layer compression: gzip or zstd")
	f.Int64Var(&epoch, "source-date-epoch", sourceDateEpoch(), "clamp file times to this Unix time and use it as the image's creation time, for reproducible images (default $SOURCE_DATE_EPOCH, else off)")
	f.StringVar(&stateDir, "state-dir", "/run/dockyard", "the state dir dockyard run keeps named containers in")
	addRegistrySchemeFlag(f, &scheme)
	f.StringVar(&platform, "platform", runtime.GOOS+"/"+runtime.GOARCH, "platform to pick from a multi-platform --from image")
	f.String("meta", defaultMeta, "metaserver API addresses, comma-separated (for a dfs:/ DIR)")
	addClusterSecretFlag(f)
	return cmd
}

// sourceDateEpoch is $SOURCE_DATE_EPOCH, or -1 when it is unset or invalid.
func sourceDateEpoch() int64 {
	if v, err := strconv.ParseInt(os.Getenv("SOURCE_DATE_EPOCH"), 10, 64); err == nil && v >= 0 {
		return v
	}
	return -1
}

// resolveRecorded resolves the exact image a kept container ran: its
// reference pinned to the manifest digest it recorded.
func resolveRecorded(ctx context.Context, rec container.Record) (*image.Resolved, error) {
	ref, err := image.ParseRef(rec.Image)
	if err != nil {
		return nil, fmt.Errorf("container %q: %w", rec.Name, err)
	}
	d, err := digest.Parse(rec.Manifest)
	if err != nil {
		return nil, fmt.Errorf("container %q: bad manifest digest %q", rec.Name, rec.Manifest)
	}
	ref.Digest = d
	res, err := (&image.Resolver{Scheme: rec.Scheme}).Resolve(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("container %q: its image: %w", rec.Name, err)
	}
	return res, nil
}
