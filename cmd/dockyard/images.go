package main

import (
	"context"
	"log/slog"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/registry"
)

// newRegistry builds the registry over the file system. `dockyard serve` and
// `dockyard registry` both use it, so both index pushed images the same way.
func newRegistry(ctx context.Context, c *dfs.Client, cfg registry.Config, log *slog.Logger) (*registry.Registry, error) {
	cfg.Logger = log
	return registry.NewOnDFS(ctx, cfg, c)
}
