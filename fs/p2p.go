package fs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/internal/clusterauth"
	"github.com/dockyard/dockyard/metaserver"
)

// Peer-to-peer block delivery between mounting hosts.
//
// When many hosts start containers from one image at once, they all read the
// same blocks. With P2P on, a host that holds a block in its block cache
// (memory or disk) serves it to the others, so the chunkservers serve a hot
// block a few times instead of once per host.
//
//   - Each host runs a peer server (p2pserver.go) answering
//     GET /p2p/blocks/{chunk}/{first}-{last} from its caches only. It never
//     fetches on a peer's behalf, so one request costs the cluster nothing
//     more.
//   - The leader metaserver's tracker (metaserver/server/tracker.go) knows
//     which hosts hold blocks of which chunks, from their announcements:
//     chunks fetched are announced in batches every p2pFlushEvery, and everything
//     held is re-announced every AnnounceEvery (replacing the last list),
//     which is also how a new leader's empty tracker refills.
//   - On a block-cache miss the read asks the tracker (answers are cached for
//     LookupTTL) and fetches from one peer, in one request per run of
//     units (below). Reads missing blocks of the same units at the same time
//     share that fetch (peerFlight). If the peer is slower than HedgeAfter
//     the chunkservers are asked too and the first good answer wins. Any
//     failure falls back to the chunkservers.
//
// Integrity: a peer is not trusted with the bytes. The metaserver records the
// xxhash64 of every whole shard at commit (metaserver.Shard.Sum), and data
// shards are contiguous slices of the chunk (layout.go). So bytes from a peer
// are checked a data shard at a time against the chunk map: a read from a
// peer fetches the blocks of whole data shards (or of the whole chunk when
// its shards are not whole numbers of blocks), hashes each shard (zero
// padded, as it was written) and compares. A chunk the map has no sums for is
// never read from peers. A peer whose answer does not verify is passed over
// for PassOver. With a cluster secret, requests carry the cluster credential
// and answers a MAC over their bytes' hash bound to the request, so hosts
// outside the cluster can neither read blocks nor answer in a peer's place.
// docs/security.md has the trust model.

// P2P defaults.
const (
	DefaultP2PHedgeAfter    = 300 * time.Millisecond
	DefaultP2PPeerTimeout   = 3 * time.Second
	DefaultP2PAnnounceEvery = 10 * time.Second
	DefaultP2PLookupTTL     = 2 * time.Second
	DefaultP2PPassOver      = 30 * time.Second
)

// p2pFlushEvery is how often newly fetched chunks are announced. Short,
// because the case P2P is for is many hosts reading one image at the same
// moment: a chunk one of them fetched is useful to the others only once the
// tracker knows. An announcement is one small request to the leader, and
// only sent when there is something new.
const p2pFlushEvery = 250 * time.Millisecond

// maxP2PRange bounds the blocks one request to a peer may ask for: 64 MiB,
// more than a chunk holds.
const maxP2PRange = 512

// maxP2PLookups bounds the cached tracker answers; the cache is dropped whole
// when full, which costs a lookup per chunk afterwards.
const maxP2PLookups = 1 << 16

// Headers of the peer protocol.
const (
	// P2PNonceHeader carries the asker's random nonce (32 hex digits), which
	// the answer's MAC covers so an answer cannot be replayed to another
	// request.
	P2PNonceHeader = "Dockyard-P2P-Nonce"
	// P2PSumHeader carries the xxhash64 of the block, 16 hex digits.
	P2PSumHeader = "Dockyard-P2P-Sum"
	// P2PAuthHeader carries, with a cluster secret, the answer's MAC (a
	// cluster credential over the request URI, the nonce and the sum).
	P2PAuthHeader = "Dockyard-P2P-Auth"
	// p2pAnswerMethod is the "method" the answer's credential is made for,
	// so it never verifies as a request credential, nor one as it.
	p2pAnswerMethod = "P2P-ANSWER"
)

// P2POptions configure peer-to-peer block delivery. Zero values mean the
// defaults above.
type P2POptions struct {
	// Listen is the address the peer server listens on (host:port).
	Listen string
	// Advertise is the address peers dial, announced to the tracker;
	// default Listen (with the port actually bound when Listen's is 0),
	// which must then name a host.
	Advertise string
	// Secret, when set, authenticates requests and answers between peers
	// (internal/clusterauth). Without it, any host that can reach Listen
	// can read the blocks cached here.
	Secret *clusterauth.Secret
	// HedgeAfter is how long a peer may take before the chunkservers are
	// asked too.
	HedgeAfter time.Duration
	// PeerTimeout bounds one fetch from a peer.
	PeerTimeout time.Duration
	// AnnounceEvery is the period of full announcements; the tracker keeps
	// them for three periods.
	AnnounceEvery time.Duration
	// LookupTTL is how long a tracker answer is reused.
	LookupTTL time.Duration
	// PassOver is how long a peer that failed or sent bad bytes is not
	// asked.
	PassOver time.Duration
	// HTTPClient carries requests to peers (nil: a tuned default).
	HTTPClient *http.Client
	Logger     *slog.Logger
}

func (o P2POptions) withDefaults() P2POptions {
	if o.HedgeAfter <= 0 {
		o.HedgeAfter = DefaultP2PHedgeAfter
	}
	if o.PeerTimeout <= 0 {
		o.PeerTimeout = DefaultP2PPeerTimeout
	}
	if o.AnnounceEvery <= 0 {
		o.AnnounceEvery = DefaultP2PAnnounceEvery
	}
	if o.LookupTTL <= 0 {
		o.LookupTTL = DefaultP2PLookupTTL
	}
	if o.PassOver <= 0 {
		o.PassOver = DefaultP2PPassOver
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// P2PStats counts what P2P did since it started.
type P2PStats struct {
	PeerBlocks     uint64 // blocks read from peers, verified (once per fetch, however many reads shared it)
	PeerBytes      uint64 // their bytes
	PeerMisses     uint64 // peer fetches that fell back: the peer lacked a block, failed or was too slow
	VerifyFailures uint64 // peer answers dropped because they did not verify
	HedgeWins      uint64 // reads the chunkservers answered first while a slow peer was asked
	ServedBlocks   uint64 // blocks served to peers
	ServedBytes    uint64 // their bytes
	ServedMisses   uint64 // requests for ranges of blocks not all held here (404)
	Lookups        uint64 // tracker lookups made
	Announced      uint64 // chunk ids announced to the tracker
}

type p2pCounters struct {
	peerBlocks, peerBytes, peerMisses, verifyFailures, hedgeWins atomic.Uint64
	servedBlocks, servedBytes, servedMisses, lookups, announced  atomic.Uint64
}

// P2P is one host's peer-to-peer delivery: its peer server, its tracker
// client and its announcements. One P2P serves every Client given it in
// Options.P2P (an image mount runs several over one set of caches' worth of
// data), answering peers from all their caches.
type P2P struct {
	tracker metaserver.Tracker
	opt     P2POptions
	addr    string // advertised
	ln      net.Listener
	srv     *http.Server
	hc      *http.Client
	log     *slog.Logger
	st      p2pCounters

	mu      sync.Mutex
	clients []*Client
	lookups map[metaserver.ChunkID]*peerLookup
	bad     map[string]time.Time // peers passed over until then
	pending map[metaserver.ChunkID]struct{}

	fmu     sync.Mutex
	flights map[unitKey]*peerFlight // running and lingering peer fetches, by unit

	stop      chan struct{}
	wg        sync.WaitGroup
	closeOnce sync.Once
}

type peerLookup struct {
	done    chan struct{}
	peers   []string
	expires time.Time
}

// NewP2P starts the peer server on o.Listen and the announcements to
// tracker. Close stops both.
func NewP2P(tracker metaserver.Tracker, o P2POptions) (*P2P, error) {
	if tracker == nil {
		return nil, errors.New("p2p: no tracker (a metaserver client) given")
	}
	if o.Listen == "" {
		return nil, errors.New("p2p: no listen address")
	}
	o = o.withDefaults()
	if o.Advertise != "" {
		if err := metaserver.CheckPeerAddr(o.Advertise); err != nil {
			return nil, fmt.Errorf("p2p: advertise address: %w", err)
		}
	}
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return nil, fmt.Errorf("p2p: listening on %s: %w", o.Listen, err)
	}
	addr := o.Advertise
	if addr == "" {
		host, _, _ := net.SplitHostPort(o.Listen)
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		addr = net.JoinHostPort(host, port)
		if err := metaserver.CheckPeerAddr(addr); err != nil {
			ln.Close()
			return nil, fmt.Errorf("p2p: listen address %s is not one peers can dial; give an advertise address: %w", o.Listen, err)
		}
	}
	hc := o.HTTPClient
	if hc == nil {
		hc = &http.Client{Transport: &http.Transport{
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     time.Minute,
			DialContext:         (&net.Dialer{Timeout: o.PeerTimeout}).DialContext,
		}}
	}
	p := &P2P{
		tracker: tracker, opt: o, addr: addr, ln: ln, log: o.Logger,
		hc:      o.Secret.Client(hc),
		lookups: map[metaserver.ChunkID]*peerLookup{},
		bad:     map[string]time.Time{},
		pending: map[metaserver.ChunkID]struct{}{},
		flights: map[unitKey]*peerFlight{},
		stop:    make(chan struct{}),
	}
	p.srv = &http.Server{Handler: o.Secret.Middleware(p.handler(), clusterauth.WithOpenPaths()),
		ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	p.wg.Add(2)
	go func() {
		defer p.wg.Done()
		_ = p.srv.Serve(ln) // returns when Close shuts the server down
	}()
	go func() {
		defer p.wg.Done()
		p.announceLoop()
	}()
	return p, nil
}

// Addr is the address announced to peers.
func (p *P2P) Addr() string { return p.addr }

// ListenAddr is the address the peer server is bound to.
func (p *P2P) ListenAddr() string { return p.ln.Addr().String() }

// Close withdraws this host from the tracker (best effort), stops the peer
// server and the announcements. It is safe to call more than once.
func (p *P2P) Close() error {
	var err error
	p.closeOnce.Do(func() {
		close(p.stop)
		err = p.srv.Close()
		p.wg.Wait()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		// An empty replacing list with the shortest TTL: peers stop being
		// sent here within a second instead of three periods.
		_, _ = p.tracker.P2PAnnounce(ctx, metaserver.P2PAnnounceArgs{Peer: p.addr, TTL: metaserver.MinTrackerTTL, Replace: true})
	})
	return err
}

// Stats reports the counters.
func (p *P2P) Stats() P2PStats {
	s := &p.st
	return P2PStats{
		PeerBlocks: s.peerBlocks.Load(), PeerBytes: s.peerBytes.Load(), PeerMisses: s.peerMisses.Load(),
		VerifyFailures: s.verifyFailures.Load(), HedgeWins: s.hedgeWins.Load(),
		ServedBlocks: s.servedBlocks.Load(), ServedBytes: s.servedBytes.Load(), ServedMisses: s.servedMisses.Load(),
		Lookups: s.lookups.Load(), Announced: s.announced.Load(),
	}
}

// attach makes c's caches part of what this host serves and announces.
func (p *P2P) attach(c *Client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clients = append(p.clients, c)
}

func (p *P2P) attached() []*Client {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Client(nil), p.clients...)
}

// fetchRun fills buf with chunk data from byte from: from a peer when P2P is
// on and one holds the blocks, else (and on any failure) from the
// chunkservers.
func (c *Client) fetchRun(ctx context.Context, ch *metaserver.Chunk, buf []byte, from int64) error {
	if c.p2p == nil {
		return c.readShards(ctx, ch, buf, from)
	}
	return c.p2p.fetch(ctx, c, ch, buf, from)
}

func (p *P2P) fetch(ctx context.Context, c *Client, ch *metaserver.Chunk, buf []byte, from int64) error {
	fromShards := func(ctx context.Context) error {
		err := c.readShards(ctx, ch, buf, from)
		if err == nil {
			p.noteHeld(ch.ID)
		}
		return err
	}
	sums, ok := dataShardSums(ch)
	if !ok {
		return fromShards(ctx)
	}
	peer := p.pickPeer(ctx, ch.ID)
	if peer == "" {
		return fromShards(ctx)
	}
	to := from + int64(len(buf))
	fls := p.join(c, ch, sums, peer, from, to)
	pctx, pcancel := context.WithCancel(ctx)
	defer pcancel()
	res := make(chan error, 1)
	go func() { res <- p.wait(pctx, fls) }()
	take := func() {
		for _, f := range fls {
			fa, fb := f.lo*blockSize, min(f.hi*blockSize, ch.Size)
			a, b := max(from, fa), min(to, fb)
			copy(buf[a-from:b-from], f.sl.buf[a-fa:b-fa])
			p.offer(c, ch, f.lo, f.hi, f.sl, from, to)
		}
		p.leave(fls)
		p.noteHeld(ch.ID)
	}
	hedge := time.NewTimer(p.opt.HedgeAfter)
	defer hedge.Stop()
	select {
	case err := <-res:
		if err == nil {
			take()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fromShards(ctx)
	case <-hedge.C:
	}
	// The peer is slow: ask the chunkservers too; the first good answer
	// wins. Both sides stop writing before this returns. Giving up on the
	// peer leaves the fetch to the other readers waiting on it, if any.
	cctx, ccancel := context.WithCancel(ctx)
	defer ccancel()
	csDone := make(chan error, 1)
	go func() { csDone <- c.readShards(cctx, ch, buf, from) }()
	select {
	case err := <-res:
		if err == nil {
			ccancel()
			<-csDone
			take()
			return nil
		}
		err = <-csDone
		if err == nil {
			p.noteHeld(ch.ID)
		}
		return err
	case err := <-csDone:
		if err == nil {
			pcancel()
			if <-res == nil {
				p.leave(fls) // it finished as it was given up
			}
			p.st.hedgeWins.Add(1)
			p.noteHeld(ch.ID)
			return nil
		}
		// The chunkservers failed; the peer may still answer.
		if <-res == nil {
			take()
			return nil
		}
		return err
	}
}

// p2pLinger is how long a finished peer fetch stays joinable. A reader that
// found a block missing from the cache and is about to ask a peer for its
// shard may come moments after the fetch bringing that shard finished (its
// other blocks were in this reader's own cache flight, so the fetch could
// not cache them); it takes the bytes from the fetch instead of asking again.
// The blocks are mostly in the block cache meanwhile, in the same slab, so
// lingering seldom holds memory the cache does not.
const p2pLinger = time.Second

// unitKey names a verification unit (a data shard, or the whole chunk) by its
// first block.
type unitKey struct {
	chunk metaserver.ChunkID
	block int64
}

// A peerFlight is one fetch from a peer of blocks [lo, hi) of a chunk, whole
// units, shared by every read that needs any of them while it runs (or
// lingers): concurrent misses in one shard cost one request.
//
// Its slab is reference counted like the block cache's flights: the fetch
// holds one until the flight stops lingering; each reader that joined before
// it finished is given one when it finishes (users counts them), and one
// that joins after takes its own. A reader gives its reference back with
// leave. When every reader has left before the fetch finished, the fetch is
// cancelled: nobody needs its bytes. One reader leaving (its context done,
// the chunkservers answered it first) does not cancel it for the others.
type peerFlight struct {
	chunk  metaserver.ChunkID
	lo, hi int64 // blocks
	done   chan struct{}
	cancel context.CancelFunc

	// Under P2P.fmu:
	users   int32
	clients []*Client // whose caches take the blocks nobody read yet
	sl      *slab     // after done, when err == nil
	err     error
}

// unitBlocks returns how many blocks a verification unit of ch spans (a
// data shard, or the whole chunk when shards are not whole blocks) and how
// many blocks ch has.
func unitBlocks(ch *metaserver.Chunk) (per, nblocks int64) {
	nblocks = (ch.Size + blockSize - 1) / blockSize
	if ch.ShardSize%blockSize != 0 {
		return nblocks, nblocks
	}
	return ch.ShardSize / blockSize, nblocks
}

// join returns, in order, the peer flights bringing the units that cover
// chunk bytes [a, b), counting the caller as a user of each: flights
// already running (or lingering) are shared, and the units nobody is
// fetching are fetched from peer, one flight per run of consecutive units.
func (p *P2P) join(c *Client, ch *metaserver.Chunk, sums []uint64, peer string, a, b int64) []*peerFlight {
	ulo, uhi := unitsCovering(ch, a, b)
	per, nblocks := unitBlocks(ch)
	var out, started []*peerFlight
	var run *peerFlight // the flight being started for the current run of units
	p.fmu.Lock()
	for u := ulo; u < uhi; u += per {
		k := unitKey{ch.ID, u}
		if f := p.flights[k]; f != nil {
			run = nil
			if len(out) > 0 && out[len(out)-1] == f {
				continue // one flight of several units
			}
			out = append(out, f)
			if isClosed(f.done) {
				f.sl.ref() // it finished: take the bytes now
			} else {
				f.users++
				if !slices.Contains(f.clients, c) {
					f.clients = append(f.clients, c)
				}
			}
			continue
		}
		if run == nil {
			run = &peerFlight{chunk: ch.ID, lo: u, done: make(chan struct{}), users: 1, clients: []*Client{c}}
			out = append(out, run)
			started = append(started, run)
		}
		run.hi = min(u+per, nblocks)
		p.flights[k] = run
	}
	for _, f := range started {
		var ctx context.Context
		ctx, f.cancel = context.WithTimeout(context.Background(), p.opt.PeerTimeout)
		go p.lead(ctx, f, ch, sums, peer)
	}
	p.fmu.Unlock()
	return out
}

// lead runs flight f's fetch and hands its outcome to its users.
func (p *P2P) lead(ctx context.Context, f *peerFlight, ch *metaserver.Chunk, sums []uint64, peer string) {
	sl, err := p.fetchUnits(ctx, ch, sums, peer, f.lo, f.hi)
	f.cancel()
	if err == nil {
		p.st.peerBlocks.Add(uint64(f.hi - f.lo))
		p.st.peerBytes.Add(uint64(len(sl.buf)))
		p.noteHeld(ch.ID)
	}
	p.fmu.Lock()
	abandoned := f.users == 0
	f.sl, f.err = sl, err
	if err == nil {
		sl.refs.Add(f.users)
	} else {
		p.dropFlightLocked(f)
	}
	clients := f.clients
	f.clients = nil
	close(f.done)
	p.fmu.Unlock()
	switch {
	case err == nil:
		// Blocks no user read go to the users' caches now, before
		// anyone could miss them there and ask for them again.
		for _, c := range clients {
			p.offer(c, ch, f.lo, f.hi, sl, 0, 0)
		}
		// The fetch's reference is the lingering flight's.
		time.AfterFunc(p2pLinger, func() {
			p.fmu.Lock()
			p.dropFlightLocked(f)
			p.fmu.Unlock()
			sl.release()
		})
	case abandoned:
		// Every reader had the bytes from the chunkservers first.
		p.st.peerMisses.Add(1)
	default:
		p.failed(ch.ID, peer, err)
	}
}

// dropFlightLocked makes f no longer joinable.
func (p *P2P) dropFlightLocked(f *peerFlight) {
	for u := f.lo; u < f.hi; u++ { // keys are units' first blocks
		k := unitKey{f.chunk, u}
		if p.flights[k] == f {
			delete(p.flights, k)
		}
	}
}

// wait waits for flights fls to finish. On success the caller holds a
// reference to each one's slab, to give back with leave; on failure it holds
// none.
func (p *P2P) wait(ctx context.Context, fls []*peerFlight) error {
	for _, f := range fls {
		select {
		case <-f.done:
			if f.err != nil {
				p.leave(fls)
				return f.err
			}
		case <-ctx.Done():
			p.leave(fls)
			return ctx.Err()
		}
	}
	return nil
}

// leave gives back the caller's place in flights fls: its slab reference
// for a finished one, its place among the users of one still running (the
// last user leaving cancels the fetch).
func (p *P2P) leave(fls []*peerFlight) {
	p.fmu.Lock()
	defer p.fmu.Unlock()
	for _, f := range fls {
		if isClosed(f.done) {
			if f.err == nil {
				f.sl.release()
			}
			continue
		}
		if f.users--; f.users == 0 {
			p.dropFlightLocked(f)
			f.cancel()
		}
	}
}

// errVerify marks peer answers that were wrong, not merely missing.
var errVerify = errors.New("peer answer does not verify")

// errNotHeld is a peer's 404: it no longer holds the block.
var errNotHeld = errors.New("peer does not hold the block")

// failed notes a failed peer fetch: a peer that no longer holds the chunk is
// forgotten for it; one that failed or sent bad bytes is passed over for
// every chunk for a while.
func (p *P2P) failed(id metaserver.ChunkID, peer string, err error) {
	if errors.Is(err, context.Canceled) {
		return
	}
	p.st.peerMisses.Add(1)
	if errors.Is(err, errVerify) {
		p.st.verifyFailures.Add(1)
		p.log.Warn("p2p: dropped a peer's answer that does not verify; reading from the chunkservers", "peer", peer, "chunk", id, "err", err)
	} else {
		p.log.Debug("p2p: peer fetch failed; reading from the chunkservers", "peer", peer, "chunk", id, "err", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.lookups[id]; l != nil && isClosed(l.done) {
		for i, a := range l.peers {
			if a == peer {
				l.peers = append(l.peers[:i:i], l.peers[i+1:]...)
				break
			}
		}
	}
	if !errors.Is(err, errNotHeld) {
		p.bad[peer] = time.Now().Add(p.opt.PassOver)
	}
}

func isClosed(c chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// pickPeer returns a peer holding blocks of chunk id that is not passed
// over, or "". Tracker answers are cached for LookupTTL, failures too, so a
// read does not cost a tracker round trip each time, nor a failing tracker
// one per read.
func (p *P2P) pickPeer(ctx context.Context, id metaserver.ChunkID) string {
	now := time.Now()
	p.mu.Lock()
	l := p.lookups[id]
	if l != nil && isClosed(l.done) && !now.Before(l.expires) {
		l = nil
	}
	if l == nil {
		if len(p.lookups) >= maxP2PLookups {
			clear(p.lookups)
		}
		l = &peerLookup{done: make(chan struct{})}
		p.lookups[id] = l
		p.mu.Unlock()
		p.lookup(ctx, id, l)
		p.mu.Lock()
	} else if !isClosed(l.done) {
		p.mu.Unlock()
		select {
		case <-l.done:
		case <-ctx.Done():
			return ""
		}
		p.mu.Lock()
	}
	defer p.mu.Unlock()
	for _, a := range l.peers {
		if t, ok := p.bad[a]; ok {
			if now.Before(t) {
				continue
			}
			delete(p.bad, a)
		}
		return a
	}
	return ""
}

func (p *P2P) lookup(ctx context.Context, id metaserver.ChunkID, l *peerLookup) {
	p.st.lookups.Add(1)
	ctx, cancel := context.WithTimeout(ctx, p.opt.PeerTimeout)
	defer cancel()
	r, err := p.tracker.P2PPeers(ctx, metaserver.P2PPeersArgs{Chunks: []metaserver.ChunkID{id}, Self: p.addr})
	if err != nil {
		p.log.Debug("p2p: tracker lookup failed; reading from the chunkservers", "chunk", id, "err", err)
	}
	p.mu.Lock()
	l.peers = r.Peers[id]
	// "Nobody" is kept a quarter as long: in a burst of hosts reading
	// one image, holders appear within the first announcement periods.
	ttl := p.opt.LookupTTL
	if len(l.peers) == 0 {
		ttl /= 4
	}
	l.expires = time.Now().Add(ttl)
	close(l.done)
	p.mu.Unlock()
}

// dataShardSums returns the recorded checksum of each data shard of ch, or
// false when one is unknown: such a chunk is never read from peers.
func dataShardSums(ch *metaserver.Chunk) ([]uint64, bool) {
	if ch.K <= 0 || ch.ShardSize <= 0 || int64(ch.K)*ch.ShardSize < ch.Size {
		return nil, false
	}
	sums := make([]uint64, ch.K)
	for _, s := range ch.Shards {
		idx := s.Index
		if ch.Replicated {
			idx = 0 // every copy is the one data shard
		}
		if idx >= 0 && idx < ch.K && s.Sum != 0 {
			sums[idx] = s.Sum
		}
	}
	for _, s := range sums {
		if s == 0 {
			return nil, false
		}
	}
	return sums, true
}

// unitsCovering returns the blocks [lo, hi) to fetch from a peer for chunk
// bytes [a, b): whole data shards, the unit a peer's bytes are verified in.
// When a shard is not a whole number of blocks the unit is the whole chunk.
func unitsCovering(ch *metaserver.Chunk, a, b int64) (lo, hi int64) {
	nblocks := (ch.Size + blockSize - 1) / blockSize
	ss := ch.ShardSize
	if ss%blockSize != 0 {
		return 0, nblocks
	}
	per := ss / blockSize
	lo = a / ss * per
	hi = min(((b-1)/ss+1)*per, nblocks)
	return lo, hi
}

// checkUnits verifies chunk bytes data, which start at block lo, against
// the recorded sums of the data shards they hold whole. data covers whole
// shards (unitsCovering), the last one possibly cut by the chunk's end: it
// was written zero-padded, and is hashed so.
func checkUnits(ch *metaserver.Chunk, sums []uint64, lo int64, data []byte) error {
	ss := ch.ShardSize
	start := lo * blockSize
	end := start + int64(len(data))
	for j := start / ss; j*ss < end; j++ {
		sa, sb := j*ss, min((j+1)*ss, ch.Size)
		part := data[sa-start : max(sb, sa)-start]
		d := xxhash.New()
		_, _ = d.Write(part)
		for pad := ss - int64(len(part)); pad > 0; {
			n := min(pad, int64(len(zeros)))
			_, _ = d.Write(zeros[:n])
			pad -= n
		}
		if got := d.Sum64(); got != sums[j] {
			return fmt.Errorf("chunk %d shard %d: checksum %016x, the chunk map records %016x: %w", ch.ID, j, got, sums[j], errVerify)
		}
	}
	return nil
}

// fetchUnits fetches blocks [lo, hi) of ch from peer in one request and
// verifies them. The slab holds the bytes; the caller releases it.
func (p *P2P) fetchUnits(ctx context.Context, ch *metaserver.Chunk, sums []uint64, peer string, lo, hi int64) (*slab, error) {
	sl := getSlab(min(hi*blockSize, ch.Size) - lo*blockSize)
	err := p.fetchRange(ctx, peer, ch.ID, lo, hi, sl.buf)
	if err == nil {
		err = checkUnits(ch, sums, lo, sl.buf)
	}
	if err != nil {
		sl.release()
		return nil, err
	}
	return sl, nil
}

// fetchRange reads blocks [lo, hi) of a chunk from a peer into dst, whose
// length is theirs, checking the answer's length, sum and (with a secret)
// MAC. The sum and the MAC come as trailers, so that the peer can stream
// blocks from its disk cache without reading them all first.
func (p *P2P) fetchRange(ctx context.Context, peer string, chunk metaserver.ChunkID, lo, hi int64, dst []byte) error {
	uri := rangePath(chunk, lo, hi-1)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+peer+uri, nil)
	if err != nil {
		return err
	}
	var nb [16]byte
	_, _ = rand.Read(nb[:])
	nonce := hex.EncodeToString(nb[:])
	req.Header.Set(P2PNonceHeader, nonce)
	resp, err := p.hc.Do(req)
	if err != nil {
		return fmt.Errorf("peer %s: %w", peer, err)
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("peer %s: %s: %w", peer, uri, errNotHeld)
	case resp.StatusCode != http.StatusOK:
		if err := clusterauth.CheckResponse("peer "+peer, resp); err != nil {
			return err
		}
		return fmt.Errorf("peer %s: %s: HTTP %d", peer, uri, resp.StatusCode)
	case resp.ContentLength >= 0 && resp.ContentLength != int64(len(dst)):
		return fmt.Errorf("peer %s: %s: %d bytes, want %d: %w", peer, uri, resp.ContentLength, len(dst), errVerify)
	}
	if _, err := io.ReadFull(resp.Body, dst); err != nil {
		return fmt.Errorf("peer %s: %s: %w", peer, uri, err)
	}
	// Reading to the end makes the trailers available.
	if n, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("peer %s: %s: %w", peer, uri, err)
	} else if n > 0 {
		return fmt.Errorf("peer %s: %s: longer than %d bytes: %w", peer, uri, len(dst), errVerify)
	}
	sumText := resp.Trailer.Get(P2PSumHeader)
	if sum, err := chunkserver.ParseSum(sumText); err != nil || sum != chunkserver.Sum(dst) {
		return fmt.Errorf("peer %s: %s: damaged in transit (sum %q): %w", peer, uri, sumText, errVerify)
	}
	if s := p.opt.Secret; s != nil {
		if err := s.Verify(resp.Trailer.Get(P2PAuthHeader), p2pAnswerMethod, answerSubject(uri, nonce, sumText), time.Now(), clusterauth.Window); err != nil {
			return fmt.Errorf("peer %s: %s: answer not authenticated: %v: %w", peer, uri, err, errVerify)
		}
	}
	return nil
}

// answerSubject is what an answer's MAC covers: the request, the asker's
// nonce and the sum of the blocks sent. None of them contains a space.
func answerSubject(uri, nonce, sum string) string { return uri + " " + nonce + " " + sum }

// rangePath is the address on a peer server of a chunk's blocks first to
// last, inclusive (block cache keys), the chunk in the 16 hex digits of
// shard names.
func rangePath(chunk metaserver.ChunkID, first, last int64) string {
	return fmt.Sprintf("/p2p/blocks/%016x/%d-%d", uint64(chunk), first, last)
}

// offer caches the blocks a peer fetch brought beyond the run asked for
// ([a, b) of the chunk), which verification made it fetch: they are likely
// read next, and fetched they are. Blocks cached or in flight are left alone.
func (p *P2P) offer(c *Client, ch *metaserver.Chunk, lo, hi int64, sl *slab, a, b int64) {
	bc := c.cache
	start, end := lo*blockSize, min(hi*blockSize, ch.Size)
	bc.mu.Lock()
	defer bc.mu.Unlock()
	for i := lo; i < hi; i++ {
		ba, bb := i*blockSize, min((i+1)*blockSize, end)
		if ba < b && bb > a {
			continue // in the run: its own flight caches it
		}
		k := blockKey{ch.ID, i}
		if _, ok := bc.items[k]; ok {
			continue
		}
		if _, ok := bc.flights[k]; ok {
			continue
		}
		bc.putLocked(k, sl.buf[ba-start:bb-start], sl)
	}
}

// noteHeld queues a chunk whose blocks this host now holds for the next
// announcement.
func (p *P2P) noteHeld(id metaserver.ChunkID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pending) < metaserver.MaxTrackerChunksPerCall {
		p.pending[id] = struct{}{}
	}
}

// announceLoop announces new chunks every p2pFlushEvery and everything held
// every AnnounceEvery, replacing the last full list.
func (p *P2P) announceLoop() {
	flush := time.NewTicker(min(p2pFlushEvery, p.opt.AnnounceEvery))
	defer flush.Stop()
	full := time.NewTicker(p.opt.AnnounceEvery)
	defer full.Stop()
	p.announceHeld() // the tracker learns this host is here
	for {
		select {
		case <-p.stop:
			return
		case <-flush.C:
			p.announcePending()
		case <-full.C:
			p.announceHeld()
		}
	}
}

func (p *P2P) ttl() int {
	return max(int(3*p.opt.AnnounceEvery/time.Second), metaserver.MinTrackerTTL)
}

func (p *P2P) announcePending() {
	p.mu.Lock()
	if len(p.pending) == 0 {
		p.mu.Unlock()
		return
	}
	ids := make([]metaserver.ChunkID, 0, len(p.pending))
	for id := range p.pending {
		ids = append(ids, id)
	}
	clear(p.pending)
	p.mu.Unlock()
	p.announce(ids, false)
}

// announceHeld sends the full list of chunks held in the attached clients'
// caches, replacing the last one: blocks evicted since stop being
// announced, and a new leader's tracker learns everything.
func (p *P2P) announceHeld() {
	p.mu.Lock()
	clear(p.pending) // the full list has them
	p.mu.Unlock()
	held := map[metaserver.ChunkID]struct{}{}
	for _, c := range p.attached() {
		c.cache.mu.Lock()
		for k := range c.cache.items {
			held[k.chunk] = struct{}{}
		}
		c.cache.mu.Unlock()
		if c.disk != nil {
			c.disk.mu.Lock()
			for k := range c.disk.items {
				held[k.chunk] = struct{}{}
			}
			c.disk.mu.Unlock()
		}
	}
	ids := make([]metaserver.ChunkID, 0, len(held))
	for id := range held {
		ids = append(ids, id)
	}
	p.announce(ids, true)
}

func (p *P2P) announce(ids []metaserver.ChunkID, replace bool) {
	ctx, cancel := context.WithTimeout(context.Background(), p.opt.PeerTimeout)
	defer cancel()
	for first := true; first || len(ids) > 0; first = false {
		n := min(len(ids), metaserver.MaxTrackerChunksPerCall)
		a := metaserver.P2PAnnounceArgs{Peer: p.addr, Chunks: ids[:n], TTL: p.ttl(), Replace: replace && first}
		ids = ids[n:]
		if _, err := p.tracker.P2PAnnounce(ctx, a); err != nil {
			// The next period tries again with everything held.
			p.log.Debug("p2p: announcing to the tracker failed", "err", err)
			return
		}
		p.st.announced.Add(uint64(n))
	}
}

// parseRangePath is rangePath's inverse, for ranges of at most
// maxP2PRange blocks.
func parseRangePath(chunk, blocks string) (id metaserver.ChunkID, first, last int64, err error) {
	if len(chunk) != 16 {
		return 0, 0, 0, fmt.Errorf("chunk %q: want 16 hex digits", chunk)
	}
	n, err := strconv.ParseUint(chunk, 16, 64)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("chunk %q: want 16 hex digits", chunk)
	}
	a, b, ok := strings.Cut(blocks, "-")
	first, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || !digits(a) || !digits(b) || err1 != nil || err2 != nil || first < 0 || last < first || last > 1<<31 || last-first >= maxP2PRange {
		return 0, 0, 0, fmt.Errorf("blocks %q: want first-last, block indexes, at most %d blocks", blocks, maxP2PRange)
	}
	return metaserver.ChunkID(n), first, last, nil
}

func digits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}
