package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	ms "github.com/dockyard/dockyard/metaserver"

	"github.com/dockyard/dockyard/internal/testwait"
)

func testConfig(t *testing.T, id, dir string) Config {
	return Config{
		ID: id, DataDir: dir, APIAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
		MaintainInterval: 50 * time.Millisecond, NoSync: true,
	}
}

func startNode(t *testing.T, cfg Config) *Node {
	t.Helper()
	n, err := Start(cfg)
	if err != nil {
		t.Fatalf("starting %s: %v", cfg.ID, err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// waitFor polls cond until it holds or the deadline passes.
var waitFor = testwait.Within

func startCluster(t *testing.T, size int, tune ...func(*Config)) []*Node {
	t.Helper()
	config := func(id string) Config {
		cfg := testConfig(t, id, t.TempDir())
		for _, f := range tune {
			f(&cfg)
		}
		return cfg
	}
	first := startNode(t, config("n1"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := first.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	nodes := []*Node{first}
	for i := 2; i <= size; i++ {
		cfg := config(fmt.Sprintf("n%d", i))
		cfg.Join = first.APIAddr()
		nodes = append(nodes, startNode(t, cfg))
	}
	waitFor(t, 10*time.Second, "every node to know the leader", func() bool {
		for _, n := range nodes {
			if n.Leader() == "" {
				return false
			}
		}
		return true
	})
	return nodes
}

func leaderOf(nodes []*Node) *Node {
	for _, n := range nodes {
		if n != nil && n.IsLeader() {
			return n
		}
	}
	return nil
}

func addrs(nodes []*Node) []string {
	var out []string
	for _, n := range nodes {
		out = append(out, n.APIAddr())
	}
	return out
}

// rootNames lists the root directory of a node's own state (no Raft read).
func rootNames(n *Node) map[string]ms.Ino {
	n.fsm.mu.RLock()
	defer n.fsm.mu.RUnlock()
	es, _ := n.fsm.readDir(ms.ReadDirArgs{Dir: ms.RootIno})
	out := map[string]ms.Ino{}
	for _, e := range es {
		out[e.Name] = e.Ino
	}
	return out
}

func inodeCount(n *Node) int {
	n.fsm.mu.RLock()
	defer n.fsm.mu.RUnlock()
	return len(n.fsm.inodes)
}

func TestSingleNodeOverHTTP(t *testing.T) {
	ctx := context.Background()
	n := startNode(t, testConfig(t, "solo", t.TempDir()))
	if _, err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	c, err := ms.NewClient([]string{n.APIAddr()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	d, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "d", Mode: syscall.S_IFDIR | 0o755})
	if err != nil {
		t.Fatal(err)
	}
	if a, err := c.Lookup(ctx, ms.RootIno, "d"); err != nil || a.Ino != d.Ino {
		t.Fatalf("lookup: %+v %v", a, err)
	}
	// Errno and sentinel errors survive the wire.
	_, err = c.Lookup(ctx, ms.RootIno, "missing")
	wantErrno(t, "lookup over HTTP", err, syscall.ENOENT)
	if err := c.KVTxn(ctx, []ms.KVCond{{Bucket: "b", Key: "k", Exists: true}}, []ms.KVOp{{Bucket: "b", Key: "k", Value: []byte("v")}}); !errors.Is(err, ms.ErrConflict) {
		t.Fatalf("kv conflict over HTTP: %v", err)
	}
	if _, err := c.AllocChunk(ctx, 4, 2, 1024, 4096, false); !errors.Is(err, ms.ErrNoSpace) {
		t.Fatalf("alloc over HTTP: %v", err)
	}
	st, err := c.Status(ctx)
	if err != nil || st.Leader != n.APIAddr() || len(st.Members) != 1 || st.Inodes != 2 {
		t.Fatalf("status: %+v %v", st, err)
	}
	// The in-process API answers the same.
	if a, err := n.API().GetAttr(ctx, d.Ino); err != nil || !a.IsDir() {
		t.Fatalf("in-process getattr: %+v %v", a, err)
	}
	for _, path := range []string{"/healthz", "/metrics"} {
		resp, err := http.Get("http://" + n.APIAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %s", path, resp.Status)
		}
	}
	resp, err := http.Post("http://"+n.APIAddr()+"/v1/op/nosuchop", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown op: %s", resp.Status)
	}
}

func TestFollowerRedirectsToLeader(t *testing.T) {
	ctx := context.Background()
	nodes := startCluster(t, 3)
	var follower *Node
	for _, n := range nodes {
		if !n.IsLeader() {
			follower = n
		}
	}
	_, err := follower.API().Lookup(ctx, ms.RootIno, "x")
	var nl *ms.ErrNotLeader
	if !errors.As(err, &nl) || nl.Leader != leaderOf(nodes).APIAddr() {
		t.Fatalf("follower answered %v, want ErrNotLeader naming %s", err, leaderOf(nodes).APIAddr())
	}
	// A client that only knows the follower is led to the leader.
	c, _ := ms.NewClient([]string{follower.APIAddr()})
	defer c.Close()
	if _, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "via-follower", Mode: syscall.S_IFREG}); err != nil {
		t.Fatal(err)
	}
	ms_, err := c.Members(ctx)
	if err != nil || len(ms_) != 3 {
		t.Fatalf("members: %+v %v", ms_, err)
	}
	for _, m := range ms_ {
		if m.APIAddr == "" || !m.Voter {
			t.Fatalf("member %+v", m)
		}
	}
	if err := c.RemoveMember(ctx, follower.ID()); err != nil {
		t.Fatal(err)
	}
	if ms_, err = c.Members(ctx); err != nil || len(ms_) != 2 {
		t.Fatalf("members after removal: %+v %v", ms_, err)
	}
	wantErrno(t, "remove unknown member", c.RemoveMember(ctx, "nope"), syscall.ENOENT)
}

func TestKillLeaderDuringCreates(t *testing.T) {
	nodes := startCluster(t, 3)
	c, err := ms.NewClient(addrs(nodes), ms.WithRetryTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const workers, perWorker = 8, 125
	var (
		acked   sync.Map // name -> ino
		nAcked  atomic.Int64
		wg      sync.WaitGroup
		errsMu  sync.Mutex
		errs    []error
		started = make(chan struct{})
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-started
			for i := range perWorker {
				name := fmt.Sprintf("f-%d-%d", w, i)
				a, err := c.Create(context.Background(), ms.CreateIn{Parent: ms.RootIno, Name: name, Mode: syscall.S_IFREG | 0o644, Exclusive: true})
				if err != nil {
					errsMu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", name, err))
					errsMu.Unlock()
					continue
				}
				acked.Store(name, a.Ino)
				nAcked.Add(1)
			}
		}()
	}
	close(started)
	waitFor(t, 20*time.Second, "200 creates", func() bool { return nAcked.Load() >= 200 })
	old := leaderOf(nodes)
	if old == nil {
		t.Fatal("no leader")
	}
	killedAt := time.Now()
	if err := old.Close(); err != nil {
		t.Logf("closing the leader: %v", err)
	}
	var rest []*Node
	for _, n := range nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	waitFor(t, 5*time.Second, "a new leader", func() bool { return leaderOf(rest) != nil })
	t.Logf("new leader %s after %v", leaderOf(rest).ID(), time.Since(killedAt).Round(time.Millisecond))
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d creates failed, first: %v", len(errs), errs[0])
	}
	if nAcked.Load() != workers*perWorker {
		t.Fatalf("%d creates acknowledged", nAcked.Load())
	}
	leader := leaderOf(rest)
	waitFor(t, 10*time.Second, "followers to apply everything", func() bool {
		for _, n := range rest {
			if n.fsm.AppliedIndex() < leader.fsm.AppliedIndex() {
				return false
			}
		}
		return true
	})
	for _, n := range rest {
		names := rootNames(n)
		acked.Range(func(k, v any) bool {
			if names[k.(string)] != v.(ms.Ino) {
				t.Errorf("%s: %s is %d, acknowledged as %d", n.ID(), k, names[k.(string)], v)
			}
			return true
		})
		// Root plus exactly one inode per create: no create applied twice.
		if got := inodeCount(n); got != workers*perWorker+1 || len(names) != workers*perWorker {
			t.Errorf("%s holds %d inodes and %d names, want %d", n.ID(), got, len(names), workers*perWorker)
		}
	}
}

func TestStopHandsOverLeadership(t *testing.T) {
	nodes := startCluster(t, 3)
	old := leaderOf(nodes)
	if err := old.Stop(); err != nil {
		t.Logf("stopping the leader: %v", err)
	}
	var rest []*Node
	for _, n := range nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	// A transfer completes before Stop returns; no election timeout needed.
	if leaderOf(rest) == nil {
		waitFor(t, time.Second, "the new leader to settle", func() bool { return leaderOf(rest) != nil })
	}
	c, _ := ms.NewClient(addrs(rest))
	defer c.Close()
	if _, err := c.Create(context.Background(), ms.CreateIn{Parent: ms.RootIno, Name: "after", Mode: syscall.S_IFREG}); err != nil {
		t.Fatal(err)
	}
}

func TestPartitionedFollowerCatchesUpFromSnapshot(t *testing.T) {
	ctx := context.Background()
	// Keep few log entries behind a snapshot, so a follower that was away
	// cannot catch up from the log alone.
	nodes := startCluster(t, 3, func(c *Config) { c.TrailingLogs = 10 })
	leader := leaderOf(nodes)
	var away *Node
	for _, n := range nodes {
		if n != leader {
			away = n
			break
		}
	}
	c, _ := ms.NewClient(addrs(nodes))
	defer c.Close()
	for i := range 20 {
		if _, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: fmt.Sprintf("before-%d", i), Mode: syscall.S_IFREG}); err != nil {
			t.Fatal(err)
		}
	}
	// Cut the follower off: stop its Raft and transport; the others carry on.
	awayCfg := away.cfg
	awayCfg.RaftAddr = away.RaftAddr() // the cluster knows it by this address
	if err := away.Close(); err != nil {
		t.Logf("closing follower: %v", err)
	}
	for i := range 300 {
		if _, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: fmt.Sprintf("during-%d", i), Mode: syscall.S_IFREG}); err != nil {
			t.Fatal(err)
		}
	}
	// Compact the log behind the follower so it must take a snapshot.
	leader = leaderOf(nodes)
	if err := leader.Snapshot(); err != nil {
		t.Fatal(err)
	}
	back := startNode(t, awayCfg)
	waitFor(t, 15*time.Second, "the follower to converge", func() bool {
		return back.fsm.AppliedIndex() >= leader.fsm.AppliedIndex() && inodeCount(back) == inodeCount(leader)
	})
	if back.Restores() < 1 {
		t.Fatal("the rejoined follower caught up without installing the leader's snapshot")
	}
	if got := rootNames(back); len(got) != 320 {
		t.Fatalf("rejoined follower lists %d names, want 320", len(got))
	}
	// It learned its new API address is to be advertised.
	waitFor(t, 5*time.Second, "the new API address to be recorded", func() bool {
		return leader.fsm.memberRecords()[back.ID()].APIAddr == back.APIAddr()
	})
}

func TestRestartRestoresFromSnapshot(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	cfg := testConfig(t, "solo", dir)
	n := startNode(t, cfg)
	if _, err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	c := n.API()
	for i := range 50 {
		if _, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: fmt.Sprintf("s-%d", i), Mode: syscall.S_IFREG}); err != nil {
			t.Fatal(err)
		}
	}
	if err := n.Snapshot(); err != nil {
		t.Fatal(err)
	}
	// Entries after the snapshot are replayed from the log.
	for i := range 10 {
		if _, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: fmt.Sprintf("l-%d", i), Mode: syscall.S_IFREG}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.KVTxn(ctx, nil, []ms.KVOp{{Bucket: "b", Key: "k", Value: []byte("v")}}); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n2 := startNode(t, cfg)
	if n2.Restores() < 1 {
		t.Fatal("restart did not restore from the snapshot")
	}
	if _, err := n2.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	c2 := n2.API()
	if _, err := c2.Lookup(ctx, ms.RootIno, "s-49"); err != nil {
		t.Fatalf("snapshotted file: %v", err)
	}
	if _, err := c2.Lookup(ctx, ms.RootIno, "l-9"); err != nil {
		t.Fatalf("file from the log tail: %v", err)
	}
	if v, ok, err := c2.KVGet(ctx, "b", "k"); err != nil || !ok || string(v) != "v" {
		t.Fatalf("kv after restart: %q %v %v", v, ok, err)
	}
	if a, err := c2.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "new", Mode: syscall.S_IFREG}); err != nil || a.Ino != 62 {
		t.Fatalf("create after restart: ino %d (want 62), %v", a.Ino, err)
	}
}

// Raft never hands barrier and no-op entries to the FSM; a read issued when
// such entries end the log must not wait for an apply that never comes.
func TestReadAfterBarrierDoesNotHang(t *testing.T) {
	n := startNode(t, testConfig(t, "solo", t.TempDir()))
	if _, err := n.WaitLeader(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "the leader's member record", func() bool {
		_, ok := n.fsm.memberRecords()["solo"]
		return ok
	})
	check := func(i int) {
		t.Helper()
		if err := n.raft.Barrier(time.Second).Error(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := n.API().GetAttr(ctx, ms.RootIno)
		cancel()
		if err != nil {
			t.Fatalf("read %d after a barrier: %v", i, err)
		}
	}
	for i := range 3 {
		check(i)
	}
	// When the log cannot show the trailing entries inert (compacted away),
	// the read settles it with a barrier of its own instead of waiting.
	n.inert = func(from, to uint64) bool { return false }
	check(3)
}

// The leader's housekeeping runs for real: silent chunkservers turn suspect
// then down, and an uncommitted chunk is collected after its lease.
func TestLeaderHousekeeping(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig(t, "solo", t.TempDir())
	cfg.SuspectAfter, cfg.DownAfter, cfg.ChunkLease = 300*time.Millisecond, 900*time.Millisecond, 500*time.Millisecond
	n := startNode(t, cfg)
	if _, err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	c := n.API()
	for i := range 3 {
		if _, err := c.Heartbeat(ctx, ms.Heartbeat{ID: ms.ServerID(fmt.Sprintf("cs%d", i)), Addr: "127.0.0.1:1", Capacity: 1 << 30}); err != nil {
			t.Fatal(err)
		}
	}
	ch, err := c.AllocChunk(ctx, 1, 2, 1024, 1024, true)
	if err != nil {
		t.Fatal(err)
	}
	states := func() string {
		css, err := c.Chunkservers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var s []string
		for _, cs := range css {
			s = append(s, cs.State)
		}
		return strings.Join(s, ",")
	}
	waitFor(t, 5*time.Second, "chunkservers to turn suspect", func() bool { return strings.Contains(states(), ms.StateSuspect) })
	waitFor(t, 5*time.Second, "chunkservers to turn down", func() bool { return states() == "down,down,down" })
	waitFor(t, 5*time.Second, "the expired chunk to be collected", func() bool {
		_, err := c.GetChunk(ctx, ch.ID)
		return errors.Is(err, syscall.ENOENT)
	})
	// A heartbeat brings a server back up.
	if _, err := c.Heartbeat(ctx, ms.Heartbeat{ID: "cs0", Addr: "127.0.0.1:1", Capacity: 1 << 30}); err != nil {
		t.Fatal(err)
	}
	if s := states(); !strings.HasPrefix(s, ms.StateUp+",") {
		t.Fatalf("after a heartbeat: %s", s)
	}
}

// Stale reads are answered by any node from its own state, even by a
// follower that has lost its leader; linearizable reads are not.
func TestStaleReadsOnFollowers(t *testing.T) {
	ctx := context.Background()
	nodes := startCluster(t, 3)
	c, _ := ms.NewClient(addrs(nodes))
	defer c.Close()
	a, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: "img", Mode: syscall.S_IFDIR | 0o755})
	if err != nil {
		t.Fatal(err)
	}
	var follower *Node
	for _, n := range nodes {
		if !n.IsLeader() {
			follower = n
		}
	}
	waitFor(t, 5*time.Second, "the follower to apply the create", func() bool {
		_, ok := rootNames(follower)["img"]
		return ok
	})
	if got, err := follower.API().Lookup(ms.AllowStale(ctx), ms.RootIno, "img"); err != nil || got.Ino != a.Ino {
		t.Fatalf("stale lookup on a follower: %+v %v", got, err)
	}
	// Cut the follower off from the other two: only stale reads still work.
	for _, n := range nodes {
		if n != follower {
			_ = n.Close()
		}
	}
	fc, _ := ms.NewClient([]string{follower.APIAddr()}, ms.WithRetryTimeout(time.Second))
	defer fc.Close()
	if got, err := fc.Lookup(ms.AllowStale(ctx), ms.RootIno, "img"); err != nil || got.Ino != a.Ino {
		t.Fatalf("stale lookup over HTTP without a leader: %+v %v", got, err)
	}
	if _, err := fc.Lookup(ctx, ms.RootIno, "img"); err == nil {
		t.Fatal("a linearizable read succeeded without a quorum")
	}
}
