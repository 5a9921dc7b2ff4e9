// Package local runs a whole Dockyard storage cluster in one process: a
// metaserver and several chunkservers on loopback, plus the fs client over
// them. `dockyard serve` runs one with a durable single-node Raft metaserver;
// tests run one with an in-memory metaserver and can kill and restart
// chunkservers to drill failures. Only the command line and tests import it.
package local

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	csserver "github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/internal/clusterauth"
	"github.com/dockyard/dockyard/metaserver"
	msserver "github.com/dockyard/dockyard/metaserver/server"
)

// Config describes a local cluster. Zero values mean the defaults noted.
type Config struct {
	// Dir holds everything: meta/ and chunk-N/ below it.
	Dir string
	// Chunkservers is how many to run; default 6, so 4+2 works on one machine.
	Chunkservers int
	// ChunkBasePort: chunkserver i listens on 127.0.0.1:ChunkBasePort+i;
	// 0 picks free ports.
	ChunkBasePort int
	// ChunkCapacity limits each chunkserver's bytes (0 = the disk's free space).
	ChunkCapacity int64
	// NoSync makes the chunkservers skip fsync (store.WithoutSync): shards
	// reach the page cache only, as the reference registry's files do, and
	// the last seconds of writes are lost if the machine loses power.
	NoSync bool
	// FlushInterval is how often each chunkserver makes shards written
	// buffered durable when no client asked (csserver.Config.FlushInterval):
	// 0 is the default (5 s), negative leaves it to the clients' Syncs and
	// shutdown.
	FlushInterval time.Duration
	// GroupCommit makes the chunkservers share flushes of the file system
	// (syncfs) for durable writes and Syncs instead of an fsync per shard
	// file and directory (csserver.Config.GroupCommit).
	GroupCommit bool
	// HTTPOnly makes the cluster's own clients reach its chunkservers over
	// loopback HTTP, as other processes do, instead of calling them in
	// process. For measuring the difference and testing the HTTP path.
	HTTPOnly bool
	// ShortCircuit makes the chunkservers also serve short-circuit reads
	// to other processes on this host, such as `dockyard mount`, through a
	// Unix socket in each one's directory (csserver.Config.ShortCircuit).
	// The cluster's own clients call the servers in process anyway.
	ShortCircuit bool
	// Encryption makes every chunkserver encrypt its shards at rest with
	// these keys (csserver.Config.Encryption).
	Encryption *store.Keys
	// Meta is the metaserver to use. Nil runs an in-memory metaserver (tests).
	Meta Meta
	// FS tunes the fs client (K, M, chunk size...). MaxUploads defaults to
	// DefaultMaxUploads here rather than to the fs package's default.
	FS fs.Options
	// Auth, when set, makes the chunkservers refuse HTTP requests without
	// the cluster secret; the cluster's own clients sign theirs.
	Auth *clusterauth.Secret
	// HeartbeatInterval of the chunkservers; default one second.
	HeartbeatInterval time.Duration
	Logger            *slog.Logger
}

// DefaultMaxUploads is how many chunks the cluster's own fs client (the
// registry's, in `dockyard serve`) encodes and uploads at once, three times
// the fs package's default. A chunk is stored once its six shards are
// fsynced, so with few chunks in flight the disk idles between a chunk's
// fsyncs and the next chunk's writes; a registry takes several layers at
// once from one client. crane pushes of 1 GiB (four layers at a time) ran 8%
// faster than with 8 (median of six: 4.95 s against 5.36 s, same minutes),
// for up to 24 x 6 MiB of chunk buffers while a push is running.
const DefaultMaxUploads = 24

// Meta is a metaserver the cluster runs on: an in-memory one or a Raft node.
type Meta interface {
	API() *metaserver.Client
	Close() error
}

// Cluster is a running local cluster. Its chunkservers listen on loopback for
// other processes, but Shards (and so FS, and the chunkservers' repairs) reach
// them in process, without HTTP: see chunkserver.Client.Attach.
type Cluster struct {
	cfg    Config
	Meta   *metaserver.Client
	Shards *chunkserver.Client
	FS     *fs.Client

	meta Meta
	ctx  context.Context
	stop context.CancelFunc

	mu      sync.Mutex
	servers []*csserver.Server // nil while killed
	addrs   []string
}

// Start starts the metaserver (when cfg.Meta is nil) and the chunkservers,
// and waits until every chunkserver has registered as up.
func Start(cfg Config) (*Cluster, error) {
	if cfg.Chunkservers <= 0 {
		cfg.Chunkservers = 6
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Dir == "" {
		return nil, errors.New("local cluster: no directory")
	}
	if cfg.Meta == nil {
		cfg.Meta = memoryMeta{msserver.NewMemory()}
	}
	ctx, stop := context.WithCancel(context.Background())
	c := &Cluster{cfg: cfg, meta: cfg.Meta, Meta: cfg.Meta.API(), Shards: chunkserver.NewClusterClient(cfg.Auth), ctx: ctx, stop: stop,
		servers: make([]*csserver.Server, cfg.Chunkservers), addrs: make([]string, cfg.Chunkservers)}
	if cfg.FS.MaxUploads <= 0 {
		cfg.FS.MaxUploads = DefaultMaxUploads
	}
	c.FS = fs.New(c.Meta, c.Shards, cfg.FS)
	for i := range cfg.Chunkservers {
		addr := "127.0.0.1:0"
		if cfg.ChunkBasePort > 0 {
			addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(cfg.ChunkBasePort+i))
		}
		c.addrs[i] = addr
		if err := c.startChunkserver(i); err != nil {
			c.Close()
			return nil, err
		}
	}
	if err := c.WaitChunkserversUp(cfg.Chunkservers, 30*time.Second); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

type memoryMeta struct{ m *msserver.Memory }

func (m memoryMeta) API() *metaserver.Client { return m.m.API() }
func (m memoryMeta) Close() error            { return nil }

func (c *Cluster) chunkDir(i int) string { return filepath.Join(c.cfg.Dir, fmt.Sprintf("chunk-%d", i)) }

func (c *Cluster) startChunkserver(i int) error {
	dir := c.chunkDir(i)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	s, err := csserver.New(csserver.Config{
		DataDir:           dir,
		Listen:            c.addrs[i],
		Capacity:          c.cfg.ChunkCapacity,
		NoSync:            c.cfg.NoSync,
		FlushInterval:     c.cfg.FlushInterval,
		GroupCommit:       c.cfg.GroupCommit,
		ShortCircuit:      c.cfg.ShortCircuit,
		Encryption:        c.cfg.Encryption,
		Cluster:           c.Meta,
		Chunks:            c.Meta,
		HeartbeatInterval: c.cfg.HeartbeatInterval,
		Client:            c.Shards,
		Auth:              c.cfg.Auth,
		Logger:            c.cfg.Logger.With("chunkserver", i),
	})
	if err != nil {
		return fmt.Errorf("chunkserver %d: %w", i, err)
	}
	if err := s.Start(c.ctx); err != nil {
		s.Close()
		return fmt.Errorf("chunkserver %d: %w", i, err)
	}
	c.mu.Lock()
	c.servers[i] = s
	// Keep the port a restart must reuse: the metaserver knows the server by it.
	c.addrs[i] = s.Addr()
	c.mu.Unlock()
	if !c.cfg.HTTPOnly {
		c.Shards.Attach(s.Addr(), s)
	}
	return nil
}

// ChunkserverCount is how many chunkservers the cluster was started with.
func (c *Cluster) ChunkserverCount() int { return len(c.servers) }

// Chunkserver returns server i, nil while it is killed.
func (c *Cluster) Chunkserver(i int) *csserver.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.servers[i]
}

// ChunkserverDir is where server i keeps its shards.
func (c *Cluster) ChunkserverDir(i int) string { return c.chunkDir(i) }

// Kill stops chunkserver i abruptly: its listener closes and its shards stay
// on disk, as after a crash.
func (c *Cluster) Kill(i int) error {
	c.mu.Lock()
	s := c.servers[i]
	c.servers[i] = nil
	c.mu.Unlock()
	if s == nil {
		return fmt.Errorf("chunkserver %d is not running", i)
	}
	// Detached first, so callers find it gone the way a remote client does:
	// a refused connection, not an answer from a closing store.
	c.Shards.Detach(s.Addr())
	return s.Close()
}

// Restart starts a killed chunkserver again on its old address and data.
func (c *Cluster) Restart(i int) error {
	if c.Chunkserver(i) != nil {
		return fmt.Errorf("chunkserver %d is running", i)
	}
	return c.startChunkserver(i)
}

// WaitChunkserversUp waits until at least n chunkservers are up in the
// metaserver's view.
func (c *Cluster) WaitChunkserversUp(n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
		cs, err := c.Meta.Chunkservers(ctx)
		cancel()
		up := 0
		for _, s := range cs {
			if s.State == metaserver.StateUp {
				up++
			}
		}
		if err == nil && up >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d chunkservers up after %s (last error: %v)", up, n, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Close stops the chunkservers and the metaserver.
func (c *Cluster) Close() error {
	c.stop()
	var errs []error
	c.mu.Lock()
	servers := append([]*csserver.Server(nil), c.servers...)
	for i := range c.servers {
		c.servers[i] = nil
	}
	c.mu.Unlock()
	for _, s := range servers {
		if s != nil {
			c.Shards.Detach(s.Addr())
			errs = append(errs, s.Close())
		}
	}
	errs = append(errs, c.meta.Close())
	return errors.Join(errs...)
}
