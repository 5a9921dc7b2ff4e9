package fuse

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// BenchmarkMetadataInProcess measures create, stat and unlink through a
// real mount over the in-process cluster, whose metaserver has no Raft log to
// sync: the ceiling the FUSE layer itself allows. bench/fuse/run.sh measures
// the whole system.
//
//	go test -run '^$' -bench MetadataInProcess -benchtime 3000x ./fs/fuse
func BenchmarkMetadataInProcess(b *testing.B) {
	c := newCluster(b)
	mnt, _ := c.mount(b, Options{})
	dir := filepath.Join(mnt, "bench")
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	names := make([]string, b.N)
	for i := range names {
		names[i] = filepath.Join(dir, "f"+strconv.Itoa(i))
	}
	b.ResetTimer()
	start := time.Now()
	for _, p := range names {
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
	created := time.Since(start)
	start = time.Now()
	for _, p := range names {
		if _, err := os.Stat(p); err != nil {
			b.Fatal(err)
		}
	}
	statted := time.Since(start)
	start = time.Now()
	for _, p := range names {
		if err := os.Remove(p); err != nil {
			b.Fatal(err)
		}
	}
	removed := time.Since(start)
	b.StopTimer()
	n := float64(b.N)
	b.ReportMetric(n/created.Seconds(), "creates/s")
	b.ReportMetric(n/statted.Seconds(), "stats/s")
	b.ReportMetric(n/removed.Seconds(), "unlinks/s")
}
