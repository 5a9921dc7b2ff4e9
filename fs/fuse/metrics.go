package fuse

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/dockyard/dockyard/chunkserver"
	dfs "github.com/dockyard/dockyard/fs"
)

// The mount's metrics are read from the counters the mount, its fs client,
// its metadata cache and its P2P already keep, at scrape time: serving them
// adds nothing to the read path. Every series carries a "mount" label, the
// mount point, so a host with several mounts can be told apart.

type metricKind struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(*snapshot) float64
}

// snapshot is what one scrape reads, each source read once.
type snapshot struct {
	mount Stats
	reads dfs.ReadStats
	meta  dfs.MetaCacheStats
	p2p   dfs.P2PStats
	sc    chunkserver.ShortCircuitStats
}

// collector is a prometheus.Collector over one mounted Server.
type collector struct {
	srv *Server
	m   *mountState
	p2p *dfs.P2P
	// shards is the client's shard client when it reads local
	// chunkservers through their sockets, else nil.
	shards *chunkserver.Client
	kinds  []metricKind
}

// NewCollector returns the collector of the mount's metrics, all named
// dockyard_mount_*. The metadata cache's series are there only when the
// mount has one, the P2P series only when its client takes part in P2P,
// the short-circuit series only when its shard client has short-circuit
// reads on (an image mount's clients share one shard client).
func NewCollector(s *Server) prometheus.Collector {
	c := &collector{srv: s}
	if n, ok := s.root.(*node); ok {
		c.m = n.m
		c.p2p = n.m.client.P2P()
		if sh := n.m.client.Shards(); sh != nil && sh.ShortCircuitEnabled() {
			c.shards = sh
		}
	}
	labels := prometheus.Labels{"mount": s.Dir}
	add := func(name, help string, typ prometheus.ValueType, v func(*snapshot) float64) {
		c.kinds = append(c.kinds, metricKind{
			desc:  prometheus.NewDesc("dockyard_mount_"+name, help, nil, labels),
			typ:   typ,
			value: v,
		})
	}
	counter, gauge := prometheus.CounterValue, prometheus.GaugeValue

	add("read_requests_total", "READ requests that reached the mount (reads the kernel answered from its page cache never do).", counter,
		func(s *snapshot) float64 { return float64(s.mount.ReadRequests) })
	add("read_bytes_total", "Bytes returned by the READ requests that reached the mount.", counter,
		func(s *snapshot) float64 { return float64(s.mount.ReadBytes) })
	add("passthrough_opens_total", "Opens the kernel was told to serve from a local copy through FUSE passthrough.", counter,
		func(s *snapshot) float64 { return float64(s.mount.PassthroughOpens) })
	add("file_copies_total", "Local copies of files read whole that were completed, for passthrough.", counter,
		func(s *snapshot) float64 { return float64(s.mount.FileCopies) })
	add("file_copy_bytes", "Bytes the local passthrough copies hold now.", gauge,
		func(s *snapshot) float64 { return float64(s.mount.FileCacheBytes) })

	add("block_cache_hits_total", "Blocks (128 KiB) reads found in the memory block cache.", counter,
		func(s *snapshot) float64 { return float64(s.reads.CacheHits) })
	add("block_cache_misses_total", "Blocks reads did not find in the memory block cache, fetched or joined while being fetched.", counter,
		func(s *snapshot) float64 { return float64(s.reads.CacheMisses) })
	add("block_cache_bytes", "Bytes the memory block cache holds now.", gauge,
		func(s *snapshot) float64 { return float64(s.reads.CacheBytes) })
	add("chunkserver_read_bytes_total", "Bytes read from chunkservers, those read to rebuild data included.", counter,
		func(s *snapshot) float64 { return float64(s.reads.ShardBytes) })
	add("chunkserver_local_read_bytes_total", "Part of chunkserver_read_bytes_total read from chunkservers on this host (short-circuit or in the process).", counter,
		func(s *snapshot) float64 { return float64(s.reads.LocalShardBytes) })
	add("shard_read_errors_total", "Shard reads from chunkservers that failed or did not verify.", counter,
		func(s *snapshot) float64 { return float64(s.reads.ShardErrors) })
	add("degraded_reads_total", "Reads whose bytes were rebuilt from other shards, parity among them, because a shard failed or was slow.", counter,
		func(s *snapshot) float64 { return float64(s.reads.DegradedReads) })
	add("read_errors_total", "Chunk reads that failed even with fresh shard locations; each is an error to a reader.", counter,
		func(s *snapshot) float64 { return float64(s.reads.ReadErrors) })

	if c.m != nil && c.m.cache != nil {
		add("metadata_cache_hits_total", "Lookups and attribute reads answered by the metadata cache.", counter,
			func(s *snapshot) float64 { return float64(s.meta.Hits) })
		add("metadata_cache_misses_total", "Lookups and attribute reads the metadata cache did not hold while following the change feed, sent to the metaserver.", counter,
			func(s *snapshot) float64 { return float64(s.meta.Misses) })
		add("metadata_cache_drops_total", "Times the whole metadata cache was dropped (its change feed failed, lagged or was reset).", counter,
			func(s *snapshot) float64 { return float64(s.meta.Drops) })
		add("metadata_cache_entries", "Names and attributes the metadata cache holds now.", gauge,
			func(s *snapshot) float64 { return float64(s.meta.Entries) })
		add("metadata_cache_live", "1 while the metadata cache follows the change feed and answers, 0 while it does not.", gauge,
			func(s *snapshot) float64 {
				if s.meta.Live {
					return 1
				}
				return 0
			})
	}

	if c.p2p != nil {
		add("p2p_peer_blocks_total", "Blocks read from peers and verified.", counter,
			func(s *snapshot) float64 { return float64(s.p2p.PeerBlocks) })
		add("p2p_peer_bytes_total", "Bytes of the blocks read from peers.", counter,
			func(s *snapshot) float64 { return float64(s.p2p.PeerBytes) })
		add("p2p_verify_failures_total", "Peer answers dropped because they did not verify.", counter,
			func(s *snapshot) float64 { return float64(s.p2p.VerifyFailures) })
		add("p2p_fallbacks_total", "Peer fetches that fell back to the chunkservers: the peer lacked a block, failed or was too slow.", counter,
			func(s *snapshot) float64 { return float64(s.p2p.PeerMisses) })
		add("p2p_hedge_wins_total", "Reads the chunkservers answered first while a slow peer was asked.", counter,
			func(s *snapshot) float64 { return float64(s.p2p.HedgeWins) })
		add("p2p_served_blocks_total", "Blocks served to peers.", counter,
			func(s *snapshot) float64 { return float64(s.p2p.ServedBlocks) })
		add("p2p_served_bytes_total", "Bytes of the blocks served to peers.", counter,
			func(s *snapshot) float64 { return float64(s.p2p.ServedBytes) })
		add("p2p_served_misses_total", "Peer requests for blocks not all held here.", counter,
			func(s *snapshot) float64 { return float64(s.p2p.ServedMisses) })
	}

	if c.shards != nil {
		add("short_circuit_attached_servers", "Chunkservers on this host read through their short-circuit sockets now.", gauge,
			func(s *snapshot) float64 { return float64(s.sc.Attached) })
		add("short_circuit_descriptors_total", "Shard file descriptors received from local chunkservers.", counter,
			func(s *snapshot) float64 { return float64(s.sc.Opens) })
		add("short_circuit_descriptor_reads_total", "Shard reads served from received descriptors, checked here.", counter,
			func(s *snapshot) float64 { return float64(s.sc.Reads) })
		add("short_circuit_descriptor_read_bytes_total", "Bytes of the shard reads served from received descriptors.", counter,
			func(s *snapshot) float64 { return float64(s.sc.ReadBytes) })
		add("short_circuit_socket_reads_total", "Shard reads a local chunkserver without descriptors (encrypted store) answered with checked plaintext over its socket.", counter,
			func(s *snapshot) float64 { return float64(s.sc.ByteReads) })
		add("short_circuit_socket_read_bytes_total", "Bytes of the shard reads answered over the socket.", counter,
			func(s *snapshot) float64 { return float64(s.sc.ByteReadBytes) })
		add("short_circuit_puts_total", "Shards stored over the socket (short-circuit writes).", counter,
			func(s *snapshot) float64 { return float64(s.sc.Puts) })
		add("short_circuit_fallbacks_total", "Reads and puts to attached chunkservers sent over HTTP because their socket path was down or failed.", counter,
			func(s *snapshot) float64 { return float64(s.sc.Fallbacks) })
		add("short_circuit_errors_total", "Failures of a socket path (not answers about a shard), each sending that server's reads over HTTP for a while.", counter,
			func(s *snapshot) float64 { return float64(s.sc.SocketErrors) })
	}
	return c
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, k := range c.kinds {
		ch <- k.desc
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	var s snapshot
	s.mount = c.srv.Stats()
	if c.m != nil {
		s.reads = c.m.client.Stats()
		if c.m.cache != nil {
			s.meta = c.m.cache.Stats()
		}
	}
	if c.p2p != nil {
		s.p2p = c.p2p.Stats()
	}
	if c.shards != nil {
		s.sc = c.shards.ShortCircuitStats()
	}
	for _, k := range c.kinds {
		ch <- prometheus.MustNewConstMetric(k.desc, k.typ, k.value(&s))
	}
}

// MetricsHandler serves the mount's metrics (NewCollector) in the
// Prometheus text format, from a registry of their own: a process that
// mounts has no other.
func MetricsHandler(s *Server) http.Handler {
	reg := prometheus.NewRegistry()
	// Only a collector describing one metric twice fails, a bug of this
	// file that every test would hit.
	reg.MustRegister(NewCollector(s))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
