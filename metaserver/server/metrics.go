package server

import (
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	ms "github.com/dockyard/dockyard/metaserver"
)

// metrics live in a registry of the node's own, so several nodes can run in
// one process (tests, `dockyard serve`) without colliding.
type metrics struct {
	reg     *prometheus.Registry
	ops     *prometheus.CounterVec
	latency *prometheus.HistogramVec
	commit  prometheus.Histogram
	streams prometheus.Gauge

	// Where a write's time goes on this node (leaderlog.go): the Raft log
	// appends by role (a leader's returns before its fdatasync, a
	// follower's after), their sizes, and how long the FSM waited for the
	// leader's own fdatasync after the commit (zero while that sync stays
	// hidden behind replication).
	logAppend  *prometheus.HistogramVec
	logEntries *prometheus.HistogramVec
	applyWait  prometheus.Histogram
}

func newMetrics(n *Node) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.ops = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "dockyard_meta_ops_total", Help: "Metaserver API operations by name and outcome.",
	}, []string{"op", "result"})
	m.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "dockyard_meta_op_seconds", Help: "Metaserver API operation latency.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 2, 18),
	}, []string{"op"})
	m.commit = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "dockyard_meta_commit_seconds", Help: "Time from proposing a Raft entry to its application.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 2, 18),
	})
	m.logAppend = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "dockyard_meta_log_append_seconds", Help: "Raft log appends by role; a follower's include the fdatasync, a leader's (but for membership changes) do not.",
		Buckets: prometheus.ExponentialBuckets(5e-6, 2, 20),
	}, []string{"role"})
	m.logEntries = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "dockyard_meta_log_append_entries", Help: "Entries per Raft log append, by role.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 10),
	}, []string{"role"})
	m.applyWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "dockyard_meta_apply_wait_seconds", Help: "Time committed entries waited for the local log's fdatasync before being applied.",
		Buckets: prometheus.ExponentialBuckets(5e-6, 2, 20),
	})
	m.streams = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "dockyard_meta_streams", Help: "Open stream-protocol connections of API clients.",
	})
	state := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dockyard_meta_raft_state", Help: "Raft state: 0 follower, 1 candidate, 2 leader, 3 shutdown.",
	}, func() float64 { return float64(n.raft.State()) })
	leader := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dockyard_meta_is_leader", Help: "1 when this node is the Raft leader.",
	}, func() float64 {
		if n.raft.State() == raft.Leader {
			return 1
		}
		return 0
	})
	applied := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dockyard_meta_applied_index", Help: "Last Raft index applied to the state.",
	}, func() float64 { return float64(n.fsm.AppliedIndex()) })
	commitIdx := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dockyard_meta_commit_index", Help: "Raft commit index known to this node.",
	}, func() float64 { return float64(n.raft.CommitIndex()) })
	inodes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "dockyard_meta_inodes", Help: "Inodes in the namespace.",
	}, func() float64 {
		n.fsm.mu.RLock()
		defer n.fsm.mu.RUnlock()
		return float64(len(n.fsm.inodes))
	})
	m.reg.MustRegister(m.ops, m.latency, m.commit, m.streams, m.logAppend, m.logEntries, m.applyWait, state, leader, applied, commitIdx, inodes, newClusterCollector(n.fsm),
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// observe records one API operation's latency and outcome and returns the
// error in wire form (nil on success).
func (m *metrics) observe(op string, start time.Time, err error) *ms.WireError {
	m.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		we := ms.ToWire(err)
		m.ops.WithLabelValues(op, we.Kind).Inc()
		return we
	}
	m.ops.WithLabelValues(op, "ok").Inc()
	return nil
}
