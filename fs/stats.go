package fs

import "sync/atomic"

// ReadStats counts what the read path of one or more clients did: where the
// bytes came from and what went wrong. P2P has its own (P2PStats).
type ReadStats struct {
	// CacheHits counts the blocks a read found in the memory block cache,
	// CacheMisses those it did not (fetched, or joined a fetch in flight).
	CacheHits, CacheMisses uint64
	// CacheBytes is what the memory block caches hold now.
	CacheBytes int64
	// ShardBytes counts the bytes read from chunkservers, rebuilds
	// included; LocalShardBytes the part of them read from chunkservers on
	// this host (in the process, or through their short-circuit sockets).
	ShardBytes, LocalShardBytes uint64
	// ShardErrors counts shard reads that failed (not those given up
	// because another answer came first).
	ShardErrors uint64
	// DegradedReads counts the reads whose bytes were rebuilt from other
	// shards, parity among them, because a shard failed or was slow.
	DegradedReads uint64
	// ReadErrors counts the chunk reads that failed, even after asking the
	// metaserver for fresh shard locations: each is an error to a reader.
	ReadErrors uint64
}

// Counters are the read counters of clients. Every Client has some; clients
// given the same Counters (Options.Counters) add to them, so a process that
// runs several clients for one purpose (an image mount runs three) reports
// them as one. The zero value is ready.
type Counters struct {
	cacheHits, cacheMisses            atomic.Uint64
	cacheBytes                        atomic.Int64
	shardBytes, localShardBytes       atomic.Uint64
	shardErrors, degraded, readErrors atomic.Uint64
}

// Stats returns the counts so far.
func (c *Counters) Stats() ReadStats {
	return ReadStats{
		CacheHits: c.cacheHits.Load(), CacheMisses: c.cacheMisses.Load(), CacheBytes: c.cacheBytes.Load(),
		ShardBytes: c.shardBytes.Load(), LocalShardBytes: c.localShardBytes.Load(),
		ShardErrors: c.shardErrors.Load(), DegradedReads: c.degraded.Load(), ReadErrors: c.readErrors.Load(),
	}
}

// Stats returns the read counters this client adds to, shared with the
// clients given the same Options.Counters.
func (c *Client) Stats() ReadStats { return c.ctr.Stats() }

// P2P is the peer-to-peer delivery this client takes part in, nil when it
// does not.
func (c *Client) P2P() *P2P { return c.p2p }
