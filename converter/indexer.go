package converter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"

	digest "github.com/opencontainers/go-digest"

	"github.com/dockyard/dockyard/metaserver"
)

// Where the converter keeps its records in the DFS (under the reserved
// /.dockyard tree).
const (
	LayersDir = "/.dockyard/layers"
	ImagesDir = "/.dockyard/images"
	BlobsDir  = "/.dockyard/registry/blobs"
)

// LayerIndexPath is where a layer's index is stored.
func LayerIndexPath(d digest.Digest) string {
	return LayersDir + "/" + string(d.Algorithm()) + "/" + d.Encoded() + "/index"
}

// ImageRootfsPath is where an image manifest's merged tree is created.
func ImageRootfsPath(manifest digest.Digest) string {
	return ImagesDir + "/" + string(manifest.Algorithm()) + "/" + manifest.Encoded() + "/rootfs"
}

// BlobPath is where the registry stores a blob.
func BlobPath(d digest.Digest) string {
	return BlobsDir + "/" + string(d.Algorithm()) + "/" + d.Encoded()
}

// Blob is an open layer blob.
type Blob struct {
	io.ReaderAt
	Size int64
	Ino  metaserver.Ino // the blob file's inode, recorded in LayerRefs
}

// BlobSource opens layer blobs and their stored indexes. It is all a
// LayerOpener needs.
type BlobSource interface {
	OpenBlob(ctx context.Context, d digest.Digest) (Blob, error)
	// ReadIndex returns a stored index, or an error wrapping ErrNoIndex.
	ReadIndex(ctx context.Context, d digest.Digest) ([]byte, error)
}

// Store is what the Indexer needs from the DFS. DFSStore implements it over
// the fs client; tests use an in-memory one.
type Store interface {
	BlobSource
	// WriteIndex stores a layer's index atomically; writing the same digest
	// twice is harmless.
	WriteIndex(ctx context.Context, d digest.Digest, data []byte) error
	// HasImageTree reports whether an image's merged tree exists.
	HasImageTree(ctx context.Context, manifest digest.Digest) (bool, error)
	// WriteImageTree creates an image's merged tree, atomically visible.
	WriteImageTree(ctx context.Context, manifest digest.Digest, tree *Tree) error
}

// IndexerOptions configure an Indexer.
type IndexerOptions struct {
	Index  Options
	Logger *slog.Logger
}

// Indexer indexes pushed images: each layer once (keyed by digest), then the
// image's merged tree. It is what the registry calls after a manifest PUT,
// and what `dockyard run` calls for images pushed before indexing existed.
type Indexer struct {
	store Store
	opts  IndexerOptions

	mu       sync.Mutex
	inflight map[string]*indexCall // by digest: one indexing pass per layer or image at a time
}

type indexCall struct {
	done chan struct{}
	idx  *Index
	err  error
}

// NewIndexer makes an Indexer over store.
func NewIndexer(store Store, opts IndexerOptions) *Indexer {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Indexer{store: store, opts: opts, inflight: map[string]*indexCall{}}
}

// ImageResult says what IndexManifest did.
type ImageResult struct {
	Manifest digest.Digest
	// Layers are the layer indexes, bottom first; nil when the image's tree
	// existed already (nothing was loaded).
	Layers       []*Index
	IndexedNow   []digest.Digest // layers indexed by this call (the others were stored already)
	TreeCreated  bool            // false when the tree already existed
	TreeEntries  int
	RootfsPath   string
	BytesIndexed int64 // compressed layer bytes read by this call
}

// IndexManifest indexes the layers of an image manifest and stores its
// merged tree. repo is only used in logs. Indexes and manifest lists give
// ErrNotImage (their platform manifests are indexed when they are pushed);
// so do artifacts.
func (ix *Indexer) IndexManifest(ctx context.Context, repo string, manifest []byte, mediaType string) (*ImageResult, error) {
	if IsIndex(manifest, mediaType) {
		return nil, fmt.Errorf("%w (image index)", ErrNotImage)
	}
	m, err := ParseImageManifest(manifest, mediaType)
	if err != nil {
		return nil, err
	}
	md := digest.FromBytes(manifest)
	res := &ImageResult{Manifest: md, RootfsPath: ImageRootfsPath(md)}
	// The common case on `dockyard run`: the tree exists, so its layers were
	// indexed. Answer without loading their indexes; the Opener loads each
	// one when a file of that layer is first read.
	if exists, err := ix.store.HasImageTree(ctx, md); err != nil {
		return nil, fmt.Errorf("image %s@%s: %w", repo, md, err)
	} else if exists {
		return res, nil
	}
	layers := make([]ImageLayer, len(m.Layers))
	for i, l := range m.Layers {
		idx, built, n, err := ix.layerIndex(ctx, l.Digest)
		if err != nil {
			return nil, fmt.Errorf("image %s@%s: %w", repo, md, err)
		}
		if built {
			res.IndexedNow = append(res.IndexedNow, l.Digest)
			res.BytesIndexed += n
		}
		blob, err := ix.store.OpenBlob(ctx, l.Digest)
		if err != nil {
			return nil, fmt.Errorf("image %s@%s: layer %s: %w", repo, md, l.Digest, err)
		}
		closeBlob(blob)
		res.Layers = append(res.Layers, idx)
		layers[i] = ImageLayer{Index: idx, Blob: blob.Ino}
	}
	// One tree build per image at a time; a second caller waits and finds it.
	_, err = ix.once(ctx, "image:"+md.String(), func() (*Index, error) {
		exists, err := ix.store.HasImageTree(ctx, md)
		if err != nil || exists {
			return nil, err
		}
		tree, err := MergeLayers(layers)
		if err != nil {
			return nil, err
		}
		if err := ix.store.WriteImageTree(ctx, md, tree); err != nil {
			return nil, err
		}
		res.TreeCreated, res.TreeEntries = true, tree.Len()
		return nil, nil
	})
	if err != nil {
		return nil, fmt.Errorf("image %s@%s: %w", repo, md, err)
	}
	ix.opts.Logger.Info("image indexed", "repo", repo, "manifest", md, "layers", len(layers),
		"indexed_now", len(res.IndexedNow), "tree_created", res.TreeCreated, "entries", res.TreeEntries)
	return res, nil
}

// LayerIndex returns a layer's index, building and storing it on first use.
func (ix *Indexer) LayerIndex(ctx context.Context, d digest.Digest) (*Index, error) {
	idx, _, _, err := ix.layerIndex(ctx, d)
	return idx, err
}

func (ix *Indexer) layerIndex(ctx context.Context, d digest.Digest) (idx *Index, built bool, read int64, err error) {
	if idx, err := loadIndex(ctx, ix.store, d); err == nil {
		return idx, false, 0, nil
	} else if !errors.Is(err, ErrNoIndex) {
		return nil, false, 0, err
	}
	idx, err = ix.once(ctx, "layer:"+d.String(), func() (*Index, error) {
		// Another process may have finished it meanwhile.
		if idx, err := loadIndex(ctx, ix.store, d); err == nil {
			return idx, nil
		}
		blob, err := ix.store.OpenBlob(ctx, d)
		if err != nil {
			return nil, fmt.Errorf("layer %s: %w", d, err)
		}
		var r io.ReaderAt = blob
		if y, ok := ctx.Value(yieldKey{}).(func(context.Context) error); ok {
			r = yieldingReader{ctx: ctx, r: blob, yield: y}
		}
		idx, err := BuildIndex(ctx, r, blob.Size, d.String(), ix.opts.Index)
		closeBlob(blob)
		if err != nil {
			return nil, err
		}
		data, err := idx.MarshalBinary()
		if err != nil {
			return nil, err
		}
		if err := ix.store.WriteIndex(ctx, d, data); err != nil {
			return nil, fmt.Errorf("storing index of layer %s: %w", d, err)
		}
		built, read = true, blob.Size
		ix.opts.Logger.Info("layer indexed", "digest", d, "format", idx.Format, "entries", len(idx.Entries),
			"checkpoints", len(idx.Checkpoints), "blob_bytes", blob.Size, "index_bytes", len(data))
		return idx, nil
	})
	return idx, built, read, err
}

func loadIndex(ctx context.Context, src BlobSource, d digest.Digest) (*Index, error) {
	data, err := src.ReadIndex(ctx, d)
	if err != nil {
		return nil, err
	}
	idx, err := UnmarshalIndex(data)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", d, err)
	}
	if idx.Digest != d.String() {
		return nil, fmt.Errorf("%w: index stored for %s names %s", ErrBadIndex, d, idx.Digest)
	}
	return idx, nil
}

// once runs fn for key unless a call for key is running, in which case it
// waits for that call's result.
func (ix *Indexer) once(ctx context.Context, key string, fn func() (*Index, error)) (*Index, error) {
	ix.mu.Lock()
	if c, ok := ix.inflight[key]; ok {
		ix.mu.Unlock()
		select {
		case <-c.done:
			return c.idx, c.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c := &indexCall{done: make(chan struct{})}
	ix.inflight[key] = c
	ix.mu.Unlock()
	c.idx, c.err = fn()
	ix.mu.Lock()
	delete(ix.inflight, key)
	ix.mu.Unlock()
	close(c.done)
	return c.idx, c.err
}

// Opener serves the bytes of files whose inode points into a layer blob; it
// implements fs.LayerOpener. Layer readers (blob handle, decoded index) are
// kept for the most recently used layers; decompressed spans go to one shared
// SpanCache.
type Opener struct {
	src   BlobSource
	cache *SpanCache
	max   int

	mu     sync.Mutex
	layers map[string]*openLayer
	tick   uint64
}

type openLayer struct {
	r    *LayerReader
	used uint64
}

// NewOpener makes an Opener; maxLayers bounds the layers kept open (<= 0:
// 32, about 32 MiB of checkpoint windows for layers of 250 MiB).
func NewOpener(src BlobSource, cache *SpanCache, maxLayers int) *Opener {
	if cache == nil {
		cache = NewSpanCache(0)
	}
	if maxLayers <= 0 {
		maxLayers = 32
	}
	return &Opener{src: src, cache: cache, max: maxLayers, layers: map[string]*openLayer{}}
}

// Cache is the Opener's span cache.
func (o *Opener) Cache() *SpanCache { return o.cache }

// Layer returns a reader over a layer's uncompressed stream.
func (o *Opener) Layer(ctx context.Context, d digest.Digest) (*LayerReader, error) {
	o.mu.Lock()
	o.tick++
	if l, ok := o.layers[d.String()]; ok {
		l.used = o.tick
		o.mu.Unlock()
		return l.r, nil
	}
	o.mu.Unlock()
	idx, err := loadIndex(ctx, o.src, d)
	if err != nil {
		return nil, err
	}
	blob, err := o.src.OpenBlob(ctx, d)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", d, err)
	}
	if blob.Size != idx.CompressedSize {
		return nil, fmt.Errorf("%w: layer %s is %d bytes, its index says %d", ErrBadIndex, d, blob.Size, idx.CompressedSize)
	}
	// Inodes carry their file's offset, so the reader needs only the
	// checkpoints; dropping the entry list keeps an open layer at its
	// windows (32 KiB per checkpoint) instead of ~200 bytes per file.
	idx.Entries = nil
	r := NewLayerReader(blob, idx, o.cache)
	o.mu.Lock()
	defer o.mu.Unlock()
	if l, ok := o.layers[d.String()]; ok { // lost a race: keep the first
		return l.r, nil
	}
	if len(o.layers) >= o.max {
		var oldest string
		var min uint64
		for k, l := range o.layers {
			if oldest == "" || l.used < min {
				oldest, min = k, l.used
			}
		}
		// Files opened on the evicted layer keep their reader; only the
		// zstd cursor is dropped. Blob handles are never closed here for
		// the same reason: a read-only fs.File holds no resources.
		o.layers[oldest].r.Close()
		delete(o.layers, oldest)
	}
	o.layers[d.String()] = &openLayer{r: r, used: o.tick}
	return r, nil
}

// OpenLayerFile implements fs.LayerOpener.
func (o *Opener) OpenLayerFile(ctx context.Context, ino metaserver.Inode) (io.ReaderAt, error) {
	if ino.Layer == nil {
		return nil, fmt.Errorf("inode %d has no layer reference", ino.Ino)
	}
	d, err := digest.Parse(ino.Layer.Digest)
	if err != nil {
		return nil, fmt.Errorf("inode %d: layer digest %q: %w", ino.Ino, ino.Layer.Digest, err)
	}
	l, err := o.Layer(ctx, d)
	if err != nil {
		return nil, err
	}
	end := ino.Layer.Offset + ino.Size
	if end > uint64(l.Size()) {
		return nil, fmt.Errorf("%w: inode %d spans past the end of layer %s", ErrBadIndex, ino.Ino, d)
	}
	return io.NewSectionReader(l, int64(ino.Layer.Offset), int64(ino.Size)), nil
}
