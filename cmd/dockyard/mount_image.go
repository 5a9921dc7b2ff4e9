package main

import (
	"context"
	"log/slog"

	"github.com/dockyard/dockyard/chunkserver"
	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/fs/fuse"
	"github.com/dockyard/dockyard/image"
	"github.com/dockyard/dockyard/metaserver"
)

// mountImage mounts one image's merged tree on dir, as `dockyard run` does
// before it starts the container, once the image has passed gate (the
// policy and --verify-key). fsOpt is what the image's fs clients share:
// with P2P set, the image's blocks are also served to and fetched from
// peers; with Counters set, every client counts its reads there.
func mountImage(ctx context.Context, mc *metaserver.Client, ref, scheme string, gate imageGate, dir string, fsOpt dfs.Options, log *slog.Logger) (*fuse.Server, error) {
	r, err := image.ParseRef(ref)
	if err != nil {
		return nil, err
	}
	resolver := &image.Resolver{Scheme: scheme}
	res, err := resolver.Resolve(ctx, r)
	if err != nil {
		return nil, err
	}
	if err := gate.check(ctx, resolver, res); err != nil {
		return nil, err
	}
	images, err := image.New(mc, localShardClient(log, false), image.Options{Logger: log, SpanCacheDir: defaultSpanCacheDir,
		FS: fsOpt})
	if err != nil {
		return nil, err
	}
	root, _, err := images.Prepare(ctx, res)
	if err != nil {
		return nil, err
	}
	return images.Mount(ctx, dir, root)
}

// localShardClient is the shard client of a process that mounts: it reads
// (and with writes, also writes) the shards of chunkservers on this host
// through their short-circuit sockets, falling back to HTTP by itself. An
// image mount only ever reads; a volume writes.
func localShardClient(log *slog.Logger, writes bool) *chunkserver.Client {
	c := shardClient()
	c.EnableShortCircuit(chunkserver.ShortCircuitOptions{Writes: writes, Logger: log})
	return c
}
