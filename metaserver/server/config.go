package server

import (
	"fmt"
	"github.com/hashicorp/go-hclog"
	"io"
	"time"

	"github.com/dockyard/dockyard/internal/clusterauth"
	ms "github.com/dockyard/dockyard/metaserver"
)

// Defaults, in one place.
const (
	defaultChunkLease       = 10 * time.Minute
	defaultSuspectAfter     = 3 * time.Second // three missed 1 s heartbeats
	defaultDownAfter        = 30 * time.Second
	defaultRepairTimeout    = 2 * time.Minute
	defaultMaintainInterval = time.Second
	defaultApplyTimeout     = 10 * time.Second
	defaultSnapshotInterval = 2 * time.Minute
	defaultSnapshotThresh   = 16384
	defaultTrailingLogs     = 10240
	defaultSnapshotsRetain  = 2
	defaultLeaderSyncDelay  = time.Millisecond
)

// Config of a metaserver node. Zero values take the defaults above; the Raft
// timeouts default to hashicorp/raft's (1 s heartbeat/election timeouts),
// which tests shorten.
type Config struct {
	ID       string // Raft server id, stable for the node's life
	DataDir  string // Raft log, stable store and snapshots
	APIAddr  string // HTTP API listen address, e.g. 127.0.0.1:9500 (":0" picks a port)
	RaftAddr string // Raft TCP listen address, e.g. 127.0.0.1:9501
	// Join is the API address of a cluster member. A node with no Raft state
	// and Join empty bootstraps a new single-node cluster.
	Join string

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	ApplyTimeout       time.Duration
	// MaxAppendEntries bounds a replication (and FSM apply) batch.
	MaxAppendEntries int

	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64

	SuspectAfter     time.Duration // no heartbeat for this long: suspect
	DownAfter        time.Duration // no heartbeat for this long: down, shards rebuilt
	ChunkLease       time.Duration // uncommitted chunks are garbage after this
	RepairTimeout    time.Duration // a repair not completed in this time is handed out again
	MaintainInterval time.Duration // how often the leader checks liveness and GC

	// NoSync skips fsync of the Raft log; for benchmarks and tests that
	// accept losing the last writes on power loss. Never for production.
	NoSync bool
	// LogSegmentSize is the size of the Raft log's segment files
	// (default raftlog.DefaultSegmentSize, 16 MiB).
	LogSegmentSize int64
	// LeaderSyncDelay spaces the fdatasyncs of the leader's own log
	// appends when they come densely, so that several share one (raftlog
	// Options.SyncDelay; default 1 ms, negative syncs each at once). The
	// sync runs while replication does; a commit that arrives first starts
	// it at once, so a write never waits longer than one sync for it.
	LeaderSyncDelay time.Duration

	// Auth, when set, makes the API and the Raft transport refuse peers
	// without the cluster secret, and signs the node's own requests to
	// other nodes. Nil leaves both open.
	Auth *clusterauth.Secret

	// LogOutput receives Raft's log; nil discards it.
	LogOutput io.Writer
	// LogLevel is the least severe Raft message written: "debug", "info"
	// (default), "warn" or "error".
	LogLevel string
}

func (c *Config) setDefaults() {
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&c.ApplyTimeout, defaultApplyTimeout)
	set(&c.SnapshotInterval, defaultSnapshotInterval)
	set(&c.SuspectAfter, defaultSuspectAfter)
	set(&c.DownAfter, defaultDownAfter)
	set(&c.ChunkLease, defaultChunkLease)
	set(&c.RepairTimeout, defaultRepairTimeout)
	set(&c.MaintainInterval, defaultMaintainInterval)
	set(&c.LeaderSyncDelay, defaultLeaderSyncDelay)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = defaultSnapshotThresh
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = defaultTrailingLogs
	}
	if c.MaxAppendEntries == 0 {
		c.MaxAppendEntries = 512
	}
	if c.LogOutput == nil {
		c.LogOutput = io.Discard
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
}

func (c *Config) validate() error {
	switch {
	case c.ID == "":
		return fmt.Errorf("metaserver config: %w: empty id", ms.ErrBadRequest)
	case c.DataDir == "":
		return fmt.Errorf("metaserver config: %w: empty data directory", ms.ErrBadRequest)
	case c.APIAddr == "" || c.RaftAddr == "":
		return fmt.Errorf("metaserver config: %w: API and Raft addresses are required", ms.ErrBadRequest)
	case c.LogLevel != "" && hclog.LevelFromString(c.LogLevel) == hclog.NoLevel:
		return fmt.Errorf("metaserver config: %w: log level %q", ms.ErrBadRequest, c.LogLevel)
	}
	return nil
}

func errUnknownOp(op string) error {
	return fmt.Errorf("%w: unknown operation %q", ms.ErrBadRequest, op)
}
