package server_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/klauspost/reedsolomon"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/metaserver"
)

func testKeys(t *testing.T) *store.Keys {
	t.Helper()
	k, err := store.GenerateKey("test")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := store.NewKeys(k)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// An encrypted store hands out no descriptors: a short-circuit client gets
// its reads as bytes over the socket, checked and decrypted by the server,
// and never reads a shard file itself.
func TestShortCircuitEncryptedStoreServesBytes(t *testing.T) {
	s := startServer(t, server.Config{DataDir: shortDir(t), ShortCircuit: true, Encryption: testKeys(t)})
	if s.ShortCircuitSocket() == "" {
		t.Fatal("the encrypted server offers no short-circuit socket")
	}
	ctx := context.Background()
	hc, c, sc := scClients(t, s)
	addr := s.Addr()
	size := 3*store.BlockSize + 77
	data := randBytes(42, size)
	name := chunkserver.FormatSum(0xe1) + ".0"
	putShard(t, hc, addr, name, data)
	for _, r := range [][2]int{{0, size}, {1, 10}, {store.BlockSize - 5, 10}, {store.BlockSize + 3, 2*store.BlockSize + 1}, {size - 1, 1}} {
		p := make([]byte, r[1])
		if _, err := c.ReadAt(ctx, addr, name, p, int64(r[0])); err != nil || !bytes.Equal(p, data[r[0]:r[0]+r[1]]) {
			t.Errorf("ReadAt(off %d, len %d): %v (equal %v)", r[0], r[1], err, bytes.Equal(p, data[r[0]:r[0]+r[1]]))
		}
	}
	if _, err := c.ReadAt(ctx, addr, name, make([]byte, 2), int64(size-1)); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("ReadAt across the end = %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := c.ReadAt(ctx, addr, chunkserver.FormatSum(0xe2)+".0", make([]byte, 1), 0); !errors.Is(err, chunkserver.ErrNotFound) {
		t.Errorf("ReadAt of a missing shard = %v, want ErrNotFound", err)
	}
	st := sc.Stats()
	if st.Opens != 0 || st.Reads != 0 || st.ByteReads < 5 || st.Fallbacks != 0 {
		t.Errorf("short-circuit stats %+v: want no descriptors, every read over the socket, no fallback", st)
	}
	if v := metricValue(t, s, "dockyard_chunkserver_short_circuit_opens_total"); v != "0" {
		t.Errorf("server handed out %s descriptors", v)
	}
	if v := metricValue(t, s, "dockyard_chunkserver_short_circuit_reads_total"); v == "0" {
		t.Error("server counted no reads over the socket")
	}

	// A client that asks for a descriptor anyway (speaking version 1) is
	// refused, and gets none.
	conn, err := net.Dial("unix", s.ShortCircuitSocket())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	uc := conn.(*net.UnixConn)
	var hello chunkserver.ShortCircuitHello
	if _, err := chunkserver.ReadShortCircuitFrame(uc, &hello); err != nil {
		t.Fatal(err)
	}
	if hello.Version != chunkserver.ShortCircuitVersionBytes || !hello.NoDescriptors {
		t.Errorf("hello %+v: want version %d without descriptors", hello, chunkserver.ShortCircuitVersionBytes)
	}
	if err := chunkserver.WriteShortCircuitFrame(uc, chunkserver.ShortCircuitRequest{Op: chunkserver.SCOpen, Name: name}, nil); err != nil {
		t.Fatal(err)
	}
	var reply chunkserver.ShortCircuitReply
	f, err := chunkserver.ReadShortCircuitFrame(uc, &reply)
	if f != nil {
		f.Close()
		t.Error("the server handed out a descriptor of an encrypted shard")
	}
	if err != nil || reply.Status != http.StatusNotImplemented {
		t.Errorf("SCOpen on an encrypted store: %+v, %v; want status 501", reply, err)
	}
}

// A short-circuit client reading from an unencrypted server still gets
// descriptors: the byte path is only for servers that say so.
func TestShortCircuitPlainStoreStillHandsOutDescriptors(t *testing.T) {
	s := scServer(t, nil)
	hc, c, sc := scClients(t, s)
	data := randBytes(7, 1000)
	name := chunkserver.FormatSum(0xe3) + ".0"
	putShard(t, hc, s.Addr(), name, data)
	p := make([]byte, len(data))
	if _, err := c.ReadAt(context.Background(), s.Addr(), name, p, 0); err != nil || !bytes.Equal(p, data) {
		t.Fatalf("ReadAt: %v", err)
	}
	if st := sc.Stats(); st.Opens != 1 {
		t.Errorf("stats %+v: want the shard opened through a descriptor", st)
	}
}

// The scrubber finds tampered ciphertext on an encrypted store as it finds
// a bad sector on a plain one.
func TestScrubEncryptedStore(t *testing.T) {
	meta := &fakeMeta{}
	d, err := store.OpenDisk(t.TempDir(), 0, store.WithEncryption(testKeys(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	for i := range 4 {
		if _, err := d.Put(metaserver.ShardName(metaserver.ChunkID(0x600+i), i), randBytes(uint64(i), 300<<10)); err != nil {
			t.Fatal(err)
		}
	}
	bad := metaserver.ShardName(0x602, 2)
	flipOnDisk(t, d.Path(bad), 100<<10)
	startServer(t, server.Config{Store: d, ID: "cs-scrub-enc", Chunks: meta, ScrubRate: 1 << 30, ScrubPause: 10 * time.Millisecond})
	waitFor(t, "the scrubber to report the tampered shard", func() bool {
		_, _, reports := meta.snapshot()
		return len(reports) > 0
	})
	_, _, reports := meta.snapshot()
	for _, r := range reports {
		if r != bad {
			t.Errorf("scrub reported %s, only %s was tampered with", r, bad)
		}
	}
}

// Repair between encrypted chunkservers: a lost shard is rebuilt from the
// others (one of them tampered with) onto a spare, which stores it
// encrypted under its own key.
func TestRepairEncryptedStores(t *testing.T) {
	meta := &fakeMeta{}
	var servers []*server.Server
	for i := range 7 {
		servers = append(servers, startServer(t, server.Config{DataDir: t.TempDir(), ID: metaserver.ServerID(fmt.Sprintf("enc-%d", i)),
			Encryption: testKeys(t), Cluster: meta, Chunks: meta}))
	}
	const k, m = 4, 2
	enc, err := reedsolomon.New(k, m)
	if err != nil {
		t.Fatal(err)
	}
	size := 1<<20 - 333
	shardSize := (size + k - 1) / k
	padded := make([]byte, k*shardSize)
	copy(padded, randBytes(9, size))
	shards := make([][]byte, k+m)
	for i := range k {
		shards[i] = padded[i*shardSize : (i+1)*shardSize]
	}
	for i := k; i < k+m; i++ {
		shards[i] = make([]byte, shardSize)
	}
	if err := enc.Encode(shards); err != nil {
		t.Fatal(err)
	}
	id := metaserver.ChunkID(0x700)
	ch := metaserver.Chunk{ID: id, K: k, M: m, Size: int64(size), ShardSize: int64(shardSize), Committed: true}
	client := chunkserver.NewClient(nil)
	ctx := context.Background()
	for i, sh := range shards {
		sum, err := client.Put(ctx, servers[i].Addr(), metaserver.ShardName(id, i), sh)
		if err != nil {
			t.Fatal(err)
		}
		ch.Shards = append(ch.Shards, metaserver.Shard{Index: i, Server: servers[i].ID(), Addr: servers[i].Addr(), Sum: sum})
	}
	const lost = 1
	if err := servers[lost].Store().Delete(metaserver.ShardName(id, lost)); err != nil {
		t.Fatal(err)
	}
	flipOnDisk(t, servers[3].Store().(*store.Disk).Path(metaserver.ShardName(id, 3)), 5000)
	spare := servers[6]
	sum, err := spare.Repair(ctx, metaserver.RepairTask{Chunk: ch, Index: lost})
	if err != nil {
		t.Fatalf("Repair: %v", err)
	}
	if sum != chunkserver.Sum(shards[lost]) {
		t.Errorf("repair sum %016x, want %016x", sum, chunkserver.Sum(shards[lost]))
	}
	p := make([]byte, shardSize)
	if _, err := spare.Store().ReadAt(metaserver.ShardName(id, lost), p, 0); err != nil || !bytes.Equal(p, shards[lost]) {
		t.Errorf("rebuilt shard: %v (equal %v)", err, bytes.Equal(p, shards[lost]))
	}
}

func TestServerRefusesEncryptedDirWithoutKey(t *testing.T) {
	dir := t.TempDir()
	s, err := server.New(server.Config{DataDir: dir, Encryption: testKeys(t), Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err := server.New(server.Config{DataDir: dir, Logger: quietLogger()}); err == nil {
		s.Close()
		t.Fatal("a server started on an encrypted directory without its key")
	}
	if s, err := server.New(server.Config{DataDir: dir, Encryption: testKeys(t), Logger: quietLogger()}); err == nil {
		s.Close()
		t.Fatal("a server started on an encrypted directory with another key")
	}
}
