package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"syscall"
	"testing"

	ms "github.com/dockyard/dockyard/metaserver"
)

// How long one clonetree entry holds the FSM's lock, by the size of the
// tree: directories of 100 entries, each regular file one extent of a 4+2
// chunk (64 chunks shared by all). The time is the apply alone, as every
// replica spends it; Raft's replication of the small entry comes on top.
//
//	go test -run XXX -bench CloneTree -benchtime 20x ./metaserver/server/
func BenchmarkCloneTree(b *testing.B) {
	for _, n := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("%dk-inodes", n/1000), func(b *testing.B) { benchClone(b, n) })
	}
}

func benchClone(b *testing.B, inodes int) {
	f := NewFSM()
	apply := func(op string, args any) json.RawMessage {
		p, err := json.Marshal(args)
		if err != nil {
			b.Fatal(err)
		}
		r := f.apply(&command{Type: op, Time: 1, Seed: 1, Payload: p}, 0)
		if r.Err != nil {
			b.Fatalf("%s: %v", op, r.Err.Err())
		}
		return r.Value
	}
	for i := range 6 {
		apply(ms.OpHeartbeat, ms.Heartbeat{ID: ms.ServerID(fmt.Sprintf("cs%d", i)), Addr: "a", Capacity: 1 << 40})
	}
	var chunks []ms.ChunkID
	for range 64 {
		var ch ms.Chunk
		if err := json.Unmarshal(apply(ms.OpAllocChunk, ms.AllocChunkArgs{K: 4, M: 2, ShardSize: 1 << 20, Size: 4 << 20}), &ch); err != nil {
			b.Fatal(err)
		}
		chunks = append(chunks, ch.ID)
	}
	// The tree: a root directory, then directories of 99 files each.
	entries := []ms.TreeEntry{{ParentIdx: -1, CreateIn: ms.CreateIn{Name: "src", Mode: syscall.S_IFDIR | 0o755}}}
	dir := 0
	for len(entries) < inodes {
		if (len(entries)-1)%100 == 0 {
			entries = append(entries, ms.TreeEntry{ParentIdx: 0, CreateIn: ms.CreateIn{Name: fmt.Sprintf("d%05d", len(entries)), Mode: syscall.S_IFDIR | 0o755}})
			dir = len(entries) - 1
			continue
		}
		ch := chunks[len(entries)%len(chunks)]
		entries = append(entries, ms.TreeEntry{
			ParentIdx: dir,
			CreateIn:  ms.CreateIn{Name: fmt.Sprintf("f%05d", len(entries)), Mode: syscall.S_IFREG | 0o644},
			Size:      4096,
			Extents:   []ms.Extent{{Len: 4096, Chunk: ch}},
		})
	}
	var inos []ms.Ino
	if err := json.Unmarshal(apply(ms.OpCreateTree, ms.CreateTreeArgs{Parent: ms.RootIno, Entries: entries}), &inos); err != nil {
		b.Fatal(err)
	}
	snap := snapshotBytesB(b, f)
	args, _ := json.Marshal(ms.CloneTreeArgs{Src: inos[0], NewParent: ms.RootIno, NewName: "copy"})

	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		r := f.apply(&command{Type: ms.OpCloneTree, Time: 2, Payload: args}, 0)
		if r.Err != nil {
			b.Fatal(r.Err.Err())
		}
		// Back to the tree without its copy, off the clock.
		b.StopTimer()
		f = NewFSM()
		if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(entries)), "ns/inode")
}

func snapshotBytesB(b *testing.B, f *FSM) []byte {
	b.Helper()
	s, err := f.Snapshot()
	if err != nil {
		b.Fatal(err)
	}
	var sink memSink
	if err := s.Persist(&sink); err != nil {
		b.Fatal(err)
	}
	return sink.Bytes()
}
