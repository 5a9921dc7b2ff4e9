package metaserver

import (
	"context"
	"fmt"
	"net"
	"strconv"
)

// The peer tracker: which mounting hosts hold blocks of which chunks, so a
// host can fetch a hot chunk's blocks from a peer instead of the
// chunkservers (see fs/p2p.go and docs/mount.md). It is soft state in the
// leader's memory, never in the Raft log: it changes with every read on every
// host, and it rebuilds itself from the hosts' periodic announcements, so a
// new leader starts empty and is complete again one announcement period
// later. Followers answer the ops with "not leader", which the client
// follows like any other redirect.
const (
	OpP2PAnnounce = "p2pannounce"
	OpP2PPeers    = "p2ppeers"
)

// IsTrackerOp reports whether op is answered by the leader's peer tracker.
func IsTrackerOp(op string) bool { return op == OpP2PAnnounce || op == OpP2PPeers }

// Tracker limits every server applies (a tracker may be configured tighter).
const (
	// MaxTrackerChunksPerCall bounds the chunk ids of one announcement or
	// lookup.
	MaxTrackerChunksPerCall = 16384
	// MinTrackerTTL and MaxTrackerTTL clamp an announcement's TTL.
	MinTrackerTTL = 1
	MaxTrackerTTL = 600
)

// P2PAnnounceArgs says that the peer serving blocks at Peer holds blocks of
// Chunks, for TTL seconds. With Replace set the chunks replace everything
// the peer announced before (a periodic full announcement); without it they
// are added (a batch of newly fetched chunks), and the peer's earlier chunks
// get the new TTL too.
type P2PAnnounceArgs struct {
	Peer    string    `json:"peer"`
	Chunks  []ChunkID `json:"chunks"`
	TTL     int       `json:"ttl"` // seconds, clamped to [MinTrackerTTL, MaxTrackerTTL]
	Replace bool      `json:"replace,omitempty"`
}

// P2PAnnounceReply says how many of the announced chunks the tracker keeps
// (fewer than sent when a cap was reached) and the TTL it applied.
type P2PAnnounceReply struct {
	Accepted int `json:"accepted"`
	TTL      int `json:"ttl"`
}

// P2PPeersArgs asks for peers holding each of Chunks. Self, the asker's own
// peer address, is never answered; Max bounds the peers per chunk (0: the
// tracker's default).
type P2PPeersArgs struct {
	Chunks []ChunkID `json:"chunks"`
	Self   string    `json:"self,omitempty"`
	Max    int       `json:"max,omitempty"`
}

// P2PPeersReply lists, per chunk, a few peers picked at random among those
// holding it. Chunks nobody holds are absent.
type P2PPeersReply struct {
	Peers map[ChunkID][]string `json:"peers,omitempty"`
}

// Tracker is the peer tracker's operation set, an optional capability of a
// metaserver client: *Client has it; fakes and wrappers may not.
type Tracker interface {
	P2PAnnounce(ctx context.Context, a P2PAnnounceArgs) (P2PAnnounceReply, error)
	P2PPeers(ctx context.Context, a P2PPeersArgs) (P2PPeersReply, error)
}

var _ Tracker = (*Client)(nil)

// P2PAnnounce tells the tracker which chunks this host's peer server holds.
func (c *Client) P2PAnnounce(ctx context.Context, a P2PAnnounceArgs) (r P2PAnnounceReply, err error) {
	err = c.call(ctx, OpP2PAnnounce, a, &r)
	return
}

// P2PPeers asks the tracker for peers holding chunks.
func (c *Client) P2PPeers(ctx context.Context, a P2PPeersArgs) (r P2PPeersReply, err error) {
	err = c.call(ctx, OpP2PPeers, a, &r)
	return
}

// CheckPeerAddr validates a peer address as other hosts will dial it:
// host:port with a host that names one machine (not empty, not 0.0.0.0 or
// ::) and a port in 1-65535.
func CheckPeerAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("peer address %q: %w", addr, err)
	}
	if host == "" {
		return fmt.Errorf("peer address %q has no host; peers could not reach it", addr)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("peer address %q is a wildcard, not an address peers can reach", addr)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("peer address %q: port must be 1-65535", addr)
	}
	return nil
}
