package raftlog

import (
	"bytes"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// benchStoreLogs appends batches of n 200-byte entries (about the size of a
// create command) with fdatasync, as the leader does for a group commit.
// It measures the steady state inside a segment: the first append claims
// the spare segment, and the timer starts once the next spare is ready (its
// zero-fill, once per segment, would otherwise land in a short run).
func benchStoreLogs(b *testing.B, n int, nosync bool) {
	s := open(b, b.TempDir(), Options{NoSync: nosync})
	data := bytes.Repeat([]byte("c"), 200)
	if err := s.StoreLog(&raft.Log{Index: 1, Term: 1, Data: data}); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !s.spareReady() {
		if time.Now().After(deadline) {
			b.Fatal("spare segment not ready after 30s")
		}
		time.Sleep(time.Millisecond)
	}
	batch := make([]*raft.Log, n)
	next := uint64(2)
	b.SetBytes(int64(n * len(data)))
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for i := range batch {
			batch[i] = &raft.Log{Index: next, Term: 1, Data: data, AppendedAt: time.Now()}
			next++
		}
		if err := s.StoreLogs(batch); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/entry")
}

func BenchmarkStoreLogs1x200B(b *testing.B)        { benchStoreLogs(b, 1, false) }
func BenchmarkStoreLogs16x200B(b *testing.B)       { benchStoreLogs(b, 16, false) }
func BenchmarkStoreLogs16x200BNoSync(b *testing.B) { benchStoreLogs(b, 16, true) }

// BenchmarkGetLog200B is the read a follower's replication or the FSM does
// when an entry has left raft's in-memory cache: a pread and a decode.
func BenchmarkGetLog200B(b *testing.B) {
	s := open(b, b.TempDir(), Options{NoSync: true})
	data := bytes.Repeat([]byte("c"), 200)
	const n = 4096
	batch := make([]*raft.Log, n)
	for i := range batch {
		batch[i] = &raft.Log{Index: uint64(i + 1), Term: 1, Data: data}
	}
	if err := s.StoreLogs(batch); err != nil {
		b.Fatal(err)
	}
	var l raft.Log
	b.ReportAllocs()
	i := uint64(0)
	for b.Loop() {
		if err := s.GetLog(i%n+1, &l); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
