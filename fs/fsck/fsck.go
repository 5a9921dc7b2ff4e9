// Package fsck checks that every byte the namespace references is stored with
// full redundancy: it walks the tree, asks each chunkserver for each shard of
// each referenced chunk, and (with Fix) reports bad shards to the metaserver,
// which schedules their repair. It reads the namespace and the chunkservers
// through their clients only, so it runs from any machine.
package fsck

import (
	"context"
	"errors"
	"fmt"
	"path"
	"sort"
	"sync"
	"syscall"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/metaserver"
)

// Options tune a check.
type Options struct {
	// Deep reads every shard in full, so the chunkserver verifies each block
	// checksum; otherwise only presence, size and recorded checksum are compared.
	Deep bool
	// Fix reports every missing or corrupt shard to the metaserver, which
	// schedules its rebuild.
	Fix bool
	// Parallel shard checks in flight (default 16).
	Parallel int
	// Progress, if set, is called after each chunk with chunks checked so far.
	Progress func(checked int)
}

// Problem is one shard that is not as the metaserver records it.
type Problem struct {
	Chunk  metaserver.ChunkID  `json:"chunk"`
	Index  int                 `json:"index"`
	Server metaserver.ServerID `json:"server"`
	Addr   string              `json:"addr"`
	Reason string              `json:"reason"`
	Paths  []string            `json:"paths,omitempty"` // files using the chunk (first few)
}

// Report is the result of a check.
type Report struct {
	Dirs     int       `json:"dirs"`
	Files    int       `json:"files"`
	Bytes    uint64    `json:"bytes"`
	Chunks   int       `json:"chunks"`
	Shards   int       `json:"shards"`
	Healthy  int       `json:"healthy"`  // chunks with every shard good
	Degraded int       `json:"degraded"` // chunks readable, but some shard bad
	Lost     int       `json:"lost"`     // chunks with fewer than k good shards
	Problems []Problem `json:"problems,omitempty"`
	Reported int       `json:"reported"` // problems handed to the metaserver (Fix)
	// Dangling lists files whose extents or layer reference something the
	// metaserver does not know.
	Dangling []string `json:"dangling,omitempty"`
}

// Clean reports whether nothing needs attention.
func (r *Report) Clean() bool {
	return r.Degraded == 0 && r.Lost == 0 && len(r.Dangling) == 0
}

// Check walks the namespace from the root.
func Check(ctx context.Context, meta metaserver.API, shards *chunkserver.Client, o Options) (*Report, error) {
	if o.Parallel <= 0 {
		o.Parallel = 16
	}
	r := &Report{}
	users := map[metaserver.ChunkID][]string{}
	if err := walk(ctx, meta, metaserver.RootIno, "/", r, users); err != nil {
		return r, err
	}
	ids := make([]metaserver.ChunkID, 0, len(users))
	for id := range users {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })

	var (
		mu   sync.Mutex
		wg   sync.WaitGroup
		sem  = make(chan struct{}, o.Parallel)
		ferr error
	)
	for _, id := range ids {
		c, err := meta.GetChunk(ctx, id)
		if errors.Is(err, syscall.ENOENT) {
			r.Dangling = append(r.Dangling, fmt.Sprintf("%s: chunk %d is not in the chunk table", first(users[id]), id))
			continue
		}
		if err != nil {
			return r, fmt.Errorf("chunk %d: %w", id, err)
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			probs := checkChunk(ctx, shards, c, o.Deep)
			good := len(c.Shards) - len(probs)
			need := c.K
			if c.Replicated {
				need = 1
			}
			mu.Lock()
			defer mu.Unlock()
			r.Chunks++
			r.Shards += len(c.Shards)
			switch {
			case good < need:
				r.Lost++
			case len(probs) > 0 || len(c.Shards) < c.K+c.M:
				r.Degraded++
			default:
				r.Healthy++
			}
			for i := range probs {
				probs[i].Paths = users[id]
			}
			r.Problems = append(r.Problems, probs...)
			if o.Progress != nil {
				o.Progress(r.Chunks)
			}
		}()
	}
	wg.Wait()
	sort.Slice(r.Problems, func(i, j int) bool {
		a, b := r.Problems[i], r.Problems[j]
		return a.Chunk < b.Chunk || a.Chunk == b.Chunk && a.Index < b.Index
	})
	if o.Fix {
		for _, p := range r.Problems {
			if err := meta.ReportBadShard(ctx, p.Chunk, p.Index, "fsck: "+p.Reason); err != nil {
				ferr = errors.Join(ferr, fmt.Errorf("reporting chunk %d shard %d: %w", p.Chunk, p.Index, err))
				continue
			}
			r.Reported++
		}
	}
	return r, ferr
}

func first(s []string) string {
	if len(s) == 0 {
		return "?"
	}
	return s[0]
}

// walk visits dir and below, collecting the chunks each file uses.
func walk(ctx context.Context, meta metaserver.API, dir metaserver.Ino, dirPath string, r *Report, users map[metaserver.ChunkID][]string) error {
	r.Dirs++
	after := ""
	for {
		ents, err := meta.ReadDir(ctx, dir, after, 1024, false)
		if err != nil {
			return fmt.Errorf("listing %s: %w", dirPath, err)
		}
		for _, e := range ents {
			p := path.Join(dirPath, e.Name)
			switch e.Mode & syscall.S_IFMT {
			case syscall.S_IFDIR:
				if err := walk(ctx, meta, e.Ino, p, r, users); err != nil {
					return err
				}
			case syscall.S_IFREG:
				in, err := meta.GetInode(ctx, e.Ino)
				if errors.Is(err, syscall.ENOENT) {
					continue // removed while we walked
				}
				if err != nil {
					return fmt.Errorf("reading %s: %w", p, err)
				}
				r.Files++
				r.Bytes += in.Size
				if in.Layer != nil {
					if _, err := meta.GetAttr(ctx, in.Layer.Blob); errors.Is(err, syscall.ENOENT) {
						r.Dangling = append(r.Dangling, fmt.Sprintf("%s: layer blob inode %d (%s) is gone", p, in.Layer.Blob, in.Layer.Digest))
					}
				}
				for _, x := range in.Extents {
					// Keep the first few files per chunk, to name them in problems.
					if u := users[x.Chunk]; len(u) == 0 || len(u) < 3 && u[len(u)-1] != p {
						users[x.Chunk] = append(u, p)
					}
				}
			}
		}
		if len(ents) < 1024 {
			return nil
		}
		after = ents[len(ents)-1].Name
	}
}

// checkChunk returns the shards of c that are missing, short or corrupt.
func checkChunk(ctx context.Context, shards *chunkserver.Client, c metaserver.Chunk, deep bool) []Problem {
	var probs []Problem
	for _, s := range c.Shards {
		name := metaserver.ShardName(c.ID, s.Index)
		bad := func(reason string) {
			probs = append(probs, Problem{Chunk: c.ID, Index: s.Index, Server: s.Server, Addr: s.Addr, Reason: reason})
		}
		info, err := shards.Stat(ctx, s.Addr, name)
		switch {
		case errors.Is(err, chunkserver.ErrNotFound):
			bad("missing")
			continue
		case err != nil:
			bad("unreachable: " + err.Error())
			continue
		case info.Size != c.ShardSize:
			bad(fmt.Sprintf("size %d, want %d", info.Size, c.ShardSize))
			continue
		case s.Sum != 0 && info.Sum != s.Sum:
			bad(fmt.Sprintf("checksum %016x, want %016x", info.Sum, s.Sum))
			continue
		}
		if deep {
			buf := make([]byte, info.Size)
			if _, err := shards.ReadAt(ctx, s.Addr, name, buf, 0); err != nil {
				if errors.Is(err, chunkserver.ErrCorrupt) {
					bad("corrupt block")
				} else {
					bad("read failed: " + err.Error())
				}
				continue
			}
			if s.Sum != 0 && chunkserver.Sum(buf) != s.Sum {
				bad("content checksum mismatch")
			}
		}
	}
	return probs
}
