package fs

import (
	"net/http"
	"strconv"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
)

// The peer server answers GET /p2p/blocks/{chunk}/{block} (chunk in 16 hex
// digits, block the index of a blockSize piece of the chunk's data: the
// block cache's key) with the block, from the memory or disk block cache of
// any client attached to this P2P, or 404 when none holds it. It never
// fetches: a peer's request costs the chunkservers nothing, so no host can be
// made to pull data on another's behalf.
//
// With a cluster secret the middleware refuses requests without the cluster
// credential (401), and every answer carries a MAC (P2PAuthHeader) over the
// request URI, the asker's nonce and the block's xxhash64 (P2PSumHeader), so
// the asker knows a holder of the secret sent it for this very request.

func (p *P2P) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /p2p/blocks/{chunk}/{block}", p.serveBlock)
	return mux
}

func (p *P2P) serveBlock(w http.ResponseWriter, r *http.Request) {
	k, err := parseBlockPath(r.PathValue("chunk"), r.PathValue("block"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	nonce := r.Header.Get(P2PNonceHeader)
	if p.opt.Secret != nil && !validNonce(nonce) {
		http.Error(w, P2PNonceHeader+" must be 32 hex digits", http.StatusBadRequest)
		return
	}
	b, release, ok := p.held(k)
	if !ok {
		p.st.servedMisses.Add(1)
		http.Error(w, "block not held here", http.StatusNotFound)
		return
	}
	defer release()
	sum := chunkserver.FormatSum(chunkserver.Sum(b))
	h := w.Header()
	h.Set(P2PSumHeader, sum)
	if s := p.opt.Secret; s != nil {
		uri := r.RequestURI
		if uri == "" {
			uri = r.URL.RequestURI()
		}
		cred, err := s.Credential(p2pAnswerMethod, answerSubject(uri, nonce, sum), time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		h.Set(P2PAuthHeader, cred)
	}
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	if _, err := w.Write(b); err == nil {
		p.st.servedBlocks.Add(1)
		p.st.servedBytes.Add(uint64(len(b)))
	}
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

// held returns a block from the caches of the attached clients, memory
// first, and a function to call once it is written out (a cached block's
// slab must not be recycled meanwhile).
func (p *P2P) held(k blockKey) ([]byte, func(), bool) {
	clients := p.attached()
	for _, c := range clients {
		bc := c.cache
		bc.mu.Lock()
		b, sl, ok := bc.lookupLocked(k, true)
		bc.mu.Unlock()
		if ok {
			return b, sl.release, true
		}
	}
	for _, c := range clients {
		if c.disk == nil || !c.disk.has(k) {
			continue
		}
		if b, ok := c.disk.get(k); ok {
			return b, func() {}, true
		}
	}
	return nil, nil, false
}
