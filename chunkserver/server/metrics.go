package server

import (
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// metrics are exposed in the Prometheus text format (version 0.0.4) by a few
// lines of our own: the chunkserver's dependency budget is the standard
// library, xxhash and reedsolomon, and the handful of counters it needs do not
// justify pulling the Prometheus client into every program that links it.
type metrics struct {
	bytesIn  atomic.Int64 // shard bytes accepted by PUT
	bytesOut atomic.Int64 // shard bytes served by GET

	mu       sync.Mutex
	requests map[reqKey]int64
	latency  map[string]*histogram // by method

	corrupt         atomic.Int64 // checksum failures seen by reads and scrub
	scrubBytes      atomic.Int64
	scrubShards     atomic.Int64
	scrubPasses     atomic.Int64
	scrubProgress   atomic.Uint64 // float64 bits: fraction of the current pass done
	repairsOK       atomic.Int64
	repairsFailed   atomic.Int64
	deletes         atomic.Int64 // shards deleted on the metaserver's orders
	strays          atomic.Int64 // stray shards deleted (strays.go)
	heartbeatErrors atomic.Int64
	flushErrors     atomic.Int64 // background flushes of buffered shards that failed

	// The short-circuit socket (unixsock.go): connections it let in and
	// refused, shard files it handed out, shards put through it.
	scAccepted atomic.Int64
	scRefused  atomic.Int64
	scOpens    atomic.Int64
	scPuts     atomic.Int64
	scReads    atomic.Int64
}

type reqKey struct {
	method string
	code   int
}

// latencyBuckets (seconds) span a cached 4 KiB read to a slow fsync'd write.
var latencyBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5}

type histogram struct {
	counts []int64 // per bucket, not cumulative
	sum    float64
	n      int64
}

func newMetrics() *metrics {
	return &metrics{requests: make(map[reqKey]int64), latency: make(map[string]*histogram)}
}

func (m *metrics) observe(method string, code int, d time.Duration) {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodPost:
	default:
		method = "other" // bound the label set against arbitrary methods
	}
	secs := d.Seconds()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.requests[reqKey{method, code}]++
	h := m.latency[method]
	if h == nil {
		h = &histogram{counts: make([]int64, len(latencyBuckets))}
		m.latency[method] = h
	}
	if i, _ := slices.BinarySearch(latencyBuckets, secs); i < len(latencyBuckets) {
		h.counts[i]++
	}
	h.sum += secs
	h.n++
}

func (m *metrics) setScrubProgress(f float64) { m.scrubProgress.Store(math.Float64bits(f)) }

// gauges are sampled at scrape time from the store.
type gauges struct {
	capacity, used int64
	shards         int
	unsynced       int // buffered shards not yet durable
	scConns        int // short-circuit connections open
}

func (m *metrics) write(w io.Writer, g gauges) {
	p := func(name, typ, help string, v any) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, typ, name, v)
	}
	p("dockyard_chunkserver_bytes_in_total", "counter", "Shard bytes received by PUT.", m.bytesIn.Load())
	p("dockyard_chunkserver_bytes_out_total", "counter", "Shard bytes sent by GET.", m.bytesOut.Load())
	p("dockyard_chunkserver_capacity_bytes", "gauge", "Bytes the store may hold: configured capacity or disk space, whichever is smaller.", g.capacity)
	p("dockyard_chunkserver_used_bytes", "gauge", "Bytes the stored shards occupy, checksums included.", g.used)
	p("dockyard_chunkserver_shards", "gauge", "Shards stored.", g.shards)
	p("dockyard_chunkserver_corrupt_total", "counter", "Checksum failures detected by reads and scrub.", m.corrupt.Load())
	p("dockyard_chunkserver_scrub_bytes_total", "counter", "Bytes verified by the scrubber.", m.scrubBytes.Load())
	p("dockyard_chunkserver_scrub_shards_total", "counter", "Shards verified by the scrubber.", m.scrubShards.Load())
	p("dockyard_chunkserver_scrub_passes_total", "counter", "Completed scrub passes over all shards.", m.scrubPasses.Load())
	p("dockyard_chunkserver_scrub_progress_ratio", "gauge", "Fraction of the current scrub pass done.",
		strconv.FormatFloat(math.Float64frombits(m.scrubProgress.Load()), 'g', -1, 64))
	p("dockyard_chunkserver_deletes_total", "counter", "Shards deleted on the metaserver's orders.", m.deletes.Load())
	p("dockyard_chunkserver_stray_deletes_total", "counter", "Shards deleted because no chunk placed them here in two passes in a row.", m.strays.Load())
	p("dockyard_chunkserver_heartbeat_errors_total", "counter", "Heartbeats that failed.", m.heartbeatErrors.Load())
	p("dockyard_chunkserver_unsynced_shards", "gauge", "Buffered shards acknowledged but not yet durable.", g.unsynced)
	p("dockyard_chunkserver_flush_errors_total", "counter", "Background flushes of buffered shards that failed.", m.flushErrors.Load())
	p("dockyard_chunkserver_short_circuit_opens_total", "counter", "Shard files handed to clients on this host over the short-circuit socket.", m.scOpens.Load())
	p("dockyard_chunkserver_short_circuit_puts_total", "counter", "Shards stored from bytes sent over the short-circuit socket.", m.scPuts.Load())
	p("dockyard_chunkserver_short_circuit_reads_total", "counter", "Shard reads answered with bytes over the short-circuit socket (stores that hand out no descriptors).", m.scReads.Load())
	p("dockyard_chunkserver_short_circuit_connections", "gauge", "Short-circuit connections open.", g.scConns)
	fmt.Fprintf(w, "# HELP dockyard_chunkserver_short_circuit_connections_total Connections to the short-circuit socket by result: accepted, or refused for their peer's uid.\n# TYPE dockyard_chunkserver_short_circuit_connections_total counter\n")
	fmt.Fprintf(w, "dockyard_chunkserver_short_circuit_connections_total{result=\"accepted\"} %d\n", m.scAccepted.Load())
	fmt.Fprintf(w, "dockyard_chunkserver_short_circuit_connections_total{result=\"refused\"} %d\n", m.scRefused.Load())
	fmt.Fprintf(w, "# HELP dockyard_chunkserver_repairs_total Shard repairs by result.\n# TYPE dockyard_chunkserver_repairs_total counter\n")
	fmt.Fprintf(w, "dockyard_chunkserver_repairs_total{result=\"ok\"} %d\n", m.repairsOK.Load())
	fmt.Fprintf(w, "dockyard_chunkserver_repairs_total{result=\"failed\"} %d\n", m.repairsFailed.Load())

	m.mu.Lock()
	defer m.mu.Unlock()
	keys := make([]reqKey, 0, len(m.requests))
	for k := range m.requests {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b reqKey) int {
		if a.method != b.method {
			if a.method < b.method {
				return -1
			}
			return 1
		}
		return a.code - b.code
	})
	fmt.Fprintf(w, "# HELP dockyard_chunkserver_requests_total HTTP requests by method and status code.\n# TYPE dockyard_chunkserver_requests_total counter\n")
	for _, k := range keys {
		fmt.Fprintf(w, "dockyard_chunkserver_requests_total{method=%q,code=\"%d\"} %d\n", k.method, k.code, m.requests[k])
	}
	methods := make([]string, 0, len(m.latency))
	for k := range m.latency {
		methods = append(methods, k)
	}
	slices.Sort(methods)
	const hn = "dockyard_chunkserver_request_duration_seconds"
	fmt.Fprintf(w, "# HELP %s HTTP request latency by method.\n# TYPE %s histogram\n", hn, hn)
	for _, method := range methods {
		h := m.latency[method]
		var cum int64
		for i, le := range latencyBuckets {
			cum += h.counts[i]
			fmt.Fprintf(w, "%s_bucket{method=%q,le=\"%s\"} %d\n", hn, method, strconv.FormatFloat(le, 'g', -1, 64), cum)
		}
		fmt.Fprintf(w, "%s_bucket{method=%q,le=\"+Inf\"} %d\n", hn, method, h.n)
		fmt.Fprintf(w, "%s_sum{method=%q} %s\n", hn, method, strconv.FormatFloat(h.sum, 'g', -1, 64))
		fmt.Fprintf(w, "%s_count{method=%q} %d\n", hn, method, h.n)
	}
}
