package main

import (
	"context"
	"log/slog"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/image"
	"github.com/dockyard/dockyard/metaserver"
	"github.com/dockyard/dockyard/registry"

	dfs "github.com/dockyard/dockyard/fs"
)

// newRegistry builds the registry over the file system, with the converter
// indexing every pushed image in the background. `dockyard serve` and
// `dockyard registry` both use it, so both index pushed images the same way.
func newRegistry(ctx context.Context, c *dfs.Client, meta metaserver.API, shards *chunkserver.Client, cfg registry.Config, log *slog.Logger) (*registry.Registry, error) {
	cfg.Logger = log
	images := image.New(meta, shards, image.Options{Logger: log})
	cfg.OnManifestPut = images.IndexOnPush(ctx)
	return registry.NewOnDFS(ctx, cfg, c)
}
