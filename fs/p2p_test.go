package fs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/internal/clusterauth"
	"github.com/dockyard/dockyard/metaserver"
)

// fakeTracker answers every lookup with the same peers and records what is
// announced.
type fakeTracker struct {
	peers []string

	mu        sync.Mutex
	announced map[metaserver.ChunkID]bool
	lookups   int
}

func (f *fakeTracker) P2PAnnounce(_ context.Context, a metaserver.P2PAnnounceArgs) (metaserver.P2PAnnounceReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.announced == nil || a.Replace {
		f.announced = map[metaserver.ChunkID]bool{}
	}
	for _, c := range a.Chunks {
		f.announced[c] = true
	}
	return metaserver.P2PAnnounceReply{Accepted: len(a.Chunks), TTL: a.TTL}, nil
}

func (f *fakeTracker) P2PPeers(_ context.Context, a metaserver.P2PPeersArgs) (metaserver.P2PPeersReply, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.lookups++
	r := metaserver.P2PPeersReply{Peers: map[metaserver.ChunkID][]string{}}
	for _, c := range a.Chunks {
		r.Peers[c] = f.peers
	}
	return r, nil
}

func (f *fakeTracker) holds(id metaserver.ChunkID) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.announced[id]
}

func newSecret(t *testing.T) *clusterauth.Secret {
	t.Helper()
	text, err := clusterauth.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	s, err := clusterauth.ParseSecret([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func startP2P(t *testing.T, tr metaserver.Tracker, o P2POptions) *P2P {
	t.Helper()
	o.Listen = "127.0.0.1:0"
	if o.Logger == nil {
		o.Logger = discardLogger()
	}
	if o.AnnounceEvery == 0 {
		o.AnnounceEvery = time.Hour
	}
	p, err := NewP2P(tr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func (c *cluster) shardGets() int {
	n := 0
	for _, s := range c.servers {
		s.mu.Lock()
		n += s.gets
		s.mu.Unlock()
	}
	return n
}

// chunkBytes maps each chunk of file p to its data bytes, from what was
// written.
func (c *cluster) chunkBytes(t *testing.T, p string, data []byte) map[metaserver.ChunkID][]byte {
	t.Helper()
	a, err := c.meta.ResolvePath(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	c.meta.mu.Lock()
	defer c.meta.mu.Unlock()
	out := map[metaserver.ChunkID][]byte{}
	for _, e := range c.meta.inodes[a.Ino].Extents {
		if e.ChunkOff != 0 {
			t.Fatalf("extent %+v does not start its chunk", e)
		}
		out[e.Chunk] = data[e.Off : e.Off+e.Len]
	}
	return out
}

// paddedShardSums computes what a writer records for data cut in k shards.
func paddedShardSums(data []byte, k int) []uint64 {
	ss := shardSizeFor(int64(len(data)), k)
	var sums []uint64
	for j := range int64(k) {
		shard := make([]byte, ss)
		if j*ss < int64(len(data)) {
			copy(shard, data[j*ss:])
		}
		sums = append(sums, chunkserver.Sum(shard))
	}
	return sums
}

func TestP2PVerifyUnits(t *testing.T) {
	full := &metaserver.Chunk{ID: 1, K: 4, M: 2, Size: 4 << 20, ShardSize: 1 << 20}
	for _, c := range []struct {
		a, b   int64
		lo, hi int64
	}{
		{200 << 10, 300 << 10, 0, 8},           // inside shard 0: its 8 blocks
		{1<<20 - 1, 1<<20 + 1, 0, 16},          // across shards 0 and 1
		{3 << 20, 4 << 20, 24, 32},             // the last shard
		{(3 << 20) + 5, (3 << 20) + 6, 24, 32}, // one byte
		{0, 4 << 20, 0, 32},                    // everything
		{(2 << 20) - 1, (2 << 20) + 1, 8, 24},  // across shards 1 and 2
		{(1 << 20) + 128<<10, 2 << 20, 8, 16},  // from a block boundary inside shard 1
		{(4 << 20) - 1, 4 << 20, 24, 32},       // the very last byte
		{(2 << 20) + 1, (2 << 20) + 2, 16, 24}, // shard 2
		{(1 << 20) + 131071, (1 << 20) + 131073, 8, 16},
	} {
		if lo, hi := unitsCovering(full, c.a, c.b); lo != c.lo || hi != c.hi {
			t.Errorf("[%d,%d): blocks [%d,%d), want [%d,%d)", c.a, c.b, lo, hi, c.lo, c.hi)
		}
	}
	// Shards that are not whole blocks: the unit is the whole chunk.
	odd := &metaserver.Chunk{ID: 2, K: 4, M: 2, Size: 1_000_000, ShardSize: 250_000}
	if lo, hi := unitsCovering(odd, 300_000, 300_001); lo != 0 || hi != 8 {
		t.Errorf("odd chunk: blocks [%d,%d), want [0,8)", lo, hi)
	}

	for _, size := range []int{4 << 20, 1_000_000, 3, 128 << 10} {
		data := randBytes(uint64(size), size)
		k := 4
		ch := &metaserver.Chunk{ID: 3, K: k, M: 2, Size: int64(size), ShardSize: shardSizeFor(int64(size), k)}
		for i, s := range paddedShardSums(data, k) {
			ch.Shards = append(ch.Shards, metaserver.Shard{Index: i, Sum: s})
		}
		ch.Shards = append(ch.Shards, metaserver.Shard{Index: 4, Sum: 1}, metaserver.Shard{Index: 5, Sum: 2})
		sums, ok := dataShardSums(ch)
		if !ok {
			t.Fatalf("size %d: sums not found", size)
		}
		lo, hi := unitsCovering(ch, int64(size)-1, int64(size))
		unit := data[lo*blockSize : min(hi*blockSize, int64(size))]
		if err := checkUnits(ch, sums, lo, unit); err != nil {
			t.Fatalf("size %d, blocks [%d,%d): right bytes refused: %v", size, lo, hi, err)
		}
		bad := bytes.Clone(unit)
		bad[len(bad)/2] ^= 1
		if err := checkUnits(ch, sums, lo, bad); !errors.Is(err, errVerify) {
			t.Fatalf("size %d: wrong bytes: %v, want errVerify", size, err)
		}
	}
	// A replicated chunk: every copy carries the one data shard's sum.
	data := randBytes(9, 5000)
	rep := &metaserver.Chunk{ID: 4, K: 1, M: 2, Size: 5000, ShardSize: 5000, Replicated: true,
		Shards: []metaserver.Shard{{Index: 0}, {Index: 1, Sum: chunkserver.Sum(data)}, {Index: 2, Sum: chunkserver.Sum(data)}}}
	sums, ok := dataShardSums(rep)
	if !ok || checkUnits(rep, sums, 0, data) != nil {
		t.Fatalf("replicated chunk: sums %v %v", sums, ok)
	}
	// Without a recorded sum, no peer is trusted with the chunk.
	rep.Shards = []metaserver.Shard{{Index: 0}, {Index: 1}}
	if _, ok := dataShardSums(rep); ok {
		t.Fatal("a chunk without sums was found verifiable")
	}
}

// getBlocks asks a peer server for blocks with hc and returns the answer,
// its body read whole (so its trailers are there).
func getBlocks(t *testing.T, hc *http.Client, p *P2P, path, nonce string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.ListenAddr()+path, nil)
	if nonce != "" {
		req.Header.Set(P2PNonceHeader, nonce)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return resp, b
}

func TestP2PServer(t *testing.T) {
	ctx := context.Background()
	cl := newCluster(t, 6)
	writer := cl.client(Options{})
	data := randBytes(1, 5<<20) // a 4 MiB chunk and a 1 MiB one of 8 blocks
	writeFile(t, writer, "/read", data).Close()
	writeFile(t, writer, "/unread", randBytes(2, 1<<20)).Close()

	secret := newSecret(t)
	p := startP2P(t, &fakeTracker{}, P2POptions{Secret: secret})
	c := cl.client(Options{P2P: p, ReadAhead: -1})
	f, err := c.OpenPath(ctx, "/read")
	if err != nil {
		t.Fatal(err)
	}
	// Blocks 2 to 4 of the first chunk, and the last two of the second.
	for _, r := range [][2]int64{{2*blockSize + 10, 3*blockSize - 20}, {4<<20 + 6*blockSize, 2 * blockSize}} {
		if _, err := f.ReadAt(make([]byte, r[1]), r[0]); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	first := cl.chunkAt(t, "/read", 0).ID
	second := cl.chunkAt(t, "/read", 4<<20).ID
	const nonce = "0123456789abcdef0123456789abcdef"
	signed := secret.Client(&http.Client{})

	for _, c := range []struct {
		chunk       metaserver.ChunkID
		first, last int64
		want        []byte
	}{
		{first, 3, 3, data[3*blockSize : 4*blockSize]},
		{first, 2, 4, data[2*blockSize : 5*blockSize]},
		{second, 6, 7, data[4<<20+6*blockSize:]}, // to the chunk's end
	} {
		path := rangePath(c.chunk, c.first, c.last)
		resp, body := getBlocks(t, signed, p, path, nonce)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, c.want) {
			t.Fatalf("%s: HTTP %d, %d bytes, want the %d held", path, resp.StatusCode, len(body), len(c.want))
		}
		sum := resp.Trailer.Get(P2PSumHeader)
		if sum != chunkserver.FormatSum(chunkserver.Sum(c.want)) {
			t.Fatalf("%s: sum trailer %q", path, sum)
		}
		auth := resp.Trailer.Get(P2PAuthHeader)
		if err := secret.Verify(auth, p2pAnswerMethod, answerSubject(path, nonce, sum), time.Now(), time.Minute); err != nil {
			t.Fatalf("%s: answer MAC: %v", path, err)
		}
		// The MAC is bound to the request: it does not verify for
		// another nonce, nor for another range.
		if err := secret.Verify(auth, p2pAnswerMethod, answerSubject(path, strings.Repeat("0", 32), sum), time.Now(), time.Minute); err == nil {
			t.Fatalf("%s: answer MAC verified for another nonce", path)
		}
		if err := secret.Verify(auth, p2pAnswerMethod, answerSubject(rangePath(c.chunk, c.first, c.last+1), nonce, sum), time.Now(), time.Minute); err == nil {
			t.Fatalf("%s: answer MAC verified for another range", path)
		}
	}
	held := rangePath(first, 2, 4)

	// Without the secret, or with another one, nothing is served.
	for name, hc := range map[string]*http.Client{"unsigned": {}, "other secret": newSecret(t).Client(&http.Client{})} {
		resp, _ := getBlocks(t, hc, p, held, nonce)
		if err := clusterauth.CheckResponse("peer", resp); !errors.Is(err, clusterauth.ErrRefused) {
			t.Errorf("%s: HTTP %d, want the cluster's 401", name, resp.StatusCode)
		}
	}
	if resp, _ := getBlocks(t, signed, p, held, ""); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("no nonce: HTTP %d, want 400", resp.StatusCode)
	}

	// A range lacking any block is 404, and asking for it fetches
	// nothing: one block short at either end, a range past the chunk's
	// end, chunks not held.
	gets := cl.shardGets()
	unread := cl.chunkAt(t, "/unread", 0).ID
	for _, path := range []string{
		rangePath(first, 1, 4), rangePath(first, 2, 5), rangePath(first, 5, 5),
		rangePath(second, 6, 8), rangePath(second, 7, 9), rangePath(second, 8, 8),
		rangePath(unread, 0, 0), rangePath(first+1000, 0, 3),
	} {
		if resp, body := getBlocks(t, signed, p, path, nonce); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: HTTP %d, %d bytes, want 404", path, resp.StatusCode, len(body))
		}
	}
	if got := cl.shardGets(); got != gets {
		t.Errorf("requests for blocks not held made %d shard reads", got-gets)
	}
	const chunk1 = "/p2p/blocks/0000000000000001/"
	for _, path := range []string{
		"/p2p/blocks/xyz/0-1", "/p2p/blocks/1/0-1", chunk1 + "3", chunk1 + "x", chunk1 + "4-3", chunk1 + "-1-2",
		chunk1 + "0-", chunk1 + "-3", chunk1 + "+1-2", chunk1 + "1-+2", chunk1 + "1-2-3", chunk1 + "0-512",
		chunk1 + "0-99999999999999999999",
	} {
		if resp, _ := getBlocks(t, signed, p, path, nonce); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d, want 400", path, resp.StatusCode)
		}
	}
	st := p.Stats()
	if st.ServedBlocks != 6 || st.ServedBytes != 6*blockSize || st.ServedMisses != 8 {
		t.Errorf("stats %+v, want 6 blocks served and 8 misses", st)
	}
}

// fakePeer serves ranges of blocks of known chunks, right or in some wrong
// way, and counts the requests it gets.
type fakePeer struct {
	srv    *httptest.Server
	chunks map[metaserver.ChunkID][]byte
	mode   string        // "right", "wrong", "slow", "gated"
	gate   chan struct{} // "gated": answers wait for it to close
	hits   atomic.Int64
	// cancelled counts the requests whose asker went away before the
	// answer.
	cancelled atomic.Int64
}

func (fp *fakePeer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fp.hits.Add(1)
	var chunk, blocks string
	if rest, ok := strings.CutPrefix(r.URL.Path, "/p2p/blocks/"); ok {
		chunk, blocks, _ = strings.Cut(rest, "/")
	}
	id, first, last, err := parseRangePath(chunk, blocks)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	data, ok := fp.chunks[id]
	if !ok || last*blockSize >= int64(len(data)) {
		http.NotFound(w, r)
		return
	}
	b := bytes.Clone(data[first*blockSize : min((last+1)*blockSize, int64(len(data)))])
	var wait <-chan time.Time
	var gate <-chan struct{}
	switch fp.mode {
	case "wrong":
		// Wrong bytes with a sum that matches them: only the chunk
		// map can tell.
		b[len(b)/3] ^= 0x40
	case "slow":
		wait = time.After(20 * time.Second)
	case "gated":
		gate = fp.gate
	}
	if wait != nil || gate != nil {
		select {
		case <-wait:
		case <-gate:
		case <-r.Context().Done():
			fp.cancelled.Add(1)
			return
		}
	}
	w.Header().Set("Trailer", P2PSumHeader)
	w.Write(b)
	w.Header().Set(P2PSumHeader, chunkserver.FormatSum(chunkserver.Sum(b)))
}

func TestP2PReadFromFakePeer(t *testing.T) {
	for _, mode := range []string{"right", "wrong", "slow", "dead"} {
		t.Run(mode, func(t *testing.T) {
			cl := newCluster(t, 6)
			writer := cl.client(Options{})
			// Two whole chunks (shards of whole blocks) and a tail
			// whose shards are not.
			data := randBytes(7, 8<<20+300<<10)
			writeFile(t, writer, "/f", data).Close()

			fp := &fakePeer{chunks: cl.chunkBytes(t, "/f", data), mode: mode}
			fp.srv = httptest.NewServer(fp)
			t.Cleanup(fp.srv.Close)
			peer := strings.TrimPrefix(fp.srv.URL, "http://")
			if mode == "dead" {
				fp.srv.Close()
			}
			tr := &fakeTracker{peers: []string{peer}}
			// Only the slow peer is hedged against: the others must
			// answer, however slow the machine running the test.
			hedge := 10 * time.Second
			if mode == "slow" {
				hedge = 100 * time.Millisecond
			}
			p := startP2P(t, tr, P2POptions{HedgeAfter: hedge, PeerTimeout: 20 * time.Second})
			reader := cl.client(Options{P2P: p})

			gets := cl.shardGets()
			start := time.Now()
			got := readAll(t, reader, "/f")
			took := time.Since(start)
			if !bytes.Equal(got, data) {
				t.Fatalf("read %d bytes, not what was written", len(got))
			}
			st := p.Stats()
			fromShards := cl.shardGets() - gets
			t.Logf("%s: %+v, %d shard reads, %v", mode, st, fromShards, took)
			switch mode {
			case "right":
				// Exactly the file: every unit is fetched once, however
				// many reads (and read-aheads) missed blocks of it at
				// once, and a fetch brings whole data shards but not
				// their padding past the chunk's end.
				if fromShards != 0 || st.PeerBytes != uint64(len(data)) || st.PeerBlocks != 32+32+3 || st.VerifyFailures != 0 {
					t.Fatalf("%d shard reads, %d bytes (%d blocks) from the peer: want the file from the peer, once", fromShards, st.PeerBytes, st.PeerBlocks)
				}
				// At most one request per unit: 4 shards of each whole
				// chunk, the tail chunk whole.
				if n := fp.hits.Load(); n < 1 || n > 4+4+1 {
					t.Fatalf("%d requests to the peer, want at most 9", n)
				}
			case "wrong":
				if st.VerifyFailures == 0 || st.PeerBytes != 0 || fromShards == 0 {
					t.Fatalf("wrong bytes were not caught: %+v", st)
				}
				p.mu.Lock()
				_, passed := p.bad[peer]
				p.mu.Unlock()
				if !passed {
					t.Fatal("a peer that sent wrong bytes is not passed over")
				}
			case "slow":
				if st.HedgeWins == 0 || fromShards == 0 || took > 5*time.Second {
					t.Fatalf("a slow peer was waited for: %+v in %v", st, took)
				}
			case "dead":
				if st.PeerMisses == 0 || st.PeerBytes != 0 || fromShards == 0 {
					t.Fatalf("dead peer: %+v", st)
				}
			}
			// Whatever the peer did, what was read is announced.
			for id := range fp.chunks {
				waitFor(t, "chunks to be announced", func() bool { return tr.holds(id) })
			}
		})
	}
}

// countingTransport counts the requests it carries.
type countingTransport struct {
	base http.RoundTripper
	n    atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.base.RoundTrip(r)
}

// Two clients on one cluster, with the real tracker and real chunkservers:
// what the first read, the second reads from it, not from the chunkservers.
func TestP2PTwoClients(t *testing.T) {
	ctx := context.Background()
	rc := newRealCluster(t, 6, -1)
	writer := rc.client(Options{})
	data := randBytes(11, 12<<20+77_777)
	writeFile(t, writer, "/image-layer", data).Close()

	secret := newSecret(t)
	opts := P2POptions{Secret: secret, AnnounceEvery: 200 * time.Millisecond}
	pa := startP2P(t, rc.meta, opts)
	a := rc.client(Options{P2P: pa})
	if got := readAll(t, a, "/image-layer"); !bytes.Equal(got, data) {
		t.Fatal("first client read wrong bytes")
	}
	var ids []metaserver.ChunkID
	for _, ch := range rc.chunksOf("/image-layer") {
		ids = append(ids, ch.ID)
	}
	waitFor(t, "the tracker to know the first client's chunks", func() bool {
		r, err := rc.meta.P2PPeers(ctx, metaserver.P2PPeersArgs{Chunks: ids, Self: "127.0.0.1:1"})
		return err == nil && len(r.Peers) == len(ids)
	})

	pb := startP2P(t, rc.meta, opts)
	counter := &countingTransport{base: rc.hc.Transport}
	b := New(rc.meta, chunkserver.NewClient(&http.Client{Transport: counter}), Options{P2P: pb, Logger: discardLogger()})
	if got := readAll(t, b, "/image-layer"); !bytes.Equal(got, data) {
		t.Fatal("second client read other bytes than the first")
	}
	if n := counter.n.Load(); n != 0 {
		t.Fatalf("second client made %d chunkserver requests, want none", n)
	}
	sa, sb := pa.Stats(), pb.Stats()
	// Every byte of the file crossed once: each unit is fetched once, and
	// the last chunk's shard padding is not sent (the asker hashes it).
	if sb.PeerBytes != uint64(len(data)) || sa.ServedBytes != sb.PeerBytes || sb.VerifyFailures != 0 {
		t.Fatalf("first client %+v, second %+v: want every byte served by the first", sa, sb)
	}
	// The second client now holds the chunks too and says so; the
	// tracker answers the first client with it.
	waitFor(t, "the second client to announce", func() bool {
		r, err := rc.meta.P2PPeers(ctx, metaserver.P2PPeersArgs{Chunks: ids[:1], Self: pa.Addr()})
		return err == nil && len(r.Peers[ids[0]]) == 1 && r.Peers[ids[0]][0] == pb.Addr()
	})
}

// gatedPeer starts a fake peer for the chunks of a file written to cl whose
// answers wait until the test closes its gate, and a client reading from it
// that never hedges.
func gatedPeer(t *testing.T, cl *cluster, data []byte) (*fakePeer, *P2P, *Client) {
	t.Helper()
	writeFile(t, cl.client(Options{}), "/f", data).Close()
	fp := &fakePeer{chunks: cl.chunkBytes(t, "/f", data), mode: "gated", gate: make(chan struct{})}
	fp.srv = httptest.NewServer(fp)
	t.Cleanup(fp.srv.Close)
	t.Cleanup(func() {
		if !isClosed(fp.gate) {
			close(fp.gate)
		}
	})
	tr := &fakeTracker{peers: []string{strings.TrimPrefix(fp.srv.URL, "http://")}}
	p := startP2P(t, tr, P2POptions{HedgeAfter: time.Minute, PeerTimeout: time.Minute})
	return fp, p, cl.client(Options{P2P: p, ReadAhead: -1})
}

// flightUsers is how many readers wait on the peer fetch of the unit
// starting at block u of chunk id (-1: none running).
func flightUsers(p *P2P, id metaserver.ChunkID, u int64) int32 {
	p.fmu.Lock()
	defer p.fmu.Unlock()
	f := p.flights[unitKey{id, u}]
	if f == nil || isClosed(f.done) {
		return -1
	}
	return f.users
}

// Reads missing blocks of one shard at the same time share one request to
// the peer; a read that also needs a shard nobody is fetching joins the
// running fetch and asks for the other shard only.
func TestP2PSharedFetch(t *testing.T) {
	cl := newCluster(t, 6)
	data := randBytes(21, 4<<20) // one chunk, four 1 MiB shards of 8 blocks
	fp, p, c := gatedPeer(t, cl, data)
	ch := cl.chunkAt(t, "/f", 0)
	gets := cl.shardGets()

	// Reads in shard 1 (blocks 8 to 15), as readers and read-ahead make
	// them: single blocks, a few bytes, a run across blocks.
	reads := [][2]int64{
		{1<<20 + 0*blockSize, blockSize},
		{1<<20 + 3*blockSize, blockSize},
		{1<<20 + 7*blockSize, blockSize},
		{1<<20 + 100, 10},
		{1<<20 + 2*blockSize + 5, 3 * blockSize},
	}
	var wg sync.WaitGroup
	errs := make([]error, len(reads)+1)
	bufs := make([][]byte, len(reads)+1)
	for i, r := range reads {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bufs[i] = make([]byte, r[1])
			errs[i] = p.fetch(context.Background(), c, ch, bufs[i], r[0])
		}()
	}
	waitFor(t, "every read to wait on one fetch", func() bool { return flightUsers(p, ch.ID, 8) == int32(len(reads)) })
	// Shards 1 and 2: joins the fetch of shard 1, fetches shard 2.
	span := [2]int64{2<<20 - 10, 20}
	reads = append(reads, span)
	wg.Add(1)
	go func() {
		defer wg.Done()
		bufs[len(reads)-1] = make([]byte, span[1])
		errs[len(reads)-1] = p.fetch(context.Background(), c, ch, bufs[len(reads)-1], span[0])
	}()
	waitFor(t, "the spanning read to join", func() bool {
		return flightUsers(p, ch.ID, 8) == int32(len(reads)) && flightUsers(p, ch.ID, 16) == 1
	})
	waitFor(t, "the requests for shards 1 and 2 to reach the peer", func() bool { return fp.hits.Load() == 2 })
	close(fp.gate)
	wg.Wait()
	for i, r := range reads {
		if errs[i] != nil {
			t.Fatalf("read %v: %v", r, errs[i])
		}
		if !bytes.Equal(bufs[i], data[r[0]:r[0]+r[1]]) {
			t.Fatalf("read %v: wrong bytes", r)
		}
	}
	st := p.Stats()
	if n := fp.hits.Load(); n != 2 || st.PeerBytes != 2<<20 || st.PeerBlocks != 16 || cl.shardGets() != gets {
		t.Fatalf("%d requests to the peer, %+v, %d shard reads: want shards 1 and 2 from the peer, once each",
			n, st, cl.shardGets()-gets)
	}
	// What the fetches brought beyond the reads is cached.
	if _, blocks := c.cache.stats(); blocks != 16 {
		t.Fatalf("%d blocks cached, want shards 1 and 2", blocks)
	}
	// A read right after a fetch finished takes its bytes rather than
	// asking again.
	late := make([]byte, blockSize)
	if err := p.fetch(context.Background(), c, ch, late, 1<<20+blockSize); err != nil || !bytes.Equal(late, data[1<<20+blockSize:1<<20+2*blockSize]) {
		t.Fatalf("late read: %v", err)
	}
	if n := fp.hits.Load(); n != 2 {
		t.Fatalf("a read just after the fetch made %d more requests", n-2)
	}
}

// A reader that gives up while a shared fetch runs leaves it running for the
// others; when the last one gives up the fetch is cancelled.
func TestP2PSharedFetchCancel(t *testing.T) {
	cl := newCluster(t, 6)
	data := randBytes(22, 4<<20)
	fp, p, c := gatedPeer(t, cl, data)
	ch := cl.chunkAt(t, "/f", 0)

	type result struct {
		buf []byte
		err error
	}
	start := func(ctx context.Context, from int64) chan result {
		res := make(chan result, 1)
		go func() {
			buf := make([]byte, blockSize)
			err := p.fetch(ctx, c, ch, buf, from)
			res <- result{buf, err}
		}()
		return res
	}
	ctx, cancel := context.WithCancel(context.Background())
	quitter := start(ctx, 0)
	stayers := []chan result{start(context.Background(), blockSize), start(context.Background(), 5*blockSize)}
	waitFor(t, "three readers on the fetch of shard 0", func() bool { return flightUsers(p, ch.ID, 0) == 3 })
	cancel()
	if r := <-quitter; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled reader: %v, want context.Canceled", r.err)
	}
	if n := flightUsers(p, ch.ID, 0); n != 2 {
		t.Fatalf("after one reader left: %d waiting, want 2", n)
	}
	close(fp.gate)
	for i, res := range stayers {
		r := <-res
		from := int64(1+4*i) * blockSize
		if r.err != nil || !bytes.Equal(r.buf, data[from:from+blockSize]) {
			t.Fatalf("reader %d: %v", i, r.err)
		}
	}
	if h, c := fp.hits.Load(), fp.cancelled.Load(); h != 1 || c != 0 {
		t.Fatalf("%d requests, %d cancelled: want one, answered", h, c)
	}

	// Every reader of shard 2 gives up: nobody needs the fetch any more.
	fp.gate = make(chan struct{})
	ctx, cancel = context.WithCancel(context.Background())
	a, b := start(ctx, 2<<20), start(ctx, 2<<20+blockSize)
	waitFor(t, "two readers on the fetch of shard 2", func() bool { return flightUsers(p, ch.ID, 16) == 2 })
	cancel()
	for _, res := range []chan result{a, b} {
		if r := <-res; !errors.Is(r.err, context.Canceled) {
			t.Fatalf("cancelled reader: %v", r.err)
		}
	}
	waitFor(t, "the abandoned fetch to be cancelled", func() bool { return fp.cancelled.Load() == 1 })
	if n := flightUsers(p, ch.ID, 16); n != -1 {
		t.Fatalf("the abandoned fetch is still joinable (%d users)", n)
	}
	// The next reader starts afresh.
	close(fp.gate)
	r := <-start(context.Background(), 2<<20+3*blockSize)
	if r.err != nil || !bytes.Equal(r.buf, data[2<<20+3*blockSize:2<<20+4*blockSize]) {
		t.Fatalf("reader after the abandoned fetch: %v", r.err)
	}
	if st := p.Stats(); st.PeerBytes != 2<<20 || st.VerifyFailures != 0 {
		t.Fatalf("%+v: want shards 0 and 2 from the peer", st)
	}
}

// An answer is used only whole and, with a secret, with its MAC: the fake
// peer sends the right bytes and sum, but no MAC, or cuts the bytes short.
func TestP2PFetchRangeRefuses(t *testing.T) {
	data := randBytes(23, 4*blockSize)
	const id = metaserver.ChunkID(7)
	fp := &fakePeer{chunks: map[metaserver.ChunkID][]byte{id: data}, mode: "right"}
	fp.srv = httptest.NewServer(fp)
	t.Cleanup(fp.srv.Close)
	peer := strings.TrimPrefix(fp.srv.URL, "http://")
	ctx := context.Background()
	open := startP2P(t, &fakeTracker{}, P2POptions{})
	dst := make([]byte, 4*blockSize)
	if err := open.fetchRange(ctx, peer, id, 0, 4, dst); err != nil || !bytes.Equal(dst, data) {
		t.Fatalf("without a secret: %v", err)
	}
	signed := startP2P(t, &fakeTracker{}, P2POptions{Secret: newSecret(t)})
	if err := signed.fetchRange(ctx, peer, id, 0, 4, dst); !errors.Is(err, errVerify) {
		t.Fatalf("answer without a MAC: %v, want errVerify", err)
	}
	// Asking for more than the peer sends (it has 4 blocks, the asker
	// expects 5 whole ones): the answer is short.
	fp.chunks[id] = append(bytes.Clone(data), make([]byte, 100)...)
	if err := open.fetchRange(ctx, peer, id, 0, 5, make([]byte, 5*blockSize)); err == nil {
		t.Fatal("a short answer was taken")
	}
	if err := open.fetchRange(ctx, peer, id, 4, 6, make([]byte, 2*blockSize)); !errors.Is(err, errNotHeld) {
		t.Fatalf("blocks the peer lacks: %v, want errNotHeld", err)
	}
}
