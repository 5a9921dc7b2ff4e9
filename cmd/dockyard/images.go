package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/dockyard/dockyard/converter"
	"github.com/dockyard/dockyard/registry"

	dfs "github.com/dockyard/dockyard/fs"
)

// newRegistry builds the registry over the file system, with the converter
// indexing every pushed image in the background (one worker: indexing must
// not starve pushes of CPU). `dockyard serve` and `dockyard registry` both
// use it, so both index pushed images the same way. The caller closes the
// returned queue after the registry stops.
func newRegistry(ctx context.Context, c *dfs.Client, cfg registry.Config, log *slog.Logger) (*registry.Registry, *converter.Queue, error) {
	cfg.Logger = log
	q := converter.NewQueue(converter.NewIndexer(converter.NewDFSStore(c, 0), converter.IndexerOptions{Logger: log}), 1, 0)
	cfg.OnManifestPut = q.OnManifestPut
	reg, err := registry.NewOnDFS(ctx, cfg, c)
	if err != nil {
		q.Close(ctx)
		return nil, nil, err
	}
	return reg, q, nil
}

// closeQueue lets indexing already under way finish briefly when a registry
// stops; what is left is indexed on the image's first run.
func closeQueue(q *converter.Queue) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	q.Close(ctx)
}

// defaultSpanCacheDir keeps decompressed layer spans between runs on a host,
// as a pulled image stays on a docker host.
const defaultSpanCacheDir = "/var/cache/dockyard/spans"
