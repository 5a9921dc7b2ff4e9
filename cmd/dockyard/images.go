package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/spf13/pflag"

	"github.com/dockyard/dockyard/converter"
	"github.com/dockyard/dockyard/registry"

	dfs "github.com/dockyard/dockyard/fs"
)

// newRegistry builds the registry over the file system, with the converter
// indexing every pushed image in the background (one worker: indexing must
// not starve pushes of CPU). Conversion also steps aside for blob transfers:
// it waits until the registry has served none for a second, and pauses while
// one runs, for at most maxDefer per image (0: it runs at once, alongside
// transfers). Queued images are journaled in the metaserver, so a restart
// resumes them. `dockyard serve` and `dockyard registry` both use it, so both
// index pushed images the same way. The caller closes the returned queue
// after the registry stops.
func newRegistry(ctx context.Context, c *dfs.Client, cfg registry.Config, log *slog.Logger, maxDefer time.Duration) (*registry.Registry, *converter.Queue, error) {
	cfg.Logger = log
	opts := []converter.QueueOption{converter.WithJournal(c.Meta())}
	if maxDefer > 0 {
		fg := converter.NewForeground(0)
		opts = append(opts, converter.WithForeground(fg, maxDefer))
		cfg.OnTransfer = fg.Begin
	}
	q := converter.NewQueue(converter.NewIndexer(converter.NewDFSStore(c, 0), converter.IndexerOptions{Logger: log}), 1, 0, opts...)
	cfg.OnManifestPut = q.OnManifestPut
	reg, err := registry.NewOnDFS(ctx, cfg, c)
	if err != nil {
		q.Close(ctx)
		return nil, nil, err
	}
	if n, err := q.Resume(ctx); err != nil {
		log.Warn("pending conversions not resumed; those images are indexed on first use", "err", err)
	} else if n > 0 {
		log.Info("resuming conversions left pending", "images", n)
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

// addLocalDownloadsFlag adds --local-downloads, shared by serve and registry.
func addLocalDownloadsFlag(f *pflag.FlagSet, n *int) {
	f.IntVar(n, "local-downloads", 0, "large blob downloads of one client on this host that send at once; the "+
		"client's others wait their turn in the order it asked, so its per-layer work overlaps the next downloads "+
		"(0 = the number of CPUs, at least 4; negative = no ordering)")
}

// addConvertFlag adds --convert-max-defer, shared by serve and registry.
func addConvertFlag(f *pflag.FlagSet, maxDefer *time.Duration) {
	f.DurationVar(maxDefer, "convert-max-defer", converter.DefaultMaxDefer,
		"longest a pushed image's conversion for lazy mounts waits for blob uploads and downloads to pause "+
			"(0 = convert at once, alongside them)")
}
