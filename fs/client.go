package fs

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/klauspost/reedsolomon"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/metaserver"
)

// Client is the file-system client of one process. It is safe for concurrent
// use; its caches are shared by all the files it opens.
type Client struct {
	meta   metaserver.API
	shards *chunkserver.Client
	opt    Options
	log    *slog.Logger

	cache *blockCache // nil when disabled
	disk  *diskCache  // nil unless Options.CacheDir is set
	p2p   *P2P        // nil unless Options.P2P is set (and the cache is on)
	ctr   *Counters   // Options.Counters, or the client's own

	// uploads bounds the chunks being encoded or uploaded, over all files.
	uploads chan struct{}
	// bufs recycles chunk buffers: ChunkSize of data followed by room for
	// parity, so a full chunk is encoded in place without a copy.
	bufs   sync.Pool
	bufCap int64

	encMu sync.Mutex
	encs  map[[2]int]reedsolomon.Encoder

	chunkMu sync.Mutex
	chunks  map[metaserver.ChunkID]*metaserver.Chunk

	reportMu sync.Mutex
	reported map[shardRef]time.Time

	health serverHealth

	// syncs tracks the chunkservers holding buffered shards per inode,
	// for File.Sync (see sync.go).
	syncs syncSet
}

type shardRef struct {
	chunk metaserver.ChunkID
	index int
}

// maxChunkInfos bounds the chunk-location cache; it is dropped whole when full,
// which costs one GetChunk per chunk read afterwards and keeps the code simple.
const maxChunkInfos = 1 << 16

// reportEvery limits how often one bad shard is reported, so a hot file with a
// dead shard does not flood the metaserver while the repair is under way.
const reportEvery = time.Minute

// New makes a client over a metaserver and the chunkservers' HTTP client.
func New(meta metaserver.API, shards *chunkserver.Client, opt Options) *Client {
	opt = opt.withDefaults()
	c := &Client{
		meta:     meta,
		shards:   shards,
		opt:      opt,
		log:      opt.Logger,
		uploads:  make(chan struct{}, opt.MaxUploads),
		encs:     map[[2]int]reedsolomon.Encoder{},
		chunks:   map[metaserver.ChunkID]*metaserver.Chunk{},
		reported: map[shardRef]time.Time{},
		ctr:      opt.Counters,
	}
	if c.ctr == nil {
		c.ctr = new(Counters)
	}
	if opt.CacheBytes > 0 {
		c.cache = newBlockCache(opt.CacheBytes)
		c.cache.held = &c.ctr.cacheBytes
		if opt.CacheDir != "" {
			// New has no error to return: a cache directory that cannot
			// be used costs speed, not correctness.
			d, err := newDiskCache(opt.CacheDir, opt.DiskCacheBytes)
			if err != nil {
				c.log.Warn("running without the disk block cache", "err", err)
			} else {
				c.disk = d
			}
		}
	}
	if opt.P2P != nil {
		if c.cache == nil {
			c.log.Warn("p2p needs the block cache; this client neither serves nor asks peers")
		} else {
			c.p2p = opt.P2P
			c.p2p.attach(c)
		}
	}
	c.bufCap = int64(opt.K+opt.M) * shardSizeFor(opt.ChunkSize, opt.K)
	// A replicated chunk needs only its data; a small chunk is EC-coded into
	// at most (K+M)*ceil(size/K) bytes, less than bufCap.
	c.bufs.New = func() any { b := make([]byte, c.bufCap); return &b }
	return c
}

// Meta returns the metaserver API: namespace operations go straight to it.
func (c *Client) Meta() metaserver.API { return c.meta }

// Shards returns the chunkserver client shards go through, for its
// counters (chunkserver.Client.ShortCircuitStats).
func (c *Client) Shards() *chunkserver.Client { return c.shards }

func (c *Client) encoder(k, m int) (reedsolomon.Encoder, error) {
	c.encMu.Lock()
	defer c.encMu.Unlock()
	key := [2]int{k, m}
	if e, ok := c.encs[key]; ok {
		return e, nil
	}
	e, err := reedsolomon.New(k, m)
	if err != nil {
		return nil, fmt.Errorf("erasure coder %d+%d: %w", k, m, err)
	}
	c.encs[key] = e
	return e, nil
}

// chunk returns a chunk's record, from the cache unless refresh is set.
// Shard locations change when the metaserver repairs or drains, so a read that
// fails refreshes before giving up.
func (c *Client) chunk(ctx context.Context, id metaserver.ChunkID, refresh bool) (*metaserver.Chunk, error) {
	if !refresh {
		c.chunkMu.Lock()
		ch, ok := c.chunks[id]
		c.chunkMu.Unlock()
		if ok {
			return ch, nil
		}
	}
	got, err := c.meta.GetChunk(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("looking up chunk %d: %w", id, err)
	}
	ch := &got
	c.chunkMu.Lock()
	if len(c.chunks) >= maxChunkInfos {
		clear(c.chunks)
	}
	c.chunks[id] = ch
	c.chunkMu.Unlock()
	return ch, nil
}

func (c *Client) rememberChunk(ch metaserver.Chunk) {
	c.chunkMu.Lock()
	defer c.chunkMu.Unlock()
	if len(c.chunks) >= maxChunkInfos {
		clear(c.chunks)
	}
	c.chunks[ch.ID] = &ch
}

// reportBadShard tells the metaserver, in the background, that a shard is
// missing or corrupt. A failed report is logged, not returned: the read that
// found the damage has already succeeded from other shards.
// reportBadShard tells the metaserver that shard index of chunk id, read
// from server, is missing or corrupt. The chunk's location may be older than
// the metaserver's: a shard moved by rebalancing or repair is gone from its
// old server, and reporting that would mark the healthy copy at its new place
// bad. So the report goes only if server still holds the shard.
func (c *Client) reportBadShard(id metaserver.ChunkID, index int, server metaserver.ServerID, reason string) {
	ref := shardRef{id, index}
	now := time.Now()
	c.reportMu.Lock()
	if t, ok := c.reported[ref]; ok && now.Sub(t) < reportEvery {
		c.reportMu.Unlock()
		return
	}
	if len(c.reported) > 4096 {
		clear(c.reported)
	}
	c.reported[ref] = now
	c.reportMu.Unlock()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), c.opt.IOTimeout)
		defer cancel()
		if cur, err := c.meta.GetChunk(ctx, id); err == nil {
			for _, s := range cur.Shards {
				if s.Index == index && s.Server != server {
					c.log.Debug("shard moved since it was located; not reporting", "chunk", id, "index", index, "from", server, "now", s.Server)
					return
				}
			}
		}
		if err := c.meta.ReportBadShard(ctx, id, index, reason); err != nil {
			c.log.Warn("reporting bad shard failed", "chunk", id, "index", index, "reason", reason, "err", err)
		}
	}()
}

func (c *Client) getBuf() *[]byte { return c.bufs.Get().(*[]byte) }

func (c *Client) putBuf(b *[]byte) { c.bufs.Put(b) }

// OpenCreated opens the file a create just made or found, from the create's
// reply. An empty regular file has no extents and no layer, so its attributes
// are all a File needs and the metaserver is not asked again: one round trip
// less per created file. Anything else is opened by Open.
func (c *Client) OpenCreated(ctx context.Context, a metaserver.Attr) (*File, error) {
	if a.Mode&syscall.S_IFMT != syscall.S_IFREG || a.Size != 0 {
		return c.Open(ctx, a.Ino)
	}
	return newFile(c, metaserver.Inode{Attr: a}), nil
}

// Open returns a handle on a regular file. It always fetches the inode afresh
// (close-to-open consistency); cached blocks stay valid because they are keyed
// by immutable chunks.
func (c *Client) Open(ctx context.Context, ino metaserver.Ino) (*File, error) {
	in, err := c.meta.GetInode(ctx, ino)
	if err != nil {
		return nil, fmt.Errorf("opening inode %d: %w", ino, err)
	}
	if in.IsDir() {
		return nil, metaserver.Errf("open", syscall.EISDIR, "inode %d is a directory", ino)
	}
	if !in.IsRegular() {
		return nil, metaserver.Errf("open", syscall.EINVAL, "inode %d is not a regular file", ino)
	}
	f := newFile(c, in)
	if in.Layer != nil {
		if c.opt.LayerOpener == nil {
			f.layerErr = errLayerNoOpener
		} else if f.layer, err = c.opt.LayerOpener.OpenLayerFile(ctx, in); err != nil {
			return nil, fmt.Errorf("opening layer-backed inode %d: %w", ino, err)
		}
	}
	return f, nil
}
