package server

import (
	"github.com/prometheus/client_golang/prometheus"
)

// clusterCollector exports the cluster's redundancy and chunkserver view:
// what an operator alerts on (lost or degraded chunks, a repair backlog that
// does not drain, a chunkserver down or filling up). It takes one status
// snapshot per scrape, so the figures agree with each other and with
// `dockyard admin status`.
type clusterCollector struct {
	fsm *FSM

	chunks, degraded, lost, repairs, moves *prometheus.Desc
	servers, shards, used, capacity        *prometheus.Desc
}

func newClusterCollector(f *FSM) *clusterCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("dockyard_meta_"+name, help, labels, nil)
	}
	return &clusterCollector{
		fsm:      f,
		chunks:   d("chunks", "Chunks in the chunk table."),
		degraded: d("chunks_degraded", "Chunks with fewer healthy shards than k+m (still readable)."),
		lost:     d("chunks_lost", "Chunks with fewer than k healthy shards (unreadable until servers return)."),
		repairs:  d("repairs_queued", "Shard rebuilds queued or running."),
		moves:    d("moves_queued", "Rebalancing shard moves queued or running."),
		servers:  d("chunkservers", "Chunkservers by state.", "state"),
		shards:   d("chunkserver_shards", "Shards placed on each chunkserver.", "id"),
		used:     d("chunkserver_used_bytes", "Bytes each chunkserver reports used.", "id"),
		capacity: d("chunkserver_capacity_bytes", "Bytes each chunkserver may hold.", "id"),
	}
}

func (c *clusterCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.chunks, c.degraded, c.lost, c.repairs, c.moves, c.servers, c.shards, c.used, c.capacity} {
		ch <- d
	}
}

func (c *clusterCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.fsm.status()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	g(c.chunks, float64(st.Chunks))
	g(c.degraded, float64(st.Degraded))
	g(c.lost, float64(st.Lost))
	g(c.repairs, float64(st.RepairsQueued))
	g(c.moves, float64(st.MovesQueued))
	states := map[string]int{}
	for _, s := range st.Chunkservers {
		states[s.State]++
		g(c.shards, float64(s.Shards), string(s.ID))
		g(c.used, float64(s.Used), string(s.ID))
		g(c.capacity, float64(s.Capacity), string(s.ID))
	}
	for state, n := range states {
		g(c.servers, float64(n), state)
	}
}
