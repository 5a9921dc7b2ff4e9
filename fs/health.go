package fs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
)

// ErrServerDown is what a shard request gives, without being sent, when its
// chunkserver failed to answer moments ago.
var ErrServerDown = errors.New("chunkserver did not answer recently; not asked")

// downFor is how long a chunkserver that failed to answer is passed over.
// A dead server on a real network costs a connect timeout per request; for
// this long reads go straight to the other shards and writes to another
// placement, until the metaserver has noticed the missed heartbeats.
const downFor = 5 * time.Second

// serverHealth remembers chunkservers that failed to answer at all (as
// opposed to answering with an error), per client.
type serverHealth struct {
	mu    sync.Mutex
	until map[string]time.Time
}

func (h *serverHealth) isDown(addr string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	t, ok := h.until[addr]
	if ok && time.Now().After(t) {
		delete(h.until, addr)
		return false
	}
	return ok
}

// note records the outcome of a request to addr: a server that answered is
// up; one that could not be reached or timed out is down for a while. Our
// own cancellations (a hedge that won) say nothing about the server.
func (h *serverHealth) note(addr string, err error) {
	var se *chunkserver.StatusError
	switch {
	case err == nil, errors.As(err, &se), errors.Is(err, chunkserver.ErrNotFound),
		errors.Is(err, chunkserver.ErrCorrupt), errors.Is(err, chunkserver.ErrNoSpace):
		h.mu.Lock()
		delete(h.until, addr)
		h.mu.Unlock()
	case errors.Is(err, context.Canceled):
	default:
		h.markDown(addr)
	}
}

func errDown(addr, name string) error {
	return fmt.Errorf("chunkserver %s: shard %s: %w", addr, name, ErrServerDown)
}

// markDown passes over addr for a while: it failed to answer in time.
func (h *serverHealth) markDown(addr string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.until == nil {
		h.until = map[string]time.Time{}
	}
	h.until[addr] = time.Now().Add(downFor)
}
