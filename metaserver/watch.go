package metaserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/dockyard/dockyard/internal/clusterauth"
)

// The change feed: every metaserver keeps, in memory, a bounded ring of the
// namespace changes it applied, each stamped with the Raft index of its
// entry. A client that caches metadata asks for the changes after the last
// index it has seen and applies them to its cache; see docs/metaserver-api.md
// ("Change feed").

// Change kinds.
const (
	// ChangeAttr: inode Ino has new attributes (Attr), or is gone (Attr nil).
	ChangeAttr = "attr"
	// ChangeEntry: name Name in directory Ino now names inode Child, or
	// nothing (Child 0).
	ChangeEntry = "entry"
	// ChangeDir: any number of names in directory Ino changed (a CreateTree
	// batch); a cache forgets every name it holds in it.
	ChangeDir = "dir"
)

// Change is one entry of the change feed.
type Change struct {
	// Index orders the change against reads: a state that applied Index
	// reflects it. It is the Raft index of the entry that made the change,
	// or (rarely) a later index; never an earlier one.
	Index uint64 `json:"index"`
	Kind  string `json:"kind"`
	Ino   Ino    `json:"ino"`
	Name  string `json:"name,omitempty"`
	Child Ino    `json:"child,omitempty"`
	Attr  *Attr  `json:"attr,omitempty"`
	// Origin is the id of the client whose request made the change
	// (Client.ID), empty for the metaserver's own commands. A client tells
	// its own changes from others' by it: a FUSE mount tells the kernel
	// only about changes the kernel did not make itself.
	Origin string `json:"origin,omitempty"`
}

// ID is the client's random id, the first part of its request ids and the
// Origin of the changes its mutations make.
func (c *Client) ID() string { return c.clientID }

// OriginOf returns the client id part of a request id (client id, "-",
// counter).
func OriginOf(reqID string) string {
	if i := strings.LastIndexByte(reqID, '-'); i >= 0 {
		return reqID[:i]
	}
	return reqID
}

// WatchReply answers Watch.
type WatchReply struct {
	// Applied is how far the answering node's feed goes: every change with
	// an index up to Applied is in Changes or was in an earlier reply. The
	// next call passes it as since.
	Applied uint64 `json:"applied"`
	// Reset means since fell off the node's ring (or the node replaced its
	// state from a snapshot): changes were lost, and a cache must drop
	// everything and start over from Applied.
	Reset   bool     `json:"reset,omitempty"`
	Changes []Change `json:"changes,omitempty"`
}

// Watcher is what serves the change feed: the HTTP client (through
// Client.Watch) and in-process metaservers.
type Watcher interface {
	// Watch returns the changes with an index above since, waiting up to
	// wait for one when there is none yet. Any node answers, leader or
	// follower, from what it has applied; a follower that lost touch with
	// its leader answers ErrUnavailable rather than a feed that stopped.
	Watch(ctx context.Context, since uint64, wait time.Duration) (WatchReply, error)
}

// ErrNoFeed is returned by Client.Watch when the client runs over an
// executor that serves no change feed.
var ErrNoFeed = errors.New("metaserver: no change feed on this connection")

// MaxWatchWait bounds the wait of one Watch call; servers cap longer waits to it.
const MaxWatchWait = 30 * time.Second

// WatchPath is the HTTP path of the change feed: GET WatchPath?since=N&wait=MS.
const WatchPath = "/v1/watch"

// Watch implements Watcher: in process when the executor serves a feed
// itself, else one long poll to one metaserver (the leader when known). A
// failed call is not retried here: the caller's loop decides (a cache
// drops itself and starts over).
func (c *Client) Watch(ctx context.Context, since uint64, wait time.Duration) (WatchReply, error) {
	switch e := c.exec.(type) {
	case Watcher:
		return e.Watch(ctx, since, wait)
	case *httpExecutor:
		return e.watch(ctx, since, wait)
	}
	return WatchReply{}, ErrNoFeed
}

func (h *httpExecutor) watch(ctx context.Context, since uint64, wait time.Duration) (WatchReply, error) {
	wait = min(max(wait, 0), MaxWatchWait)
	base := h.target()
	// The server holds the request for up to wait; the attempt timeout
	// covers the answer on top of that.
	actx, cancel := context.WithTimeout(ctx, wait+max(h.attemptTimeout, time.Second))
	defer cancel()
	q := url.Values{"since": {strconv.FormatUint(since, 10)}, "wait": {strconv.FormatInt(wait.Milliseconds(), 10)}}
	req, err := http.NewRequestWithContext(actx, http.MethodGet, base+WatchPath+"?"+q.Encode(), nil)
	if err != nil {
		return WatchReply{}, fmt.Errorf("watch: %w", err)
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			h.failed(base) // try another node next time
		}
		return WatchReply{}, fmt.Errorf("watch %s: %w: %w", base, ErrUnavailable, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return WatchReply{}, fmt.Errorf("watch %s: reading reply: %w: %w", base, ErrUnavailable, err)
	}
	if resp.StatusCode != http.StatusOK {
		if err := clusterauth.CheckResponse("metaserver "+strings.TrimPrefix(base, "http://"), resp); err != nil {
			return WatchReply{}, fmt.Errorf("watch: %w", err)
		}
		var env struct {
			Error *WireError `json:"error"`
		}
		if json.Unmarshal(body, &env) != nil || env.Error == nil {
			h.failed(base)
			return WatchReply{}, fmt.Errorf("watch %s: %w: HTTP %d: %.200s", base, ErrUnavailable, resp.StatusCode, body)
		}
		if env.Error.Kind == KindUnavailable {
			h.failed(base)
		}
		return WatchReply{}, fmt.Errorf("watch %s: %w", base, env.Error.Err())
	}
	var r WatchReply
	if err := json.Unmarshal(body, &r); err != nil {
		return WatchReply{}, fmt.Errorf("watch %s: decoding reply: %w", base, err)
	}
	return r, nil
}
