package image

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/converter"
	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/fs/fuse"
	"github.com/dockyard/dockyard/metaserver"
)

// Options configure Images.
type Options struct {
	// SpanCacheBytes bounds the decompressed layer spans kept in memory
	// (default 256 MiB).
	SpanCacheBytes int64
	// SpanCacheDir, when set, also keeps decompressed spans on local disk
	// (at most SpanCacheDiskBytes), so the next `dockyard run` of an image
	// on this host starts warm, as a pulled image would.
	SpanCacheDir       string
	SpanCacheDiskBytes int64
	FS                 dfs.Options
	Logger             *slog.Logger
}

// Images prepares and mounts images stored in one cluster.
type Images struct {
	meta    metaserver.API
	blobs   *dfs.Client // plain client: layer blobs, indexes, trees
	files   *dfs.Client // client whose layer-backed files read through the converter
	store   *converter.DFSStore
	indexer *converter.Indexer
	opener  *converter.Opener
	log     *slog.Logger
}

// New makes Images over a cluster's metaserver and chunkservers.
func New(meta metaserver.API, shards *chunkserver.Client, o Options) (*Images, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.SpanCacheBytes == 0 {
		o.SpanCacheBytes = 256 << 20
	}
	cache, err := converter.OpenSpanCache(converter.SpanCacheOptions{
		MemoryBytes: o.SpanCacheBytes, Dir: o.SpanCacheDir, DiskBytes: o.SpanCacheDiskBytes})
	if err != nil {
		return nil, fmt.Errorf("span cache: %w", err)
	}
	o.FS.Logger = o.Logger
	// Indexing streams whole blobs and gains from read-ahead; lazy reads
	// fetch exactly the compressed span they decode, so read-ahead on them
	// would only fetch bytes nobody asked for.
	blobs := dfs.New(meta, shards, o.FS)
	store := converter.NewDFSStore(blobs, 0)
	lazy := o.FS
	lazy.ReadAhead = -1
	opener := converter.NewOpener(converter.NewDFSStore(dfs.New(meta, shards, lazy), 0), cache, 0)
	fo := o.FS
	fo.LayerOpener = opener
	return &Images{
		meta:    meta,
		blobs:   blobs,
		files:   dfs.New(meta, shards, fo),
		store:   store,
		indexer: converter.NewIndexer(store, converter.IndexerOptions{Logger: o.Logger}),
		opener:  opener,
		log:     o.Logger,
	}, nil
}

// Indexer is the converter's indexer over this cluster; the registry's
// manifest hook feeds it.
func (im *Images) Indexer() *converter.Indexer { return im.indexer }

// Prepare makes sure the image's layers are indexed and its merged tree
// exists (indexing it now when it was pushed before indexing existed or its
// indexing is still queued), and returns the tree's root inode.
func (im *Images) Prepare(ctx context.Context, res *Resolved) (metaserver.Ino, *converter.ImageResult, error) {
	r, err := im.indexer.IndexManifest(ctx, res.Ref.Repo, res.Manifest, res.MediaType)
	if err != nil {
		return 0, nil, fmt.Errorf("preparing %s: %w", res.Ref, err)
	}
	a, err := im.meta.ResolvePath(ctx, r.RootfsPath)
	if err != nil {
		return 0, nil, fmt.Errorf("preparing %s: image tree %s: %w", res.Ref, r.RootfsPath, err)
	}
	return a.Ino, r, nil
}

// Mount mounts an image tree read-only on dir. The tree never changes once
// written, so the kernel may cache names and attributes for long.
func (im *Images) Mount(ctx context.Context, dir string, root metaserver.Ino) (*fuse.Server, error) {
	return fuse.Mount(ctx, dir, im.files, fuse.Options{
		Root:         root,
		ReadOnly:     true,
		EntryTimeout: time.Hour,
		AttrTimeout:  time.Hour,
		// Absent names in an immutable tree stay absent.
		NegativeTimeout: time.Hour,
		FsName:          "dockyard-image",
		// Images carry setuid programs (su, ping, sudo) that must work in
		// the container as they do under docker; the tree is read-only.
		Suid: true,
		// A file read whole is served from a local copy by the kernel on
		// its next open (root only). Nothing here can be opened for
		// writing, so the rule passthrough imposes on writers never
		// applies.
		Passthrough: os.Geteuid() == 0,
		Logger:      im.log,
	})
}
