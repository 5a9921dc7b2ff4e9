package fs

import (
	"net/http"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/metaserver"
)

// The peer server answers GET /p2p/blocks/{chunk}/{first}-{last} (chunk in
// 16 hex digits, first and last the indexes of blockSize pieces of the
// chunk's data, the block cache's keys, inclusive) with those blocks one
// after the other, from the memory or disk block cache of any client
// attached to this P2P, or 404 when it lacks any of them. A range going past
// the chunk's end lacks blocks. It never fetches: a peer's request costs the
// chunkservers nothing, so no host can be made to pull data on another's
// behalf.
//
// The answer's xxhash64 over all its bytes (P2PSumHeader) and, with a cluster
// secret, its MAC over the request URI, the asker's nonce and that sum
// (P2PAuthHeader) come as trailers: blocks from the disk cache are streamed,
// not read whole before the first byte goes out. With a secret the
// middleware refuses requests without the cluster credential (401), so the
// asker knows a holder of the secret sent these bytes for this very request.

func (p *P2P) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /p2p/blocks/{chunk}/{blocks}", p.serveBlocks)
	return mux
}

func (p *P2P) serveBlocks(w http.ResponseWriter, r *http.Request) {
	id, first, last, err := parseRangePath(r.PathValue("chunk"), r.PathValue("blocks"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	nonce := r.Header.Get(P2PNonceHeader)
	if p.opt.Secret != nil && !validNonce(nonce) {
		http.Error(w, P2PNonceHeader+" must be 32 hex digits", http.StatusBadRequest)
		return
	}
	src, ok := p.heldRange(id, first, last)
	defer src.release()
	if !ok {
		p.st.servedMisses.Add(1)
		http.Error(w, "blocks not held here", http.StatusNotFound)
		return
	}
	h := w.Header()
	d := xxhash.New()
	var sent int64
	for i := range src.blocks {
		b, ok := src.block(i)
		// Every block but the last is whole; a short one means the
		// range runs past the chunk's end, which a right asker never
		// asks. Cutting the answer short makes the asker drop it.
		if !ok || (i < len(src.blocks)-1 && len(b) != blockSize) {
			if sent == 0 {
				http.Error(w, "blocks not held here", http.StatusNotFound)
				p.st.servedMisses.Add(1)
				return
			}
			panic(http.ErrAbortHandler)
		}
		if i == 0 {
			h.Set("Trailer", P2PSumHeader+", "+P2PAuthHeader)
			h.Set("Content-Type", "application/octet-stream")
		}
		_, _ = d.Write(b)
		if _, err := w.Write(b); err != nil {
			return // the asker went away
		}
		sent += int64(len(b))
	}
	sum := chunkserver.FormatSum(d.Sum64())
	h.Set(P2PSumHeader, sum)
	if s := p.opt.Secret; s != nil {
		uri := r.RequestURI
		if uri == "" {
			uri = r.URL.RequestURI()
		}
		cred, err := s.Credential(p2pAnswerMethod, answerSubject(uri, nonce, sum), time.Now())
		if err != nil {
			panic(http.ErrAbortHandler) // the asker drops an answer without its MAC
		}
		h.Set(P2PAuthHeader, cred)
	}
	p.st.servedBlocks.Add(uint64(len(src.blocks)))
	p.st.servedBytes.Add(uint64(sent))
}

func validNonce(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// heldBlocks are the blocks of one answer: from a memory cache (with a
// reference to the slab, so it is not recycled while being written out) or
// from a disk cache, read when its turn comes.
type heldBlocks struct {
	blocks []heldBlock
}

type heldBlock struct {
	key  blockKey
	data []byte
	slab *slab
	disk *diskCache
}

// block returns block i, reading it from disk if that is where it is; false
// when it is gone from there meanwhile.
func (h *heldBlocks) block(i int) ([]byte, bool) {
	b := h.blocks[i]
	if b.disk == nil {
		return b.data, true
	}
	return b.disk.get(b.key)
}

func (h *heldBlocks) release() {
	for _, b := range h.blocks {
		b.slab.release()
	}
}

// heldRange finds blocks first to last of a chunk in the caches of the
// attached clients, memory first; false when one of them is in none.
func (p *P2P) heldRange(id metaserver.ChunkID, first, last int64) (*heldBlocks, bool) {
	clients := p.attached()
	h := &heldBlocks{blocks: make([]heldBlock, 0, last-first+1)}
next:
	for i := first; i <= last; i++ {
		k := blockKey{id, i}
		for _, c := range clients {
			bc := c.cache
			bc.mu.Lock()
			b, sl, ok := bc.lookupLocked(k, true)
			bc.mu.Unlock()
			if ok {
				h.blocks = append(h.blocks, heldBlock{key: k, data: b, slab: sl})
				continue next
			}
		}
		for _, c := range clients {
			if c.disk != nil && c.disk.has(k) {
				h.blocks = append(h.blocks, heldBlock{key: k, disk: c.disk})
				continue next
			}
		}
		return h, false
	}
	return h, true
}
