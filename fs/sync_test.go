package fs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/metaserver"
)

// syncingFake is an attached fake chunkserver that also takes buffered Puts
// and Syncs, counting each kind, and can be told to fail its Syncs.
type syncingFake struct {
	attachedFake

	mu       sync.Mutex
	durable  int
	buffered int
	syncs    int
	syncErr  error
}

var _ chunkserver.LocalBufferedServer = (*syncingFake)(nil)

func (f *syncingFake) PutShard(ctx context.Context, name string, data []byte) (uint64, error) {
	f.mu.Lock()
	f.durable++
	f.mu.Unlock()
	return f.attachedFake.PutShard(ctx, name, data)
}

func (f *syncingFake) PutShardBuffered(ctx context.Context, name string, data []byte) (uint64, error) {
	f.mu.Lock()
	f.buffered++
	f.mu.Unlock()
	return f.attachedFake.PutShard(ctx, name, data)
}

func (f *syncingFake) SyncShards(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.syncs++
	if f.syncErr != nil {
		return chunkserver.NewStatusError(http.StatusInternalServerError, chunkserver.ErrorSync, f.syncErr.Error())
	}
	return nil
}

func (f *syncingFake) counts() (durable, buffered, syncs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.durable, f.buffered, f.syncs
}

func (f *syncingFake) failSyncs(err error) { f.mu.Lock(); f.syncErr = err; f.mu.Unlock() }

// syncCluster is a fake cluster of n servers reached in process through
// syncingFakes, by address.
func syncCluster(t *testing.T, n int, opt Options) (*cluster, *Client, map[string]*syncingFake) {
	cl := newCluster(t, n)
	shards := chunkserver.NewClient(nil)
	fakes := map[string]*syncingFake{}
	for _, s := range cl.servers {
		f := &syncingFake{attachedFake: attachedFake{s: s}}
		fakes[s.addr()] = f
		shards.Attach(s.addr(), f)
	}
	opt.Logger = discardLogger()
	return cl, New(cl.meta, shards, opt), fakes
}

// synced lists, sorted, the servers whose Sync count grew since before.
func synced(fakes map[string]*syncingFake, before map[string]int) []string {
	var out []string
	for a, f := range fakes {
		if _, _, n := f.counts(); n > before[a] {
			out = append(out, a)
		}
	}
	slices.Sort(out)
	return out
}

func syncCounts(fakes map[string]*syncingFake) map[string]int {
	m := map[string]int{}
	for a, f := range fakes {
		_, _, m[a] = f.counts()
	}
	return m
}

// serversOf lists, sorted, the servers holding shards of the chunk at off.
func serversOf(t *testing.T, cl *cluster, p string, off uint64) []string {
	var out []string
	for _, s := range cl.chunkAt(t, p, off).Shards {
		out = append(out, s.Addr)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func writeFile(t *testing.T, c *Client, p string, data []byte) *File {
	t.Helper()
	ctx := context.Background()
	f, err := c.CreateFile(ctx, p, 0o644, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestSyncCallsExactlyTheFilesServers(t *testing.T) {
	// Eight servers, 4+2: each chunk lands on six of them, a different six
	// for the next chunk.
	cl, c, fakes := syncCluster(t, 8, Options{})
	ctx := context.Background()
	a := writeFile(t, c, "/a", randBytes(1, 300<<10))
	defer a.Close()
	b := writeFile(t, c, "/b", randBytes(2, 300<<10))
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	before := syncCounts(fakes)
	if err := a.Sync(ctx); err != nil {
		t.Fatalf("Sync: %v", err)
	}
	want := serversOf(t, cl, "/a", 0)
	if got := synced(fakes, before); !slices.Equal(got, want) {
		t.Errorf("Sync of /a synced %v, want exactly its chunk's servers %v", got, want)
	}
	if other := serversOf(t, cl, "/b", 0); slices.Equal(other, want) {
		t.Fatalf("test set-up: /a and /b landed on the same servers %v", want)
	}
	for addr, f := range fakes {
		if d, _, _ := f.counts(); d != 0 {
			t.Errorf("server %s got %d durable Puts from a buffered client", addr, d)
		}
	}
	// Nothing written since: the next Sync asks no one.
	before = syncCounts(fakes)
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if got := synced(fakes, before); len(got) != 0 {
		t.Errorf("a second Sync with nothing new synced %v", got)
	}
	// /b was closed without a Sync; a Sync through a new handle covers what
	// the closed one wrote, as fsync(2) on a fresh descriptor does. /a's
	// Sync was sent after /b's shards were stored, so the servers the two
	// share are already flushed past them: only /b's others are left.
	b2, err := c.OpenPath(ctx, "/b")
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	before = syncCounts(fakes)
	if err := b2.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, addr := range serversOf(t, cl, "/b", 0) {
		if !slices.Contains(want, addr) {
			left = append(left, addr)
		}
	}
	if got := synced(fakes, before); !slices.Equal(got, left) {
		t.Errorf("Sync of /b through a new handle synced %v, want the servers /a's Sync did not cover %v", got, left)
	}
}

func TestSyncErrorIsReturnedAndRetried(t *testing.T) {
	cl, c, fakes := syncCluster(t, 6, Options{})
	ctx := context.Background()
	f := writeFile(t, c, "/f", randBytes(3, 1<<20))
	defer f.Close()
	if err := f.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	bad := serversOf(t, cl, "/f", 0)[2]
	fakes[bad].failSyncs(errors.New("fdatasync: input/output error"))
	err := f.Sync(ctx)
	var se *chunkserver.ShardError
	if !errors.Is(err, chunkserver.ErrSync) || !errors.As(err, &se) || se.Addr != bad {
		t.Fatalf("Sync with a failing server = %v, want a ShardError from %s wrapping ErrSync", err, bad)
	}
	// The failed server is asked again by the next Sync, and only it.
	fakes[bad].failSyncs(nil)
	before := syncCounts(fakes)
	if err := f.Sync(ctx); err != nil {
		t.Fatalf("Sync after the server recovered: %v", err)
	}
	if got := synced(fakes, before); !slices.Equal(got, []string{bad}) {
		t.Errorf("retrying Sync synced %v, want only %s", got, bad)
	}
}

func TestDurableWritesNeedNoSync(t *testing.T) {
	_, c, fakes := syncCluster(t, 6, Options{DurableWrites: true})
	ctx := context.Background()
	f := writeFile(t, c, "/d", randBytes(4, 1<<20))
	if err := f.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	total := 0
	for addr, fk := range fakes {
		d, b, s := fk.counts()
		total += d
		if b != 0 || s != 0 {
			t.Errorf("server %s: %d buffered Puts and %d Syncs with DurableWrites, want none", addr, b, s)
		}
	}
	if total != 6 {
		t.Errorf("%d durable Puts for one 4+2 chunk, want 6", total)
	}
}

// Past maxSyncInodes the oldest inodes' needs move to a set every Sync
// covers, so nothing is forgotten, and a failed flush leaves them due.
func TestSyncSetOverflow(t *testing.T) {
	var s syncSet
	for i := range maxSyncInodes + 10 {
		s.add(inoN(i), chunkOn(fmt.Sprintf("s%d:1", i%7)))
	}
	if len(s.byIno) > maxSyncInodes {
		t.Fatalf("%d inodes remembered, bound is %d", len(s.byIno), maxSyncInodes)
	}
	if len(s.overflow) == 0 {
		t.Fatal("no overflow after exceeding the bound")
	}
	// Any inode's Sync now covers the evicted inodes' servers too.
	due := s.due(inoN(maxSyncInodes + 5))
	for a := range s.overflow {
		if _, ok := due[a]; !ok {
			t.Errorf("overflow server %s not in the Sync's list", a)
		}
	}
	// Nothing recorded as synced (a failed flush): still due for anyone.
	again := s.due(inoN(1))
	for a := range s.overflow {
		if _, ok := again[a]; !ok {
			t.Errorf("server %s lost after its Sync failed", a)
		}
	}
	// Once flushed, nobody owes them anything.
	for a, seq := range due {
		s.synced(inoN(maxSyncInodes+5), a, seq)
	}
	if len(s.overflow) != 0 {
		t.Errorf("overflow %v left after every server was synced", s.overflow)
	}
	if d := s.due(inoN(maxSyncInodes + 5)); len(d) != 0 {
		t.Errorf("inode still owes %v after its Sync", d)
	}
}

// A Sync counts only once it has succeeded: a second caller whose writes
// the first caller's flush would cover still waits for a flush of its own
// until the first one is recorded, and a flush sent before a write does
// not cover that write.
func TestSyncSetSequences(t *testing.T) {
	var s syncSet
	ino := inoN(1)
	s.add(ino, chunkOn("a:1", "b:1"))
	first := s.due(ino)
	if len(first) != 2 {
		t.Fatalf("due %v, want both servers", first)
	}
	// Before the first flush is recorded, a concurrent Sync sees the same
	// needs instead of returning at once.
	if again := s.due(ino); len(again) != 2 {
		t.Fatalf("concurrent Sync sees %v, want both servers still due", again)
	}
	// A write acknowledged after the first flush was sent is not covered
	// by it.
	s.add(ino, chunkOn("a:1"))
	s.synced(ino, "a:1", first["a:1"])
	s.synced(ino, "b:1", first["b:1"])
	d := s.due(ino)
	if len(d) != 1 || d["a:1"] == 0 {
		t.Fatalf("after the first flush due %v, want only a:1 for the later write", d)
	}
	s.synced(ino, "a:1", d["a:1"])
	if d := s.due(ino); len(d) != 0 {
		t.Fatalf("due %v after every write was covered", d)
	}
	if _, ok := s.byIno[ino]; ok {
		t.Error("inode still remembered after it owes nothing")
	}
}

func inoN(i int) metaserver.Ino { return metaserver.Ino(i + 100) }

func chunkOn(addrs ...string) metaserver.Chunk {
	var ch metaserver.Chunk
	for i, a := range addrs {
		ch.Shards = append(ch.Shards, metaserver.Shard{Index: i, Addr: a})
	}
	return ch
}
