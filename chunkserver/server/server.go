// Package server runs a chunkserver: the shard HTTP API over a store, the
// heartbeat loop that registers it with the metaserver and takes work from the
// replies (deletes, repairs), the repair workers that rebuild shards from their
// peers, and the background scrubber that re-verifies every stored block.
//
// Several servers can run in one process (dockyard serve starts six); nothing
// here is global. It talks to the metaserver only through the
// metaserver.Cluster and metaserver.Chunks interfaces and never imports the
// metaserver's server code, echo or go-fuse.
package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/internal/clusterauth"
	"github.com/dockyard/dockyard/metaserver"
)

// Config configures a Server. Zero values mean the defaults noted.
type Config struct {
	// DataDir holds the shards (unless Store is set) and the server's ID.
	DataDir string
	// Listen is the API address; default 127.0.0.1:0 (a free port).
	Listen string
	// Advertise is the address sent to the metaserver; default the
	// listener's own address. Set it when listening on all interfaces.
	Advertise string
	// Labels are sent with heartbeats for failure-domain placement (zone=a).
	Labels map[string]string
	// Capacity limits the bytes stored (0 = the disk's free space; the
	// smaller of the two applies). Used only when the server opens its own
	// disk store.
	Capacity int64
	// NoSync makes the disk store skip fsync (store.WithoutSync): faster
	// writes, at the risk store.Disk describes. Used only when the server
	// opens its own disk store.
	NoSync bool
	// GroupCommit makes concurrent shard writes share flushes of the whole
	// file system (store.WithGroupCommit) instead of each fsyncing its own
	// file: less CPU, but only for a disk the chunkservers have to
	// themselves. Used only when the server opens its own disk store.
	GroupCommit bool
	// FlushInterval is how often the disk store makes buffered shards
	// durable when no client asked with Sync: default
	// store.DefaultFlushInterval (5 s), which bounds what a power loss can
	// take from writers that never fsync; negative leaves it to Sync and
	// shutdown. Used only when the server opens its own disk store.
	FlushInterval time.Duration
	// Encryption, when set, makes the disk store encrypt shards at rest
	// with its primary key and read them with any of its keys
	// (store.WithEncryption); the short-circuit socket then serves bytes
	// instead of descriptors. Used only when the server opens its own disk
	// store.
	Encryption *store.Keys
	// Store replaces the disk store in DataDir (e.g. store.NewMemory in
	// tests). The caller keeps ownership: Close does not close it.
	Store store.Store
	// ID overrides the ID kept in DataDir; needed when DataDir is empty.
	ID metaserver.ServerID

	// Cluster receives heartbeats and repair completions; nil runs the
	// server standalone (no registration, no repairs).
	Cluster metaserver.Cluster
	// Chunks receives reports of corrupt shards found by the scrubber.
	Chunks metaserver.Chunks
	// HeartbeatInterval defaults to one second.
	HeartbeatInterval time.Duration

	// ScrubRate caps the scrubber's reads in bytes per second: default
	// 16 MiB/s, which re-reads a full 1 TB disk about every 18 hours while
	// leaving the disk to foreground traffic; negative disables scrubbing.
	ScrubRate int64
	// ScrubPause is the wait between two scrub passes; default one hour.
	ScrubPause time.Duration

	// StrayInterval is how often the server asks the metaserver which of
	// its shards nothing places here any more (strays.go); a shard reported
	// in two passes in a row is deleted. Default DefaultStrayInterval;
	// negative turns it off.
	StrayInterval time.Duration

	// RepairWorkers is how many repairs run at once; default 2.
	RepairWorkers int
	// RepairTimeout bounds one repair; default 2 minutes.
	RepairTimeout time.Duration
	// MaxShardSize bounds a PUT body; default 64 MiB.
	MaxShardSize int64

	// ShortCircuit makes the server also listen on a Unix socket in
	// DataDir through which clients on this host open shard files and read
	// them themselves (see unixsock.go). Only with a disk store; if the
	// socket cannot be made the server logs why and serves without it.
	ShortCircuit bool

	// Auth, when set, makes the API refuse requests without the cluster
	// secret (except /healthz and /metrics). The Cluster and Client given
	// here must then sign their requests with it too.
	Auth *clusterauth.Secret
	// Client fetches shards from peers during repair; default a new
	// chunkserver.NewClusterClient(Auth).
	Client *chunkserver.Client
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Defaults, in one place.
const (
	DefaultListen            = "127.0.0.1:0"
	DefaultHeartbeatInterval = time.Second
	DefaultScrubRate         = 16 << 20
	DefaultScrubPause        = time.Hour
	DefaultRepairWorkers     = 2
	DefaultRepairTimeout     = 2 * time.Minute
	DefaultStrayInterval     = 10 * time.Minute
	DefaultMaxShardSize      = 64 << 20
	idFile                   = "chunkserver-id"
)

// Server is one chunkserver.
type Server struct {
	cfg      Config
	id       metaserver.ServerID
	store    store.Store
	ownStore bool
	ln       net.Listener
	http     *http.Server
	log      *slog.Logger
	client   *chunkserver.Client
	metrics  *metrics
	bufs     sync.Pool // *[]byte shard buffers for PUT and GET

	sc       *shortCircuit // nil unless Config.ShortCircuit and the socket is up
	repairs  chan metaserver.RepairTask
	inflight sync.Map // shard name -> struct{}: repairs queued or running

	// life bounds background work started by requests (corruption reports);
	// Close cancels it.
	life     context.Context
	endLife  context.CancelFunc
	reported sync.Map // shard name -> time.Time of the last corruption report

	mu      sync.Mutex
	started bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closed  bool
}

// New opens the store, loads or creates the server ID and binds the listener,
// so Addr and ID are valid before Start.
func New(cfg Config) (*Server, error) {
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.HeartbeatInterval <= 0 {
		cfg.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if cfg.ScrubRate == 0 {
		cfg.ScrubRate = DefaultScrubRate
	}
	if cfg.ScrubPause <= 0 {
		cfg.ScrubPause = DefaultScrubPause
	}
	if cfg.RepairWorkers <= 0 {
		cfg.RepairWorkers = DefaultRepairWorkers
	}
	if cfg.StrayInterval == 0 {
		cfg.StrayInterval = DefaultStrayInterval
	}
	if cfg.RepairTimeout <= 0 {
		cfg.RepairTimeout = DefaultRepairTimeout
	}
	if cfg.MaxShardSize <= 0 {
		cfg.MaxShardSize = DefaultMaxShardSize
	}
	if cfg.Client == nil {
		cfg.Client = chunkserver.NewClusterClient(cfg.Auth)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DataDir == "" && (cfg.Store == nil || cfg.ID == "") {
		return nil, errors.New("chunkserver: a data directory is required (or both a store and an ID)")
	}
	s := &Server{
		cfg:     cfg,
		client:  cfg.Client,
		metrics: newMetrics(),
		repairs: make(chan metaserver.RepairTask, 1024),
	}
	s.life, s.endLife = context.WithCancel(context.Background())
	s.id = cfg.ID
	if s.id == "" {
		id, err := loadOrCreateID(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		s.id = id
	}
	s.store = cfg.Store
	if s.store == nil {
		var opts []store.DiskOption
		if cfg.NoSync {
			opts = append(opts, store.WithoutSync())
		}
		if cfg.GroupCommit {
			opts = append(opts, store.WithGroupCommit())
		}
		if cfg.FlushInterval != 0 {
			opts = append(opts, store.WithFlushInterval(cfg.FlushInterval))
		}
		if cfg.Encryption != nil {
			opts = append(opts, store.WithEncryption(cfg.Encryption))
		}
		// The store starts its flusher at once, before s.log exists.
		opts = append(opts, store.WithFlushErrorHandler(func(err error) {
			s.metrics.flushErrors.Add(1)
			cfg.Logger.Error("background flush of buffered shards failed; retrying", "chunkserver", string(s.id), "err", err)
		}))
		d, err := store.OpenDisk(cfg.DataDir, cfg.Capacity, opts...)
		if err != nil {
			return nil, fmt.Errorf("chunkserver: %w", err)
		}
		s.store, s.ownStore = d, true
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		if s.ownStore {
			_ = s.store.Close()
		}
		return nil, fmt.Errorf("chunkserver: %w", err)
	}
	s.ln = ln
	s.log = cfg.Logger.With("chunkserver", string(s.id), "addr", s.Addr())
	s.http = &http.Server{
		Handler:           cfg.Auth.Middleware(s.withShortCircuit(s.Handler())),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	if cfg.ShortCircuit {
		sc, err := s.listenShortCircuit()
		if err != nil {
			s.log.Warn("short-circuit reads off", "err", err)
		}
		s.sc = sc
	}
	return s, nil
}

// ID is the server's stable identity.
func (s *Server) ID() metaserver.ServerID { return s.id }

// Addr is the address the server advertises to the metaserver and peers.
func (s *Server) Addr() string {
	if s.cfg.Advertise != "" {
		return s.cfg.Advertise
	}
	return s.ln.Addr().String()
}

// Store is the server's shard store.
func (s *Server) Store() store.Store { return s.store }

// Start serves the API and starts heartbeats, repair workers and the scrubber.
// They run until Close (or until ctx is cancelled, which stops the loops but
// leaves the API serving until Close).
func (s *Server) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("chunkserver: start after close")
	}
	if s.started {
		return errors.New("chunkserver: already started")
	}
	s.started = true
	ctx, s.cancel = context.WithCancel(ctx)
	s.wg.Go(func() {
		if err := s.http.Serve(s.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("API server stopped", "err", err)
		}
	})
	if s.sc != nil {
		s.wg.Go(s.serveShortCircuit)
	}
	if s.cfg.Cluster != nil {
		s.wg.Go(func() { s.heartbeatLoop(ctx) })
		for range s.cfg.RepairWorkers {
			s.wg.Go(func() { s.repairWorker(ctx) })
		}
		if s.cfg.StrayInterval > 0 {
			s.wg.Go(func() { s.strayLoop(ctx) })
		}
	}
	if s.cfg.ScrubRate > 0 {
		s.wg.Go(func() { s.scrubLoop(ctx) })
	}
	s.log.Info("chunkserver started", "labels", s.cfg.Labels, "scrubRate", s.cfg.ScrubRate)
	return nil
}

// Close stops the loops, lets in-flight requests finish (up to five seconds)
// and closes the store if the server opened it.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started := s.started
	if s.cancel != nil {
		s.cancel()
	}
	s.endLife()
	s.mu.Unlock()

	var errs []error
	if started {
		// Requests in flight get a moment to finish, then the rest are cut.
		// A timeout here is not a failure: net/http counts a connection that
		// a client dialled but has not used yet as busy for five seconds, so
		// a pooled spare connection alone can outlast the grace period.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		if err := s.http.Shutdown(ctx); err != nil {
			s.log.Warn("requests still open at shutdown; closing them", "err", err)
			_ = s.http.Close()
		}
		cancel()
	} else if err := s.ln.Close(); err != nil {
		errs = append(errs, err)
	}
	s.closeShortCircuit()
	s.wg.Wait()
	if s.ownStore {
		if err := s.store.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// loadOrCreateID reads the server's ID from dir, creating a random one on
// first start. The ID must survive restarts: the metaserver records shard
// locations by it, so a new ID would orphan every shard on the disk.
func loadOrCreateID(dir string) (metaserver.ServerID, error) {
	path := filepath.Join(dir, idFile)
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if id == "" {
			return "", fmt.Errorf("chunkserver: %s is empty", path)
		}
		return metaserver.ServerID(id), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("chunkserver: reading ID: %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("chunkserver: %w", err)
	}
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", fmt.Errorf("chunkserver: generating ID: %w", err)
	}
	id := "cs-" + hex.EncodeToString(rnd[:])
	tmp := path + ".tmp"
	if err := writeSync(tmp, []byte(id+"\n")); err != nil {
		return "", fmt.Errorf("chunkserver: writing ID: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("chunkserver: writing ID: %w", err)
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return metaserver.ServerID(id), nil
}

func writeSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
