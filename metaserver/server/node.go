package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	ms "github.com/dockyard/dockyard/metaserver"
	"github.com/dockyard/dockyard/metaserver/server/raftlog"
)

// Why raft v1.7.3 with a log store of our own (package raftlog): the log
// append is the metaserver's write path. BoltDB (raft-boltdb/v2) commits an
// append with two fdatasyncs and random page writes, which held a 3-node
// cluster to about 1,800 creates/s; raftlog appends a group-committed batch
// with one sequential write into a pre-zeroed segment and one fdatasync.
// raft-wal (the same idea, with raft v1.8.0) is still called experimental by
// its authors and pulls a go-metrics that raft-boltdb/v2 does not build
// with. BoltDB stays as the StableStore (raft.db): it sees a few writes per
// term change, and existing data directories keep their term and vote there.
// Their log entries move into raftlog once, at the first start (Migrate).

// Node is one metaserver: a Raft replica of the FSM and the HTTP API in front
// of it.
type Node struct {
	cfg   Config
	fsm   *FSM
	raft  *raft.Raft
	raftp atomic.Pointer[raft.Raft] // raft, for its goroutines (set after NewRaft)
	trans *raft.NetworkTransport
	store *raftboltdb.BoltStore // the StableStore (term, vote)
	log   *raftlog.Store
	logs  raft.LogStore // log behind an in-memory cache of recent entries
	snaps *raft.FileSnapshotStore
	ln    net.Listener
	srv   *http.Server
	met   *metrics
	// tracker is the peer tracker, answered by the leader only (soft
	// state, see tracker.go).
	tracker *Tracker

	verify    leaderVerifier
	readyMu   sync.Mutex
	readyTerm atomic.Uint64

	// inert is inertLogs; tests replace it to take the barrier fallback.
	inert func(from, to uint64) bool

	leaderSince atomic.Int64 // unix nanos when this node last became leader
	stop        chan struct{}
	wg          sync.WaitGroup
	closeOnce   sync.Once
	closeErr    error
}

var _ ms.Executor = (*Node)(nil)

// Start opens (or creates) the node's data directory, starts Raft and the
// HTTP API, and bootstraps or joins a cluster as the Config says. It returns
// once the node is serving; it does not wait for a leader (see WaitLeader).
func Start(cfg Config) (_ *Node, err error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("metaserver: data directory: %w", err)
	}
	n := &Node{cfg: cfg, fsm: NewFSM(), tracker: NewTracker(TrackerConfig{}), stop: make(chan struct{})}
	n.verify.n = n
	n.inert = n.inertLogs
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()
	n.store, err = raftboltdb.New(raftboltdb.Options{
		Path:   filepath.Join(cfg.DataDir, "raft.db"),
		NoSync: cfg.NoSync,
		// Another process holding the file blocks the open forever otherwise.
		// The freelist is rebuilt on open instead of written with every
		// commit (as etcd does).
		BoltOptions: &bbolt.Options{Timeout: 2 * time.Second, NoSync: cfg.NoSync,
			NoFreelistSync: true, FreelistType: bbolt.FreelistMapType},
	})
	if err != nil {
		return nil, fmt.Errorf("metaserver: opening raft state in %s (is another metaserver using it?): %w", cfg.DataDir, err)
	}
	// The bolt lock above keeps a second process out of the log too.
	n.log, err = raftlog.Open(filepath.Join(cfg.DataDir, "raftlog"), raftlog.Options{NoSync: cfg.NoSync, SegmentSize: cfg.LogSegmentSize,
		SyncDelay: max(cfg.LeaderSyncDelay, 0)})
	if err != nil {
		return nil, fmt.Errorf("metaserver: opening raft log: %w", err)
	}
	if _, err := raftlog.Migrate(n.log, n.store); err != nil {
		return nil, fmt.Errorf("metaserver: %w", err)
	}
	n.snaps, err = raft.NewFileSnapshotStore(cfg.DataDir, defaultSnapshotsRetain, cfg.LogOutput)
	if err != nil {
		return nil, fmt.Errorf("metaserver: opening snapshot store: %w", err)
	}
	if err := dropLogsBehindSnapshot(n.log, n.snaps); err != nil {
		return nil, err
	}
	n.trans, err = newTransport(cfg)
	if err != nil {
		return nil, fmt.Errorf("metaserver: raft transport on %s: %w", cfg.RaftAddr, err)
	}
	n.ln, err = net.Listen("tcp", cfg.APIAddr)
	if err != nil {
		return nil, fmt.Errorf("metaserver: API listener: %w", err)
	}

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	if cfg.HeartbeatTimeout > 0 {
		rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	}
	if cfg.ElectionTimeout > 0 {
		rc.ElectionTimeout = cfg.ElectionTimeout
	}
	if cfg.LeaderLeaseTimeout > 0 {
		rc.LeaderLeaseTimeout = cfg.LeaderLeaseTimeout
	}
	if cfg.CommitTimeout > 0 {
		rc.CommitTimeout = cfg.CommitTimeout
	}
	rc.MaxAppendEntries = cfg.MaxAppendEntries
	// Buffer proposals so the leader appends (and fsyncs) them in batches:
	// this is the group commit that carries concurrent creates.
	rc.BatchApplyCh = true
	rc.SnapshotInterval = cfg.SnapshotInterval
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.Logger = hclog.New(&hclog.LoggerOptions{Name: "raft-" + cfg.ID, Output: cfg.LogOutput, Level: hclog.LevelFromString(cfg.LogLevel)})

	existing, err := raft.HasExistingState(n.log, n.store, n.snaps)
	if err != nil {
		return nil, fmt.Errorf("metaserver: reading raft state: %w", err)
	}
	// Recent entries are served from memory to replication and to the FSM
	// instead of being read back from disk.
	n.met = newMetrics(n) // before raft starts: the log store records into it
	n.logs, err = raft.NewLogCache(4096, leaderLogStore{Store: n.log, raft: &n.raftp, met: n.met})
	if err != nil {
		return nil, fmt.Errorf("metaserver: log cache: %w", err)
	}
	n.fsm.gate = durableGate(n.log, n.stop, n.met)
	n.raft, err = raft.NewRaft(rc, n.fsm, n.logs, n.store, n.snaps, durableTransport{NetworkTransport: n.trans, log: n.log})
	if err != nil {
		return nil, fmt.Errorf("metaserver: starting raft: %w", err)
	}
	n.raftp.Store(n.raft)
	if !existing && cfg.Join == "" {
		boot := raft.Configuration{Servers: []raft.Server{{ID: rc.LocalID, Address: n.trans.LocalAddr()}}}
		if err := n.raft.BootstrapCluster(boot).Error(); err != nil {
			return nil, fmt.Errorf("metaserver: bootstrapping: %w", err)
		}
	}

	n.srv = &http.Server{Handler: cfg.Auth.Middleware(n.handler()), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	n.wg.Add(2)
	go func() {
		defer n.wg.Done()
		_ = n.srv.Serve(n.ln) // returns when Close shuts the server down
	}()
	go func() {
		defer n.wg.Done()
		n.maintain()
	}()

	if !existing && cfg.Join != "" {
		c, err := ms.NewClient([]string{cfg.Join}, ms.WithRetryTimeout(30*time.Second), ms.WithClusterSecret(cfg.Auth))
		if err != nil {
			return nil, err
		}
		defer c.Close()
		if err := c.AddMember(context.Background(), cfg.ID, string(n.trans.LocalAddr()), n.APIAddr()); err != nil {
			return nil, fmt.Errorf("metaserver: joining through %s: %w", cfg.Join, err)
		}
	}
	return n, nil
}

// dropLogsBehindSnapshot empties the log when all of it is older than the
// newest snapshot. raft empties it itself after installing a snapshot sent
// by the leader (the store is monotonic), but a crash between the install
// and that delete would leave old entries with a gap before the leader's
// next ones, which the store refuses; they are useless anyway, as the
// snapshot covers them.
func dropLogsBehindSnapshot(log *raftlog.Store, snaps raft.SnapshotStore) error {
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("metaserver: listing snapshots: %w", err)
	}
	first, _ := log.FirstIndex()
	last, _ := log.LastIndex()
	if len(metas) == 0 || last == 0 || last >= metas[0].Index {
		return nil
	}
	if err := log.DeleteRange(first, last); err != nil {
		return fmt.Errorf("metaserver: dropping log entries older than snapshot %s: %w", metas[0].ID, err)
	}
	return nil
}

// APIAddr is the address the HTTP API listens on.
func (n *Node) APIAddr() string { return n.ln.Addr().String() }

// RaftAddr is the Raft transport's address.
func (n *Node) RaftAddr() string { return string(n.trans.LocalAddr()) }

// ID is the node's Raft server id.
func (n *Node) ID() string { return n.cfg.ID }

// IsLeader reports whether this node is the Raft leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the API address of the current leader ("" when unknown).
func (n *Node) Leader() string {
	_, id := n.raft.LeaderWithID()
	if id == "" {
		return ""
	}
	if raft.ServerID(n.cfg.ID) == id {
		return n.APIAddr()
	}
	return n.fsm.memberRecords()[string(id)].APIAddr
}

// WaitLeader blocks until the cluster has a leader whose API address is
// known, or ctx ends.
func (n *Node) WaitLeader(ctx context.Context) (string, error) {
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if l := n.Leader(); l != "" {
			return l, nil
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("waiting for a leader: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// API returns a client that runs operations on this node in process. It does
// not follow leader changes: for a cluster, use metaserver.NewClient with
// every node's address.
func (n *Node) API() *ms.Client { return ms.NewClientWith(n) }

// AppliedIndex is the last log index applied to this node's state.
func (n *Node) AppliedIndex() uint64 { return n.raft.AppliedIndex() }

// Snapshot forces a snapshot now (tests, admin).
func (n *Node) Snapshot() error {
	if err := n.raft.Snapshot().Error(); err != nil {
		return fmt.Errorf("metaserver: snapshot: %w", err)
	}
	return nil
}

// Restores counts how often the state was replaced from a snapshot since the
// node started (at start-up, or sent by the leader when far behind).
func (n *Node) Restores() int64 { return n.fsm.restores.Load() }

// Stop shuts the node down gracefully: a leader with other voters first hands
// leadership to one of them, so clients see a short redirect instead of an
// election timeout. Then it closes like Close.
func (n *Node) Stop() error {
	if n.raft.State() == raft.Leader {
		cf := n.raft.GetConfiguration()
		if cf.Error() == nil && len(cf.Configuration().Servers) > 1 {
			// Failing to transfer (no caught-up voter) only costs an election.
			_ = n.raft.LeadershipTransfer().Error()
		}
	}
	return n.Close()
}

// Close stops the node at once: no leadership transfer, in-flight requests
// fail and clients retry elsewhere. It is safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		close(n.stop)
		var errs []error
		if n.srv != nil {
			errs = append(errs, n.srv.Close())
		} else if n.ln != nil {
			errs = append(errs, n.ln.Close())
		}
		if n.raft != nil {
			errs = append(errs, n.raft.Shutdown().Error())
		}
		if n.trans != nil {
			errs = append(errs, n.trans.Close())
		}
		n.wg.Wait()
		if n.log != nil {
			errs = append(errs, n.log.Close())
		}
		if n.store != nil {
			errs = append(errs, n.store.Close())
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

func (n *Node) notLeader() error {
	return &ms.ErrNotLeader{Leader: n.Leader()}
}

// Exec implements metaserver.Executor: the one entry point of the HTTP API
// and of in-process callers.
func (n *Node) Exec(ctx context.Context, op, reqID string, args []byte) ([]byte, error) {
	switch {
	case op == ms.OpStatus:
		// Status and Members answer from this node's view, so an operator
		// can look at any node, including a lagging or partitioned one.
		return encodeReply(n.status())
	case op == ms.OpMembers:
		return encodeReply(n.members())
	case op == ms.OpAddMember || op == ms.OpRemoveMember:
		a, err := decodeArgs[ms.MemberArgs](op, args)
		if err != nil {
			return nil, err
		}
		return nil, n.changeMembership(op, a)
	case ms.IsTrackerOp(op):
		if n.raft.State() != raft.Leader {
			return nil, n.notLeader()
		}
		return n.tracker.Exec(op, args)
	case isQuery(op):
		if ms.StaleAllowed(ctx) {
			// Any node answers from what it has applied so far.
			if n.raft.State() == raft.Shutdown {
				return nil, fmt.Errorf("%s: %w: node shutting down", op, ms.ErrUnavailable)
			}
			return n.fsm.queryReply(op, args)
		}
		if err := n.ensureReadable(ctx); err != nil {
			return nil, err
		}
		return n.fsm.queryReply(op, args)
	case ms.IsMutation(op):
		return n.propose(op, reqID, args)
	}
	return nil, errUnknownOp(op)
}

// propose appends a command and waits for it to be applied.
func (n *Node) propose(op, reqID string, args []byte) ([]byte, error) {
	if n.raft.State() != raft.Leader {
		return nil, n.notLeader()
	}
	now := time.Now()
	c := command{Type: op, ReqID: reqID, Time: now.UnixNano(), Seed: rand.Uint64(), Payload: args}
	if op == ms.OpAllocChunk {
		c.Lease = now.Add(n.cfg.ChunkLease).UnixNano()
	}
	r, err := n.apply(&c)
	if err != nil {
		return nil, err
	}
	if r.Err != nil {
		return nil, r.Err.Err()
	}
	return r.Value, nil
}

// await returns the error of a future the FSM answers (an Apply or a
// Barrier), or raft.ErrRaftShutdown once the node stops. hashicorp/raft
// answers such a future only when its FSM goroutine processes the batch
// holding it; a batch still queued for the FSM when raft shuts down is never
// answered, and those futures do not watch for the shutdown themselves. The
// FSM waits for the leader's own log sync (leaderlog.go), so batches do queue
// there, and a stopping node would otherwise hang in Close on a proposal that
// can never finish. The goroutine left waiting on such a future ends with the
// process.
func (n *Node) await(f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return err
	case <-n.stop:
		// The entry may still commit elsewhere: callers report the node
		// unavailable, and clients retry with the same request id.
		select {
		case err := <-done:
			return err
		default:
			return raft.ErrRaftShutdown
		}
	}
}

func (n *Node) apply(c *command) (*result, error) {
	b := encodeCommand(c)
	start := time.Now()
	f := n.raft.Apply(b, n.cfg.ApplyTimeout)
	err := n.await(f)
	n.met.commit.Observe(time.Since(start).Seconds())
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return nil, n.notLeader()
	case err != nil:
		// Leadership lost, shutdown, enqueue timeout: the entry may still
		// commit. The client retries with the same request id, which makes
		// that safe.
		return nil, fmt.Errorf("%s: %w: %v", c.Type, ms.ErrUnavailable, err)
	}
	r, ok := f.Response().(*result)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected apply response %T", c.Type, f.Response())
	}
	return r, nil
}

// ensureReadable makes a read linearizable (the read-index scheme): note the
// commit index, confirm with a quorum that this node still leads, then wait
// until the state has applied that index. A new leader first commits an entry
// of its own term (Barrier), since only then is its commit index current.
func (n *Node) ensureReadable(ctx context.Context) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	term := n.raft.CurrentTerm()
	if n.readyTerm.Load() != term {
		n.readyMu.Lock()
		if n.readyTerm.Load() != term {
			if err := n.await(n.raft.Barrier(n.cfg.ApplyTimeout)); err != nil {
				n.readyMu.Unlock()
				if errors.Is(err, raft.ErrNotLeader) {
					return n.notLeader()
				}
				return fmt.Errorf("%w: %v", ms.ErrUnavailable, err)
			}
			n.readyTerm.Store(term)
		}
		n.readyMu.Unlock()
	}
	idx := n.raft.CommitIndex()
	if err := n.verify.verify(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return n.notLeader()
		}
		return fmt.Errorf("%w: %v", ms.ErrUnavailable, err)
	}
	if n.fsm.applied.Load() >= idx {
		return nil // the usual case: no timer, no context for the wait
	}
	wctx, cancel := context.WithTimeout(ctx, readWaitBeforeBarrier)
	err := n.fsm.waitApplied(wctx, idx, n.inert)
	cancel()
	if err == nil || ctx.Err() != nil {
		return err
	}
	// The entries up to idx could not be shown applied (they left the log
	// for a snapshot, say). A barrier returns once the FSM has processed
	// everything before it, which settles it either way.
	if err := n.await(n.raft.Barrier(n.cfg.ApplyTimeout)); err != nil {
		if errors.Is(err, raft.ErrNotLeader) {
			return n.notLeader()
		}
		return fmt.Errorf("%w: %v", ms.ErrUnavailable, err)
	}
	return nil
}

// readWaitBeforeBarrier is how long a read waits for the state to catch up
// before it settles the question with a barrier (a log entry).
const readWaitBeforeBarrier = time.Second

// inertLogs reports whether the log entries in (from, to] carry nothing for
// the FSM (no-ops and barriers). An entry it cannot read counts as a command.
func (n *Node) inertLogs(from, to uint64) bool {
	if to-from > 64 {
		return false // a backlog of real work: just wait for it
	}
	var l raft.Log
	for i := from + 1; i <= to; i++ {
		if err := n.logs.GetLog(i, &l); err != nil {
			return false
		}
		if l.Type == raft.LogCommand || l.Type == raft.LogConfiguration {
			return false
		}
	}
	return true
}

// leaderVerifier shares one VerifyLeader round among the reads that arrived
// before it started: at most one round is in flight, and reads arriving
// meanwhile wait for the next, so a burst of reads costs two quorum round
// trips, not one each.
type leaderVerifier struct {
	n       *Node
	mu      sync.Mutex
	next    *verifyRound
	running bool
}

type verifyRound struct {
	done chan struct{}
	err  error
}

func (v *leaderVerifier) verify() error {
	v.mu.Lock()
	if v.next == nil {
		v.next = &verifyRound{done: make(chan struct{})}
	}
	r := v.next
	if !v.running {
		v.running = true
		go v.run()
	}
	v.mu.Unlock()
	<-r.done
	return r.err
}

func (v *leaderVerifier) run() {
	for {
		v.mu.Lock()
		r := v.next
		v.next = nil
		if r == nil {
			v.running = false
			v.mu.Unlock()
			return
		}
		v.mu.Unlock()
		r.err = v.n.raft.VerifyLeader().Error()
		close(r.done)
	}
}

func (n *Node) changeMembership(op string, a ms.MemberArgs) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	if a.ID == "" {
		return ms.Errf(op, syscall.EINVAL, "member id is empty")
	}
	now := time.Now().UnixNano()
	if op == ms.OpAddMember {
		if a.RaftAddr == "" || a.APIAddr == "" {
			return ms.Errf(op, syscall.EINVAL, "member %s needs a Raft and an API address", a.ID)
		}
		if err := n.raft.AddVoter(raft.ServerID(a.ID), raft.ServerAddress(a.RaftAddr), 0, n.cfg.ApplyTimeout).Error(); err != nil {
			return n.membershipErr(op, err)
		}
		p, _ := json.Marshal(a)
		_, err := n.apply(&command{Type: cmdSetMember, Time: now, Payload: p})
		return err
	}
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return n.membershipErr(op, err)
	}
	known := false
	for _, s := range cf.Configuration().Servers {
		known = known || string(s.ID) == a.ID
	}
	if !known {
		return ms.Errf(op, syscall.ENOENT, "no member %q", a.ID)
	}
	if err := n.raft.RemoveServer(raft.ServerID(a.ID), 0, n.cfg.ApplyTimeout).Error(); err != nil {
		return n.membershipErr(op, err)
	}
	p, _ := json.Marshal(ms.MemberArgs{ID: a.ID})
	_, err := n.apply(&command{Type: cmdDelMember, Time: now, Payload: p})
	return err
}

func (n *Node) membershipErr(op string, err error) error {
	if errors.Is(err, raft.ErrNotLeader) {
		return n.notLeader()
	}
	return fmt.Errorf("%s: %w: %v", op, ms.ErrUnavailable, err)
}

func (n *Node) members() ([]ms.Member, error) {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("members: %w", err)
	}
	recs := n.fsm.memberRecords()
	_, leader := n.raft.LeaderWithID()
	var out []ms.Member
	for _, s := range f.Configuration().Servers {
		m := ms.Member{ID: string(s.ID), RaftAddr: string(s.Address), APIAddr: recs[string(s.ID)].APIAddr,
			Leader: s.ID == leader, Voter: s.Suffrage == raft.Voter}
		if string(s.ID) == n.cfg.ID {
			m.APIAddr = n.APIAddr()
		}
		out = append(out, m)
	}
	return out, nil
}

func (n *Node) status() (ms.Status, error) {
	st := n.fsm.status()
	st.Leader = n.Leader()
	st.AppliedIndex = n.raft.AppliedIndex()
	m, err := n.members()
	if err != nil {
		return ms.Status{}, err
	}
	st.Members = m
	return st, nil
}

// maintain runs the leader's periodic duties: record its own API address,
// demote chunkservers that stopped heartbeating, expire chunk leases and hand
// out repairs. A follower makes sure the leader knows its API address.
func (n *Node) maintain() {
	t := time.NewTicker(n.cfg.MaintainInterval)
	defer t.Stop()
	wasLeader := false
	for {
		select {
		case <-n.stop:
			return
		case <-t.C:
		}
		leader := n.raft.State() == raft.Leader
		if leader && !wasLeader {
			n.leaderSince.Store(time.Now().UnixNano())
		}
		if wasLeader && !leader {
			n.tracker.Reset()
		}
		wasLeader = leader
		if leader {
			n.leaderTick()
		} else {
			n.followerTick()
		}
	}
}

func (n *Node) leaderTick() {
	now := time.Now().UnixNano()
	if rec, ok := n.fsm.memberRecords()[n.cfg.ID]; !ok || rec.APIAddr != n.APIAddr() || rec.RaftAddr != n.RaftAddr() {
		p, _ := json.Marshal(ms.MemberArgs{ID: n.cfg.ID, RaftAddr: n.RaftAddr(), APIAddr: n.APIAddr()})
		_, _ = n.apply(&command{Type: cmdSetMember, Time: now, Payload: p}) // retried next tick on failure
	}
	// Count silence from a while after this node took over at the earliest:
	// a new leader (or a whole cluster restarting) must not condemn
	// chunkservers for heartbeats nobody could receive, and their clients
	// need a moment (an attempt timeout or two) to find the new leader.
	floor := n.leaderSince.Load() + int64(n.cfg.SuspectAfter)
	n.fsm.mu.RLock()
	changes := n.fsm.livenessChanges(now, int64(n.cfg.SuspectAfter), int64(n.cfg.DownAfter), floor)
	gc := n.fsm.gcWork(now, int64(n.cfg.RepairTimeout))
	n.fsm.mu.RUnlock()
	if len(changes) > 0 {
		p, _ := json.Marshal(livenessArgs{Changes: changes})
		_, _ = n.apply(&command{Type: cmdLiveness, Time: now, Seed: rand.Uint64(), Payload: p})
	}
	if gc {
		p, _ := json.Marshal(gcArgs{RepairTimeout: int64(n.cfg.RepairTimeout)})
		_, _ = n.apply(&command{Type: cmdGC, Time: now, Seed: rand.Uint64(), Payload: p})
	}
}

func (n *Node) followerTick() {
	rec, ok := n.fsm.memberRecords()[n.cfg.ID]
	if ok && rec.APIAddr == n.APIAddr() {
		return
	}
	leader := n.Leader()
	if leader == "" {
		return
	}
	// A restarted node may listen on a new API address; tell the leader so
	// redirects point at the right place.
	c, err := ms.NewClient([]string{leader}, ms.WithRetryTimeout(n.cfg.MaintainInterval), ms.WithClusterSecret(n.cfg.Auth))
	if err != nil {
		return
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.MaintainInterval)
	defer cancel()
	_ = c.AddMember(ctx, n.cfg.ID, n.RaftAddr(), n.APIAddr()) // retried next tick on failure
}
