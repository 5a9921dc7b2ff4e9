package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The breakdown says where a create's time went on each node, from the
// metaserver's own histograms (sums and counts, read from /metrics before
// and after a run): Raft log appends by role and their sizes, how long
// committed entries waited for the leader's own fdatasync, the commit
// (propose to applied) and the whole create as the server saw it.

// sample is one scrape: series name with labels -> value.
type sample map[string]float64

var breakdownSeries = []string{
	`dockyard_meta_log_append_seconds_sum{role="leader"}`, `dockyard_meta_log_append_seconds_count{role="leader"}`,
	`dockyard_meta_log_append_seconds_sum{role="follower"}`, `dockyard_meta_log_append_seconds_count{role="follower"}`,
	`dockyard_meta_log_append_entries_sum{role="leader"}`, `dockyard_meta_log_append_entries_sum{role="follower"}`,
	`dockyard_meta_apply_wait_seconds_sum`, `dockyard_meta_apply_wait_seconds_count`,
	`dockyard_meta_commit_seconds_sum`, `dockyard_meta_commit_seconds_count`,
	`dockyard_meta_op_seconds_sum{op="create"}`, `dockyard_meta_op_seconds_count{op="create"}`,
}

func scrape(addr string) (sample, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: %s", addr, resp.Status)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the series of the text exposition format that the
// breakdown uses; others are skipped.
func parseMetrics(r io.Reader) (sample, error) {
	want := map[string]bool{}
	for _, s := range breakdownSeries {
		want[s] = true
	}
	out := sample{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || !want[line[:i]] {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("metric %q: %w", line, err)
		}
		out[line[:i]] = v
	}
	return out, sc.Err()
}

func scrapeAll(addrs []string) ([]sample, error) {
	out := make([]sample, len(addrs))
	for i, a := range addrs {
		s, err := scrape(a)
		if err != nil {
			return nil, err
		}
		out[i] = s
	}
	return out, nil
}

type breakdownRow struct {
	clients int
	node    string
	d       sample // after - before
}

func diffSamples(addrs []string, before, after []sample, clients int) []breakdownRow {
	var rows []breakdownRow
	for i := range addrs {
		d := sample{}
		for _, k := range breakdownSeries {
			d[k] = after[i][k] - before[i][k]
		}
		rows = append(rows, breakdownRow{clients: clients, node: addrs[i], d: d})
	}
	return rows
}

func printBreakdown(rows []breakdownRow) {
	fmt.Println()
	fmt.Println("Where the creates' time went, per node (means over the run; a leader's log append returns before its fdatasync,")
	fmt.Println("a follower's after it; \"sync wait\" is how long committed entries waited for the leader's own fdatasync):")
	fmt.Println()
	fmt.Println("| clients | node | leader appends | entries each | µs each | follower appends | entries each | µs each | sync wait | commit | create (server) |")
	fmt.Println("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, r := range rows {
		d := r.d
		ratio := func(num, den string, scale float64) string {
			if d[den] == 0 {
				return "–"
			}
			return fmt.Sprintf("%.1f", d[num]/d[den]*scale)
		}
		fmt.Printf("| %d | %s | %.0f | %s | %s | %.0f | %s | %s | %s µs | %s µs | %s µs |\n", r.clients, r.node,
			d[`dockyard_meta_log_append_seconds_count{role="leader"}`],
			ratio(`dockyard_meta_log_append_entries_sum{role="leader"}`, `dockyard_meta_log_append_seconds_count{role="leader"}`, 1),
			ratio(`dockyard_meta_log_append_seconds_sum{role="leader"}`, `dockyard_meta_log_append_seconds_count{role="leader"}`, 1e6),
			d[`dockyard_meta_log_append_seconds_count{role="follower"}`],
			ratio(`dockyard_meta_log_append_entries_sum{role="follower"}`, `dockyard_meta_log_append_seconds_count{role="follower"}`, 1),
			ratio(`dockyard_meta_log_append_seconds_sum{role="follower"}`, `dockyard_meta_log_append_seconds_count{role="follower"}`, 1e6),
			ratio(`dockyard_meta_apply_wait_seconds_sum`, `dockyard_meta_apply_wait_seconds_count`, 1e6),
			ratio(`dockyard_meta_commit_seconds_sum`, `dockyard_meta_commit_seconds_count`, 1e6),
			ratio(`dockyard_meta_op_seconds_sum{op="create"}`, `dockyard_meta_op_seconds_count{op="create"}`, 1e6))
	}
}
