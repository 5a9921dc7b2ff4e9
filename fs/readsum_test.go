package fs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/metaserver"
)

// damageInTransit changes a stored shard together with the checksum the fake
// chunkserver verifies it against: the chunkserver's own check passes, as it
// would when bytes are damaged after it checked them, on the way to the
// client. Only the end-to-end sum recorded at commit can tell.
func (s *fakeShards) damageInTransit(name string, at int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shards[name][at] ^= 0xff
	s.sums[name] = chunkserver.Sum(s.shards[name])
}

// attachedFake serves a fake chunkserver's shards in process, as an attached
// chunkserver does, and counts the reads it answered.
type attachedFake struct {
	s     *fakeShards
	reads int
}

func (a *attachedFake) PutShard(_ context.Context, name string, data []byte) (uint64, error) {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	sum := chunkserver.Sum(data)
	a.s.shards[name] = bytes.Clone(data)
	a.s.sums[name] = sum
	return sum, nil
}

func (a *attachedFake) ReadShard(_ context.Context, name string, p []byte, off int64) error {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	a.reads++
	data, ok := a.s.shards[name]
	if !ok {
		return chunkserver.NewStatusError(http.StatusNotFound, "", "shard "+name+" not found")
	}
	if chunkserver.Sum(data) != a.s.sums[name] {
		return chunkserver.NewStatusError(http.StatusInternalServerError, chunkserver.ErrorCorrupt, "shard "+name+" fails its checksum")
	}
	if off+int64(len(p)) > int64(len(data)) {
		return fmt.Errorf("shard %s: read past its end: %w", name, io.ErrUnexpectedEOF)
	}
	copy(p, data[off:])
	return nil
}

func (a *attachedFake) StatShard(_ context.Context, name string) (chunkserver.ShardInfo, error) {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	data, ok := a.s.shards[name]
	if !ok {
		return chunkserver.ShardInfo{}, chunkserver.NewStatusError(http.StatusNotFound, "", "shard "+name+" not found")
	}
	return chunkserver.ShardInfo{Size: int64(len(data)), Sum: a.s.sums[name]}, nil
}

func (a *attachedFake) DeleteShard(_ context.Context, name string) error {
	a.s.mu.Lock()
	defer a.s.mu.Unlock()
	delete(a.s.shards, name)
	delete(a.s.sums, name)
	return nil
}

func hasReport(reports []string, want string) bool {
	for _, r := range reports {
		if r == want {
			return true
		}
	}
	return false
}

// Over HTTP a whole shard is still checked against the sum recorded at
// commit: damage the chunkserver never saw is caught, rebuilt around and
// reported.
func TestWholeShardSumCatchesDamageOverHTTP(t *testing.T) {
	opt := Options{ChunkSize: testChunk}
	cl := newCluster(t, 6)
	want := writeRandom(t, cl.client(opt), "/f", testChunk)
	ch := cl.chunkAt(t, "/f", 0)
	s := ch.Shards[0]
	name := metaserver.ShardName(ch.ID, s.Index)
	cl.server(s.Addr).damageInTransit(name, 7)
	if got := readAll(t, cl.client(opt), "/f"); !bytes.Equal(got, want) {
		t.Fatalf("read back differs at %d", firstDiff(got, want))
	}
	waitFor(t, "bad shard report", func() bool { return hasReport(cl.meta.badReports(), name+" corrupt") })
}

// Through an attached chunkserver the client relies on the store's own block
// checks and does not hash the shard again: reads go in process, a shard the
// store rejects is still rebuilt and reported, and bytes the store vouched
// for are taken as they are.
func TestAttachedShardsSkipWholeShardSum(t *testing.T) {
	opt := Options{ChunkSize: testChunk}
	cl := newCluster(t, 6)
	want := writeRandom(t, cl.client(opt), "/f", testChunk)
	ch := cl.chunkAt(t, "/f", 0)

	shards := chunkserver.NewClient(nil)
	locals := map[string]*attachedFake{}
	for _, s := range cl.servers {
		a := &attachedFake{s: s}
		locals[s.addr()] = a
		shards.Attach(s.addr(), a)
	}
	attachedClient := func() *Client {
		return New(cl.meta, shards, Options{ChunkSize: testChunk, Logger: discardLogger()})
	}

	// Damage the store itself detects (bit rot) is rebuilt and reported.
	rot := ch.Shards[1]
	rotName := metaserver.ShardName(ch.ID, rot.Index)
	cl.server(rot.Addr).flip(rotName, 3)
	if got := readAll(t, attachedClient(), "/f"); !bytes.Equal(got, want) {
		t.Fatalf("read back differs at %d", firstDiff(got, want))
	}
	waitFor(t, "bad shard report", func() bool { return hasReport(cl.meta.badReports(), rotName+" corrupt") })
	reads := 0
	for _, a := range locals {
		a.s.mu.Lock()
		reads += a.reads
		a.s.mu.Unlock()
	}
	if reads == 0 {
		t.Fatal("no shard was read in process")
	}

	// A shard whose store vouches for its bytes is not hashed again, so
	// a change the store took as good is what the read returns.
	ok := ch.Shards[0]
	okName := metaserver.ShardName(ch.ID, ok.Index)
	cl.server(ok.Addr).damageInTransit(okName, 5)
	got := readAll(t, attachedClient(), "/f")
	off := int64(ok.Index)*ch.ShardSize + 5
	if got[off] == want[off] {
		t.Fatalf("byte %d: in-process read was checked against the recorded sum", off)
	}
	if hasReport(cl.meta.badReports(), okName+" corrupt") {
		t.Fatalf("in-process shard %s reported corrupt though its store verified it", okName)
	}
}
