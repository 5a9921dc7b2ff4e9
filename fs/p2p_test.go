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

// getBlock asks a peer server for a block with hc, with a fresh nonce.
func getBlock(t *testing.T, hc *http.Client, p *P2P, path, nonce string) (*http.Response, []byte) {
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
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

func TestP2PServer(t *testing.T) {
	ctx := context.Background()
	cl := newCluster(t, 6)
	writer := cl.client(Options{})
	data := randBytes(1, 5<<20)
	writeFile(t, writer, "/read", data).Close()
	writeFile(t, writer, "/unread", randBytes(2, 1<<20)).Close()

	secret := newSecret(t)
	p := startP2P(t, &fakeTracker{}, P2POptions{Secret: secret})
	c := cl.client(Options{P2P: p, ReadAhead: -1})
	f, err := c.OpenPath(ctx, "/read")
	if err != nil {
		t.Fatal(err)
	}
	// Read block 3 of the first chunk only.
	buf := make([]byte, 1000)
	if _, err := f.ReadAt(buf, 3*blockSize+10); err != nil {
		t.Fatal(err)
	}
	f.Close()
	first := cl.chunkAt(t, "/read", 0).ID
	held := blockPath(blockKey{first, 3})
	const nonce = "0123456789abcdef0123456789abcdef"

	signed := secret.Client(&http.Client{})
	resp, body := getBlock(t, signed, p, held, nonce)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, data[3*blockSize:4*blockSize]) {
		t.Fatalf("held block: HTTP %d, %d bytes", resp.StatusCode, len(body))
	}
	sum := resp.Header.Get(P2PSumHeader)
	if sum != chunkserver.FormatSum(chunkserver.Sum(body)) {
		t.Fatalf("sum header %q", sum)
	}
	if err := secret.Verify(resp.Header.Get(P2PAuthHeader), p2pAnswerMethod, answerSubject(held, nonce, sum), time.Now(), time.Minute); err != nil {
		t.Fatalf("answer MAC: %v", err)
	}
	// The MAC is bound to the request: it does not verify for another
	// nonce.
	if err := secret.Verify(resp.Header.Get(P2PAuthHeader), p2pAnswerMethod, answerSubject(held, strings.Repeat("0", 32), sum), time.Now(), time.Minute); err == nil {
		t.Fatal("answer MAC verified for another request")
	}

	// Without the secret, or with another one, nothing is served.
	for name, hc := range map[string]*http.Client{"unsigned": {}, "other secret": newSecret(t).Client(&http.Client{})} {
		resp, _ := getBlock(t, hc, p, held, nonce)
		if err := clusterauth.CheckResponse("peer", resp); !errors.Is(err, clusterauth.ErrRefused) {
			t.Errorf("%s: HTTP %d, want the cluster's 401", name, resp.StatusCode)
		}
	}
	if resp, _ := getBlock(t, signed, p, held, ""); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("no nonce: HTTP %d, want 400", resp.StatusCode)
	}

	// Blocks not held are 404, and asking for them fetches nothing.
	gets := cl.shardGets()
	unread := cl.chunkAt(t, "/unread", 0).ID
	for _, path := range []string{blockPath(blockKey{first, 4}), blockPath(blockKey{unread, 0}), blockPath(blockKey{first + 1000, 0})} {
		if resp, _ := getBlock(t, signed, p, path, nonce); resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: HTTP %d, want 404", path, resp.StatusCode)
		}
	}
	if got := cl.shardGets(); got != gets {
		t.Errorf("requests for blocks not held made %d shard reads", got-gets)
	}
	for _, path := range []string{"/p2p/blocks/xyz/0", "/p2p/blocks/0000000000000001/-1", "/p2p/blocks/1/0", "/p2p/blocks/0000000000000001/x"} {
		if resp, _ := getBlock(t, signed, p, path, nonce); resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d, want 400", path, resp.StatusCode)
		}
	}
	st := p.Stats()
	if st.ServedBlocks != 1 || st.ServedBytes != blockSize || st.ServedMisses != 3 {
		t.Errorf("stats %+v", st)
	}
}

// fakePeer serves blocks of known chunks, right or in some wrong way.
type fakePeer struct {
	srv    *httptest.Server
	chunks map[metaserver.ChunkID][]byte
	mode   string // "right", "wrong", "slow"
	hits   atomic.Int64
}

func (fp *fakePeer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	fp.hits.Add(1)
	var chunk, block string
	if rest, ok := strings.CutPrefix(r.URL.Path, "/p2p/blocks/"); ok {
		chunk, block, _ = strings.Cut(rest, "/")
	}
	k, err := parseBlockPath(chunk, block)
	data, ok := fp.chunks[k.chunk]
	if err != nil || !ok || k.idx*blockSize >= int64(len(data)) {
		http.NotFound(w, r)
		return
	}
	b := bytes.Clone(data[k.idx*blockSize : min((k.idx+1)*blockSize, int64(len(data)))])
	switch fp.mode {
	case "wrong":
		// Wrong bytes with a sum that matches them: only the chunk
		// map can tell.
		b[len(b)/3] ^= 0x40
	case "slow":
		select {
		case <-time.After(20 * time.Second):
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set(P2PSumHeader, chunkserver.FormatSum(chunkserver.Sum(b)))
	w.Write(b)
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
				// At least the file: a fetch brings whole data shards,
				// and two misses in one shard at once may both fetch it.
				if fromShards != 0 || st.PeerBytes < uint64(len(data)) || st.VerifyFailures != 0 {
					t.Fatalf("%d shard reads, %d bytes from the peer: want everything from the peer", fromShards, st.PeerBytes)
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
	// A peer fetch brings whole data shards, and two misses in one shard at
	// once may both fetch it, so the bytes counted may pass the file's
	// size; both sides count the same.
	if sb.PeerBytes < uint64(len(data)) || sa.ServedBytes != sb.PeerBytes || sb.VerifyFailures != 0 {
		t.Fatalf("first client %+v, second %+v: want every byte served by the first", sa, sb)
	}
	// The second client now holds the chunks too and says so; the
	// tracker answers the first client with it.
	waitFor(t, "the second client to announce", func() bool {
		r, err := rc.meta.P2PPeers(ctx, metaserver.P2PPeersArgs{Chunks: ids[:1], Self: pa.Addr()})
		return err == nil && len(r.Peers[ids[0]]) == 1 && r.Peers[ids[0]][0] == pb.Addr()
	})
}
