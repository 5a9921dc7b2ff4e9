package server

import (
	"math/rand/v2"
	"sync"
	"syscall"
	"time"

	ms "github.com/dockyard/dockyard/metaserver"
)

// Tracker is the peer tracker the leader answers p2pannounce and p2ppeers
// from (see metaserver/p2p.go). It is soft state: nothing of it goes through
// Raft or into snapshots, since it changes with every read on every mounting
// host and the hosts re-announce what they hold every period anyway. Memory
// is bounded by caps on peers, on chunks per peer and on (peer, chunk) pairs
// in all; a peer that stops announcing is forgotten when its TTL runs out.
type Tracker struct {
	cfg TrackerConfig

	mu        sync.Mutex
	peers     map[string]*trackedPeer
	chunks    map[ms.ChunkID]map[string]struct{} // chunk -> peers holding it
	pairs     int
	lastSweep time.Time
}

type trackedPeer struct {
	chunks  map[ms.ChunkID]struct{}
	expires time.Time
}

// TrackerConfig bounds a Tracker. Zero values mean the defaults.
type TrackerConfig struct {
	MaxPeers      int // peers tracked at once, default 16384
	MaxPerPeer    int // chunks one peer may announce, default 65536 (256 GiB of 4 MiB chunks)
	MaxPairs      int // (peer, chunk) pairs in all, default 2^21 (about 200 MiB at worst)
	PeersPerChunk int // peers answered per chunk unless the asker wants fewer, default 3
	// Now is the clock; tests replace it.
	Now func() time.Time
}

func (c *TrackerConfig) setDefaults() {
	if c.MaxPeers <= 0 {
		c.MaxPeers = 16384
	}
	if c.MaxPerPeer <= 0 {
		c.MaxPerPeer = 65536
	}
	if c.MaxPairs <= 0 {
		c.MaxPairs = 1 << 21
	}
	if c.PeersPerChunk <= 0 {
		c.PeersPerChunk = 3
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// maxPeersPerChunk bounds what an asker may ask for per chunk.
const maxPeersPerChunk = 16

// sweepEvery is how often expired peers are dropped, at most: a sweep walks
// every peer.
const sweepEvery = time.Second

// NewTracker returns an empty tracker.
func NewTracker(cfg TrackerConfig) *Tracker {
	cfg.setDefaults()
	return &Tracker{cfg: cfg, peers: map[string]*trackedPeer{}, chunks: map[ms.ChunkID]map[string]struct{}{}}
}

// Exec runs a tracker op with JSON arguments and reply.
func (t *Tracker) Exec(op string, args []byte) ([]byte, error) {
	switch op {
	case ms.OpP2PAnnounce:
		a, err := decodeArgs[ms.P2PAnnounceArgs](op, args)
		if err != nil {
			return nil, err
		}
		return encodeReply(t.Announce(a))
	case ms.OpP2PPeers:
		a, err := decodeArgs[ms.P2PPeersArgs](op, args)
		if err != nil {
			return nil, err
		}
		return encodeReply(t.Peers(a))
	}
	return nil, ms.ToWire(errUnknownOp(op)).Err()
}

// Announce records that a.Peer holds blocks of a.Chunks.
func (t *Tracker) Announce(a ms.P2PAnnounceArgs) (ms.P2PAnnounceReply, error) {
	op := ms.OpP2PAnnounce
	if err := ms.CheckPeerAddr(a.Peer); err != nil {
		return ms.P2PAnnounceReply{}, ms.Errf(op, syscall.EINVAL, "%v", err)
	}
	if len(a.Chunks) > ms.MaxTrackerChunksPerCall {
		return ms.P2PAnnounceReply{}, ms.Errf(op, syscall.EINVAL, "%d chunks in one announcement, at most %d", len(a.Chunks), ms.MaxTrackerChunksPerCall)
	}
	ttl := min(max(a.TTL, ms.MinTrackerTTL), ms.MaxTrackerTTL)
	now := t.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweepLocked(now)
	p := t.peers[a.Peer]
	if p != nil && !now.Before(p.expires) {
		t.dropLocked(a.Peer, p)
		p = nil
	}
	if p == nil {
		if len(t.peers) >= t.cfg.MaxPeers {
			return ms.P2PAnnounceReply{}, ms.Errf(op, syscall.ENOSPC, "tracker holds %d peers, its limit", len(t.peers))
		}
		p = &trackedPeer{chunks: map[ms.ChunkID]struct{}{}}
		t.peers[a.Peer] = p
	}
	if a.Replace {
		t.forgetChunksLocked(a.Peer, p)
	}
	accepted := 0
	for _, c := range a.Chunks {
		if _, ok := p.chunks[c]; ok {
			accepted++
			continue
		}
		if len(p.chunks) >= t.cfg.MaxPerPeer || t.pairs >= t.cfg.MaxPairs {
			continue
		}
		p.chunks[c] = struct{}{}
		holders := t.chunks[c]
		if holders == nil {
			holders = map[string]struct{}{}
			t.chunks[c] = holders
		}
		holders[a.Peer] = struct{}{}
		t.pairs++
		accepted++
	}
	p.expires = now.Add(time.Duration(ttl) * time.Second)
	return ms.P2PAnnounceReply{Accepted: accepted, TTL: ttl}, nil
}

// Peers answers, for each chunk, up to a.Max live peers holding it, picked
// at random, never a.Self.
func (t *Tracker) Peers(a ms.P2PPeersArgs) (ms.P2PPeersReply, error) {
	if len(a.Chunks) > ms.MaxTrackerChunksPerCall {
		return ms.P2PPeersReply{}, ms.Errf(ms.OpP2PPeers, syscall.EINVAL, "%d chunks in one lookup, at most %d", len(a.Chunks), ms.MaxTrackerChunksPerCall)
	}
	want := t.cfg.PeersPerChunk
	if a.Max > 0 {
		want = min(a.Max, maxPeersPerChunk)
	}
	now := t.cfg.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweepLocked(now)
	var out map[ms.ChunkID][]string
	var cand []string
	for _, c := range a.Chunks {
		cand = cand[:0]
		for addr := range t.chunks[c] {
			if addr != a.Self && now.Before(t.peers[addr].expires) {
				cand = append(cand, addr)
			}
		}
		if len(cand) == 0 {
			continue
		}
		// A partial Fisher-Yates shuffle: the first want are a uniform
		// pick, so the load of a hot chunk spreads over all its holders.
		n := min(want, len(cand))
		for i := range n {
			j := i + rand.IntN(len(cand)-i)
			cand[i], cand[j] = cand[j], cand[i]
		}
		if out == nil {
			out = map[ms.ChunkID][]string{}
		}
		out[c] = append([]string(nil), cand[:n]...)
	}
	return ms.P2PPeersReply{Peers: out}, nil
}

// Reset forgets everything, as when this node stops leading: should it lead
// again, it starts from the announcements it gets then.
func (t *Tracker) Reset() {
	t.mu.Lock()
	defer t.mu.Unlock()
	clear(t.peers)
	clear(t.chunks)
	t.pairs = 0
}

// TrackerStats is what a tracker holds.
type TrackerStats struct {
	Peers, Chunks, Pairs int
}

// Stats reports what the tracker holds (tests, status).
func (t *Tracker) Stats() TrackerStats {
	t.mu.Lock()
	defer t.mu.Unlock()
	return TrackerStats{Peers: len(t.peers), Chunks: len(t.chunks), Pairs: t.pairs}
}

func (t *Tracker) sweepLocked(now time.Time) {
	if now.Sub(t.lastSweep) < sweepEvery {
		return
	}
	t.lastSweep = now
	for addr, p := range t.peers {
		if !now.Before(p.expires) {
			t.dropLocked(addr, p)
		}
	}
}

func (t *Tracker) dropLocked(addr string, p *trackedPeer) {
	t.forgetChunksLocked(addr, p)
	delete(t.peers, addr)
}

func (t *Tracker) forgetChunksLocked(addr string, p *trackedPeer) {
	for c := range p.chunks {
		if holders := t.chunks[c]; holders != nil {
			delete(holders, addr)
			if len(holders) == 0 {
				delete(t.chunks, c)
			}
		}
	}
	t.pairs -= len(p.chunks)
	clear(p.chunks)
}
