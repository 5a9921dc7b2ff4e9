package chunkserver

import (
	"context"
	"errors"
	"maps"
)

// LocalServer is a chunkserver running in the caller's own process, which a
// Client can reach by calling it instead of sending HTTP over loopback.
// `dockyard serve` runs six chunkservers next to the fs client: every byte of a
// push crossed the loopback twice (client to kernel to server) and was parsed,
// copied and checksummed once more on the way; an in-process call hands the
// caller's buffer straight to the shard store.
//
// The contract is the HTTP API's: a failure the API would answer with a
// status is returned as a *StatusError made by NewStatusError with that
// status, so callers (and errors.Is) cannot tell which way a shard travelled;
// anything else stands for a transport failure, e.g. ErrServerClosed.
//
// In-process calls carry no cluster secret: the secret proves a request came
// from a member of the cluster over the network, and a caller holding the
// server itself already is one.
type LocalServer interface {
	// PutShard stores data as the whole shard name and returns its
	// checksum (Sum). data is only read, and not kept after the call.
	PutShard(ctx context.Context, name string, data []byte) (sum uint64, err error)
	// ReadShard fills p with the shard's bytes from off, or fails: a range
	// past the end of the shard is an error wrapping io.ErrUnexpectedEOF,
	// a block failing its checksum a *StatusError wrapping ErrCorrupt.
	ReadShard(ctx context.Context, name string, p []byte, off int64) error
	// StatShard returns the shard's size and checksum.
	StatShard(ctx context.Context, name string) (ShardInfo, error)
	// DeleteShard removes the shard; a shard that is not there is no error.
	DeleteShard(ctx context.Context, name string) error
}

// LocalBufferedServer is a LocalServer that can also acknowledge a shard
// before it is durable (see Client.PutBuffered). A LocalServer without it
// stores every shard durably, so the Client falls back to PutShard and has
// nothing to Sync there.
type LocalBufferedServer interface {
	LocalServer
	// PutShardBuffered is PutShard, durable only after the next SyncShards.
	PutShardBuffered(ctx context.Context, name string, data []byte) (sum uint64, err error)
	// SyncShards makes every shard PutShardBuffered acknowledged before the
	// call durable; a failure wraps ErrSync.
	SyncShards(ctx context.Context) error
}

// ErrServerClosed is what an in-process chunkserver answers after it was
// closed: the equivalent of a refused connection, so callers pass over it as
// they would over a dead server.
var ErrServerClosed = errors.New("chunkserver closed")

// Attach makes calls to addr go to s directly instead of over HTTP. Other
// processes keep reaching the same server at addr over HTTP; only this
// Client takes the shortcut. Attaching again replaces the earlier server.
func (c *Client) Attach(addr string, s LocalServer) {
	c.localMu.Lock()
	defer c.localMu.Unlock()
	m := make(map[string]LocalServer, len(c.localMap())+1)
	maps.Copy(m, c.localMap())
	m[addr] = s
	c.local.Store(&m)
}

// Detach sends calls to addr over HTTP again; detach a server before closing
// it so callers see it go away as they would a remote one.
func (c *Client) Detach(addr string) {
	c.localMu.Lock()
	defer c.localMu.Unlock()
	if _, ok := c.localMap()[addr]; !ok {
		return
	}
	m := maps.Clone(c.localMap())
	delete(m, addr)
	c.local.Store(&m)
}

// localMap is the current addr -> server table. It is replaced, never
// modified, so the hot path reads it without a lock.
func (c *Client) localMap() map[string]LocalServer {
	if p := c.local.Load(); p != nil {
		return *p
	}
	return nil
}

// localServer returns the in-process server at addr, or nil.
func (c *Client) localServer(addr string) LocalServer { return c.localMap()[addr] }

// Attached reports whether calls to addr go to an in-process server.
func (c *Client) Attached(addr string) bool { return c.localServer(addr) != nil }
