package server

import (
	"bufio"
	"encoding/gob"
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/google/btree"
	"github.com/hashicorp/raft"

	ms "github.com/dockyard/dockyard/metaserver"
)

var (
	_ raft.FSM         = (*FSM)(nil)
	_ raft.BatchingFSM = (*FSM)(nil)
)

// Apply applies one Raft log entry.
func (f *FSM) Apply(l *raft.Log) any {
	return f.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies a run of committed entries under one lock, which is
// where concurrent proposals pay for the state lock once per batch.
func (f *FSM) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	if f.gate != nil && len(logs) > 0 {
		if err := f.gate(logs[len(logs)-1].Index); err != nil {
			if !errGateClosed(err) {
				// The log could not be made durable: applying would show
				// state a crash can take back, and skipping would drift.
				panic(fmt.Sprintf("metaserver fsm: raft log not durable up to entry %d: %v", logs[len(logs)-1].Index, err))
			}
			// The node is stopping: nothing is applied, the proposers
			// hear that it is unavailable and retry elsewhere.
			we := ms.ToWire(fmt.Errorf("%w: node stopping", ms.ErrUnavailable))
			for i, l := range logs {
				if l.Type == raft.LogCommand {
					out[i] = &result{Err: we}
				}
			}
			return out
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, l := range logs {
		if l.Type == raft.LogCommand {
			var c command
			if err := decodeCommand(l.Data, &c); err != nil {
				// Skipping an entry would make this replica drift from the
				// others; stopping is the only safe answer.
				panic(fmt.Sprintf("metaserver fsm: undecodable log entry %d: %v", l.Index, err))
			}
			out[i] = f.applyCommand(&c)
		}
		f.applied.Store(l.Index)
	}
	f.applyDone()
	return out
}

const snapshotVersion = 1

type snapHeader struct {
	Version   int
	NextIno   ms.Ino
	NextChunk ms.ChunkID
	Clock     int64
	Inodes    int
	Dentries  int
	Chunks    int
	Servers   int
	Repairs   int
	Deletes   int
	KV        int
	Members   int
	Dedup     int
}

type snapDeletes struct {
	Server ms.ServerID
	Names  []string
}

type snapKV struct {
	Bucket string
	Key    string
	Value  []byte
}

type snapDedup struct {
	ID     string
	Result result
}

// fsmSnapshot is a point-in-time copy of the state. Taking it copies the
// records (B-trees are cloned copy-on-write), so Persist can stream it while
// new entries are applied.
type fsmSnapshot struct {
	hdr      snapHeader
	inodes   []inode
	dentries *btree.BTreeG[dentry]
	chunks   []ms.Chunk
	servers  []ms.ChunkserverInfo
	repairs  []repairJob
	deletes  []snapDeletes
	kv       map[string]*btree.BTreeG[kvItem]
	members  []ms.Member
	dedup    []snapDedup
}

// Snapshot captures the state; it does no I/O.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	s := &fsmSnapshot{dentries: f.dentries.Clone(), kv: map[string]*btree.BTreeG[kvItem]{}}
	for _, ino := range slices.Sorted(maps.Keys(f.inodes)) {
		n := *f.inodes[ino]
		n.Xattrs = maps.Clone(n.Xattrs)
		s.inodes = append(s.inodes, n)
	}
	for _, id := range slices.Sorted(maps.Keys(f.chunks)) {
		s.chunks = append(s.chunks, cloneChunk(f.chunks[id]))
	}
	for _, cs := range f.chunkserverRecords() {
		s.servers = append(s.servers, cs)
	}
	for _, j := range f.repairs {
		s.repairs = append(s.repairs, *j)
	}
	slices.SortFunc(s.repairs, func(a, b repairJob) int {
		if a.Chunk != b.Chunk {
			return int(a.Chunk) - int(b.Chunk)
		}
		return a.Index - b.Index
	})
	for _, id := range slices.Sorted(maps.Keys(f.deletes)) {
		s.deletes = append(s.deletes, snapDeletes{Server: id, Names: slices.Clone(f.deletes[id])})
	}
	nkv := 0
	for b, t := range f.kv {
		s.kv[b] = t.Clone()
		nkv += t.Len()
	}
	for _, id := range slices.Sorted(maps.Keys(f.members)) {
		s.members = append(s.members, f.members[id])
	}
	for _, id := range f.dedupOrder[f.dedupHead:] {
		s.dedup = append(s.dedup, snapDedup{ID: id, Result: *f.dedup[id]})
	}
	s.hdr = snapHeader{
		Version: snapshotVersion, NextIno: f.nextIno, NextChunk: f.nextChunk, Clock: f.clock,
		Inodes: len(s.inodes), Dentries: s.dentries.Len(), Chunks: len(s.chunks),
		Servers: len(s.servers), Repairs: len(s.repairs), Deletes: len(s.deletes),
		KV: nkv, Members: len(s.members), Dedup: len(s.dedup),
	}
	return s, nil
}

// chunkserverRecords copies the server records as stored (no derived counts).
func (f *FSM) chunkserverRecords() []ms.ChunkserverInfo {
	out := make([]ms.ChunkserverInfo, 0, len(f.servers))
	for _, id := range slices.Sorted(maps.Keys(f.servers)) {
		v := *f.servers[id]
		v.Labels = cloneLabels(v.Labels)
		out = append(out, v)
	}
	return out
}

// Persist streams the snapshot as a sequence of gob records: a header with
// the counts, then each record kind in turn.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := s.write(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("persisting metaserver snapshot: %w", err)
	}
	return sink.Close()
}

func (s *fsmSnapshot) write(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	enc := gob.NewEncoder(bw)
	var err error
	put := func(v any) {
		if err == nil {
			err = enc.Encode(v)
		}
	}
	put(s.hdr)
	for i := range s.inodes {
		put(&s.inodes[i])
	}
	s.dentries.Ascend(func(d dentry) bool {
		put(&d)
		return err == nil
	})
	for i := range s.chunks {
		put(&s.chunks[i])
	}
	for i := range s.servers {
		put(&s.servers[i])
	}
	for i := range s.repairs {
		put(&s.repairs[i])
	}
	for i := range s.deletes {
		put(&s.deletes[i])
	}
	for _, b := range slices.Sorted(maps.Keys(s.kv)) {
		s.kv[b].Ascend(func(it kvItem) bool {
			put(&snapKV{Bucket: b, Key: it.Key, Value: it.Value})
			return err == nil
		})
	}
	for i := range s.members {
		put(&s.members[i])
	}
	for i := range s.dedup {
		put(&s.dedup[i])
	}
	if err != nil {
		return err
	}
	return bw.Flush()
}

// Release is a no-op: the snapshot holds only memory.
func (s *fsmSnapshot) Release() {}

// Restore replaces the whole state with a snapshot's.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	n := &FSM{}
	n.reset()
	if err := n.read(bufio.NewReaderSize(rc, 1<<20)); err != nil {
		return fmt.Errorf("restoring metaserver snapshot: %w", err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nextIno, f.nextChunk, f.clock = n.nextIno, n.nextChunk, n.clock
	f.inodes, f.dentries, f.chunks, f.servers = n.inodes, n.dentries, n.chunks, n.servers
	f.repairs, f.deletes, f.kv, f.members = n.repairs, n.deletes, n.kv, n.members
	f.dedup, f.dedupOrder, f.dedupHead = n.dedup, n.dedupOrder, n.dedupHead
	f.restores.Add(1)
	return nil
}

func (f *FSM) read(r io.Reader) error {
	dec := gob.NewDecoder(r)
	var h snapHeader
	if err := dec.Decode(&h); err != nil {
		return fmt.Errorf("header: %w", err)
	}
	if h.Version != snapshotVersion {
		return fmt.Errorf("snapshot version %d, this build reads %d", h.Version, snapshotVersion)
	}
	f.nextIno, f.nextChunk, f.clock = h.NextIno, h.NextChunk, h.Clock
	for range h.Inodes {
		n := &inode{}
		if err := dec.Decode(n); err != nil {
			return fmt.Errorf("inode: %w", err)
		}
		f.inodes[n.Ino] = n
	}
	for range h.Dentries {
		var d dentry
		if err := dec.Decode(&d); err != nil {
			return fmt.Errorf("dentry: %w", err)
		}
		f.dentries.ReplaceOrInsert(d)
	}
	for range h.Chunks {
		c := &ms.Chunk{}
		if err := dec.Decode(c); err != nil {
			return fmt.Errorf("chunk: %w", err)
		}
		f.chunks[c.ID] = c
	}
	for range h.Servers {
		cs := &ms.ChunkserverInfo{}
		if err := dec.Decode(cs); err != nil {
			return fmt.Errorf("chunkserver: %w", err)
		}
		f.servers[cs.ID] = cs
	}
	for range h.Repairs {
		j := &repairJob{}
		if err := dec.Decode(j); err != nil {
			return fmt.Errorf("repair: %w", err)
		}
		f.repairs[repairKey{j.Chunk, j.Index}] = j
	}
	for range h.Deletes {
		var d snapDeletes
		if err := dec.Decode(&d); err != nil {
			return fmt.Errorf("deletes: %w", err)
		}
		f.deletes[d.Server] = d.Names
	}
	for range h.KV {
		var kv snapKV
		if err := dec.Decode(&kv); err != nil {
			return fmt.Errorf("kv: %w", err)
		}
		t, ok := f.kv[kv.Bucket]
		if !ok {
			t = btree.NewG(32, kvLess)
			f.kv[kv.Bucket] = t
		}
		if kv.Value == nil {
			kv.Value = []byte{} // gob drops empty slices; a stored key has a value
		}
		t.ReplaceOrInsert(kvItem{Key: kv.Key, Value: kv.Value})
	}
	for range h.Members {
		var m ms.Member
		if err := dec.Decode(&m); err != nil {
			return fmt.Errorf("member: %w", err)
		}
		f.members[m.ID] = m
	}
	for range h.Dedup {
		var d snapDedup
		if err := dec.Decode(&d); err != nil {
			return fmt.Errorf("request ids: %w", err)
		}
		r := d.Result
		f.dedup[d.ID] = &r
		f.dedupOrder = append(f.dedupOrder, d.ID)
	}
	return nil
}
