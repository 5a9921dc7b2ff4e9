package fs

import "github.com/dockyard/dockyard/metaserver"

// The chunk layout, shared with the chunkservers' repair: a chunk of Size data
// bytes is zero-padded to K*ShardSize and split contiguously, so data byte x
// lives in data shard x/ShardSize at offset x%ShardSize; parity shards K..K+M-1
// come from reedsolomon.New(K, M).Encode. Because Reed-Solomon works column by
// column, the same byte range of any K shards rebuilds that range of the others,
// which is what lets a degraded read fetch only what it needs. A replicated
// chunk (K=1) keeps a full copy in every one of its M+1 shards.

// shardSizeFor is the length of each shard of a chunk of size data bytes.
func shardSizeFor(size int64, k int) int64 {
	return (size + int64(k) - 1) / int64(k)
}

// piece is the part of one shard a read needs: shard-local bytes [lo, hi),
// destined for dst (len hi-lo).
type piece struct {
	idx    int
	lo, hi int64
	dst    []byte
}

// dataPieces splits the chunk data range [a, a+len(dst)) over the data shards
// holding it.
func dataPieces(ch *metaserver.Chunk, a int64, dst []byte) []piece {
	ss := ch.ShardSize
	b := a + int64(len(dst))
	var ps []piece
	for x := a; x < b; {
		idx := x / ss
		end := min((idx+1)*ss, b)
		ps = append(ps, piece{idx: int(idx), lo: x - idx*ss, hi: end - idx*ss, dst: dst[x-a : end-a]})
		x = end
	}
	return ps
}

// span is a half-open byte range.
type span struct{ lo, hi int64 }

// addSpan inserts [lo, hi) into a sorted list of disjoint spans, merging
// touching ones.
func addSpan(spans []span, lo, hi int64) []span {
	out := make([]span, 0, len(spans)+1)
	i := 0
	for ; i < len(spans) && spans[i].hi < lo; i++ {
		out = append(out, spans[i])
	}
	for ; i < len(spans) && spans[i].lo <= hi; i++ {
		lo = min(lo, spans[i].lo)
		hi = max(hi, spans[i].hi)
	}
	out = append(out, span{lo, hi})
	return append(out, spans[i:]...)
}

// spliceExtent writes e into the sorted, non-overlapping list exts, cutting
// away what it overlaps — the same rule the metaserver applies on commit, so
// the client's view of a file matches what it will commit.
func spliceExtent(exts []metaserver.Extent, e metaserver.Extent) []metaserver.Extent {
	eEnd := e.Off + e.Len
	out := make([]metaserver.Extent, 0, len(exts)+2)
	inserted := false
	for _, x := range exts {
		xEnd := x.Off + x.Len
		if xEnd <= e.Off || x.Off >= eEnd {
			if !inserted && x.Off >= eEnd {
				out = append(out, e)
				inserted = true
			}
			out = append(out, x)
			continue
		}
		if x.Off < e.Off {
			out = append(out, metaserver.Extent{Off: x.Off, Len: e.Off - x.Off, Chunk: x.Chunk, ChunkOff: x.ChunkOff})
		}
		if !inserted {
			out = append(out, e)
			inserted = true
		}
		if xEnd > eEnd {
			out = append(out, metaserver.Extent{Off: eEnd, Len: xEnd - eEnd, Chunk: x.Chunk, ChunkOff: x.ChunkOff + (eEnd - x.Off)})
		}
	}
	if !inserted {
		out = append(out, e)
	}
	return out
}
