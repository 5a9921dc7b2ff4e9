package server

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"sync/atomic"
	"syscall"
	"time"

	ms "github.com/dockyard/dockyard/metaserver"
)

// Memory runs the FSM in process without Raft or a network: the same
// semantics as a cluster, for unit tests of the packages built on the
// metaserver (fs, converter, registry). It is not durable.
type Memory struct {
	fsm   *FSM
	index atomic.Uint64
	// Now is the clock stamped into commands; tests may replace it before
	// first use.
	Now        func() time.Time
	ChunkLease time.Duration
	// Tracker answers the peer tracker's ops, as a leader's would.
	Tracker *Tracker
}

// NewMemory returns an empty in-memory metaserver.
func NewMemory() *Memory {
	return &Memory{fsm: NewFSM(), Now: time.Now, ChunkLease: defaultChunkLease, Tracker: NewTracker(TrackerConfig{})}
}

// API returns a client of this in-memory metaserver.
func (m *Memory) API() *ms.Client { return ms.NewClientWith(m) }

// Exec implements metaserver.Executor.
func (m *Memory) Exec(ctx context.Context, op, reqID string, args []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	switch {
	case isQuery(op):
		return encodeReply(m.fsm.query(op, args))
	case op == ms.OpStatus:
		return encodeReply(m.fsm.status(), nil)
	case ms.IsTrackerOp(op):
		return m.Tracker.Exec(op, args)
	case op == ms.OpMembers:
		return encodeReply([]ms.Member{{ID: "memory", Leader: true, Voter: true}}, nil)
	case op == ms.OpAddMember || op == ms.OpRemoveMember:
		return nil, ms.Errf(op, syscall.EOPNOTSUPP, "an in-memory metaserver has no members")
	case !ms.IsMutation(op):
		return nil, ms.ToWire(errUnknownOp(op)).Err()
	}
	now := m.Now()
	c := &command{Type: op, ReqID: reqID, Time: now.UnixNano(), Seed: rand.Uint64(), Payload: args}
	if op == ms.OpAllocChunk {
		c.Lease = now.Add(m.ChunkLease).UnixNano()
	}
	r := m.fsm.apply(c, m.index.Add(1))
	if r.Err != nil {
		return nil, r.Err.Err()
	}
	return r.Value, nil
}

// Tick runs the periodic housekeeping a leader would propose (liveness, lease
// expiry, repair hand-out) at the Memory's current time.
func (m *Memory) Tick(cfg Config) {
	cfg.setDefaults()
	now := m.Now()
	m.fsm.mu.RLock()
	changes := m.fsm.livenessChanges(now.UnixNano(), int64(cfg.SuspectAfter), int64(cfg.DownAfter), 0)
	m.fsm.mu.RUnlock()
	if len(changes) > 0 {
		p, _ := json.Marshal(livenessArgs{Changes: changes})
		m.fsm.apply(&command{Type: cmdLiveness, Time: now.UnixNano(), Seed: rand.Uint64(), Payload: p}, m.index.Add(1))
	}
	p, _ := json.Marshal(gcArgs{RepairTimeout: int64(cfg.RepairTimeout)})
	m.fsm.apply(&command{Type: cmdGC, Time: now.UnixNano(), Seed: rand.Uint64(), Payload: p}, m.index.Add(1))
}

func encodeReply(v any, err error) ([]byte, error) {
	if err != nil {
		return nil, ms.ToWire(err).Err()
	}
	return json.Marshal(v)
}
