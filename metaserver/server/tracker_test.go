package server

import (
	"context"
	"errors"
	"slices"
	"syscall"
	"testing"
	"time"

	ms "github.com/dockyard/dockyard/metaserver"
)

func newFakeClock() *fakeClock { return &fakeClock{t: time.Unix(1_700_000_000, 0)} }

func announce(t *testing.T, tr *Tracker, peer string, ttl int, replace bool, chunks ...ms.ChunkID) ms.P2PAnnounceReply {
	t.Helper()
	r, err := tr.Announce(ms.P2PAnnounceArgs{Peer: peer, Chunks: chunks, TTL: ttl, Replace: replace})
	if err != nil {
		t.Fatalf("announce %s: %v", peer, err)
	}
	return r
}

func peersOf(t *testing.T, tr *Tracker, self string, c ms.ChunkID) []string {
	t.Helper()
	r, err := tr.Peers(ms.P2PPeersArgs{Chunks: []ms.ChunkID{c}, Self: self, Max: maxPeersPerChunk})
	if err != nil {
		t.Fatal(err)
	}
	got := r.Peers[c]
	slices.Sort(got)
	return got
}

func TestTrackerAnnounceAndLookup(t *testing.T) {
	clk := newFakeClock()
	tr := NewTracker(TrackerConfig{Now: clk.now})
	announce(t, tr, "10.0.0.1:7000", 60, false, 1, 2)
	announce(t, tr, "10.0.0.2:7000", 60, false, 2, 3)

	if got := peersOf(t, tr, "", 2); !slices.Equal(got, []string{"10.0.0.1:7000", "10.0.0.2:7000"}) {
		t.Fatalf("chunk 2 peers %v", got)
	}
	if got := peersOf(t, tr, "", 1); !slices.Equal(got, []string{"10.0.0.1:7000"}) {
		t.Fatalf("chunk 1 peers %v", got)
	}
	// The asker is never among the answers, even when it is the only
	// holder.
	if got := peersOf(t, tr, "10.0.0.1:7000", 1); len(got) != 0 {
		t.Fatalf("asker got itself back: %v", got)
	}
	if got := peersOf(t, tr, "10.0.0.1:7000", 2); !slices.Equal(got, []string{"10.0.0.2:7000"}) {
		t.Fatalf("chunk 2 peers for 10.0.0.1: %v", got)
	}
	// A chunk nobody holds is absent from the reply.
	r, err := tr.Peers(ms.P2PPeersArgs{Chunks: []ms.ChunkID{99}})
	if err != nil || r.Peers != nil {
		t.Fatalf("unknown chunk: %+v %v", r, err)
	}
	// Replace drops what the peer announced before.
	announce(t, tr, "10.0.0.1:7000", 60, true, 3)
	if got := peersOf(t, tr, "", 1); len(got) != 0 {
		t.Fatalf("chunk 1 still held after a replacing announcement: %v", got)
	}
	if st := tr.Stats(); st.Peers != 2 || st.Pairs != 3 || st.Chunks != 2 {
		t.Fatalf("stats %+v, want 2 peers, 3 pairs over 2 chunks", st)
	}
}

func TestTrackerExpiry(t *testing.T) {
	clk := newFakeClock()
	tr := NewTracker(TrackerConfig{Now: clk.now})
	announce(t, tr, "10.0.0.1:7000", 10, false, 1)
	announce(t, tr, "10.0.0.2:7000", 30, false, 1)
	clk.advance(11 * time.Second)
	if got := peersOf(t, tr, "", 1); !slices.Equal(got, []string{"10.0.0.2:7000"}) {
		t.Fatalf("after the first TTL: %v", got)
	}
	// An added batch renews the peer's whole TTL.
	announce(t, tr, "10.0.0.2:7000", 30, false, 2)
	clk.advance(25 * time.Second)
	if got := peersOf(t, tr, "", 1); !slices.Equal(got, []string{"10.0.0.2:7000"}) {
		t.Fatalf("renewed peer forgotten: %v", got)
	}
	clk.advance(10 * time.Second)
	if got := peersOf(t, tr, "", 1); len(got) != 0 {
		t.Fatalf("expired peer still answered: %v", got)
	}
	// The sweep gave back the memory too.
	if st := tr.Stats(); st.Peers != 0 || st.Pairs != 0 || st.Chunks != 0 {
		t.Fatalf("after expiry: %+v", st)
	}
	// TTLs are clamped.
	if r := announce(t, tr, "10.0.0.3:7000", 0, false, 1); r.TTL != ms.MinTrackerTTL {
		t.Fatalf("ttl 0 became %d", r.TTL)
	}
	if r := announce(t, tr, "10.0.0.3:7000", 1<<20, false, 1); r.TTL != ms.MaxTrackerTTL {
		t.Fatalf("huge ttl became %d", r.TTL)
	}
}

func TestTrackerCaps(t *testing.T) {
	clk := newFakeClock()
	tr := NewTracker(TrackerConfig{Now: clk.now, MaxPeers: 3, MaxPerPeer: 4, MaxPairs: 6})
	if r := announce(t, tr, "10.0.0.1:7000", 60, false, 1, 2, 3, 4, 5, 6); r.Accepted != 4 {
		t.Fatalf("per-peer cap: accepted %d of 6, want 4", r.Accepted)
	}
	// Re-announcing held chunks counts them without growing anything.
	if r := announce(t, tr, "10.0.0.1:7000", 60, false, 1, 2); r.Accepted != 2 {
		t.Fatalf("re-announce accepted %d", r.Accepted)
	}
	if r := announce(t, tr, "10.0.0.2:7000", 60, false, 1, 2, 3); r.Accepted != 2 {
		t.Fatalf("total cap: accepted %d of 3, want 2", r.Accepted)
	}
	if st := tr.Stats(); st.Pairs != 6 {
		t.Fatalf("pairs %d, want the cap 6", st.Pairs)
	}
	announce(t, tr, "10.0.0.3:7000", 60, false)
	_, err := tr.Announce(ms.P2PAnnounceArgs{Peer: "10.0.0.4:7000", Chunks: []ms.ChunkID{1}, TTL: 60})
	var e *ms.Error
	if !errors.As(err, &e) || e.Errno != syscall.ENOSPC {
		t.Fatalf("fourth peer over a cap of 3: %v, want ENOSPC", err)
	}
	// An expired peer makes room.
	clk.advance(2 * time.Minute)
	announce(t, tr, "10.0.0.4:7000", 60, false, 1)
}

func TestTrackerRefusesBadInput(t *testing.T) {
	tr := NewTracker(TrackerConfig{})
	for _, peer := range []string{"", "10.0.0.1", ":7000", "0.0.0.0:7000", "[::]:7000", "10.0.0.1:0", "10.0.0.1:99999", "10.0.0.1:x"} {
		_, err := tr.Announce(ms.P2PAnnounceArgs{Peer: peer, Chunks: []ms.ChunkID{1}, TTL: 60})
		var e *ms.Error
		if !errors.As(err, &e) || e.Errno != syscall.EINVAL {
			t.Errorf("peer %q: %v, want EINVAL", peer, err)
		}
	}
	many := make([]ms.ChunkID, ms.MaxTrackerChunksPerCall+1)
	if _, err := tr.Announce(ms.P2PAnnounceArgs{Peer: "10.0.0.1:7000", Chunks: many, TTL: 60}); err == nil {
		t.Error("oversized announcement accepted")
	}
	if _, err := tr.Peers(ms.P2PPeersArgs{Chunks: many}); err == nil {
		t.Error("oversized lookup accepted")
	}
	if _, err := tr.Exec(ms.OpP2PPeers, []byte("{not json")); !errors.Is(err, ms.ErrBadRequest) {
		t.Errorf("malformed arguments: %v, want ErrBadRequest", err)
	}
}

// The answer is a few peers, spread over all the holders of a hot chunk.
func TestTrackerSpreadsLoad(t *testing.T) {
	tr := NewTracker(TrackerConfig{PeersPerChunk: 2})
	holders := []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000", "10.0.0.4:7000", "10.0.0.5:7000"}
	for _, h := range holders {
		announce(t, tr, h, 60, false, 7)
	}
	seen := map[string]int{}
	for range 200 {
		r, err := tr.Peers(ms.P2PPeersArgs{Chunks: []ms.ChunkID{7}, Self: holders[0]})
		if err != nil {
			t.Fatal(err)
		}
		got := r.Peers[7]
		if len(got) != 2 || got[0] == got[1] {
			t.Fatalf("answer %v, want two distinct peers", got)
		}
		for _, p := range got {
			seen[p]++
		}
	}
	if seen[holders[0]] != 0 || len(seen) != 4 {
		t.Fatalf("peers answered %v: want the four holders other than the asker", seen)
	}
}

// Over HTTP, the tracker ops are the leader's: a client that knows only a
// follower is redirected, and a leader that steps down forgets.
func TestTrackerOnTheLeaderOnly(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	nodes := startCluster(t, 3)
	var follower *Node
	for _, n := range nodes {
		if !n.IsLeader() {
			follower = n
		}
	}
	var nl *ms.ErrNotLeader
	if _, err := follower.API().P2PPeers(ctx, ms.P2PPeersArgs{Chunks: []ms.ChunkID{1}}); !errors.As(err, &nl) {
		t.Fatalf("follower answered a tracker op: %v", err)
	}
	c, err := ms.NewClient([]string{follower.APIAddr()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.P2PAnnounce(ctx, ms.P2PAnnounceArgs{Peer: "127.0.0.1:7001", Chunks: []ms.ChunkID{5}, TTL: 60}); err != nil {
		t.Fatal(err)
	}
	r, err := c.P2PPeers(ctx, ms.P2PPeersArgs{Chunks: []ms.ChunkID{5}, Self: "127.0.0.1:7002"})
	if err != nil || !slices.Equal(r.Peers[5], []string{"127.0.0.1:7001"}) {
		t.Fatalf("lookup through a follower: %+v %v", r, err)
	}
	// Nothing of it reached the Raft log: followers hold nothing.
	if st := follower.tracker.Stats(); st.Pairs != 0 {
		t.Fatalf("follower tracker %+v", st)
	}
	leader := leaderOf(nodes)
	if err := leader.Stop(); err != nil {
		t.Fatal(err)
	}
	rest := slices.DeleteFunc(slices.Clone(nodes), func(n *Node) bool { return n == leader })
	waitFor(t, 10*time.Second, "a new leader", func() bool { return leaderOf(rest) != nil })
	if st := leaderOf(rest).tracker.Stats(); st.Pairs != 0 {
		t.Fatalf("new leader's tracker %+v, want empty until peers re-announce", st)
	}
}
