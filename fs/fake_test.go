package fs

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/internal/testwait"
	"github.com/dockyard/dockyard/metaserver"
)

// fakeShards is a chunkserver speaking the shard HTTP API from memory. Like
// the real one it checks a shard against the checksum it was stored with on
// every read and answers 500 + "X-Dockyard-Error: corrupt" instead of bad
// bytes, and 507 when full.
type fakeShards struct {
	t   testing.TB
	srv *httptest.Server

	mu     sync.Mutex
	shards map[string][]byte
	sums   map[string]uint64
	full   bool
	delay  time.Duration
	// putDelay holds every PUT this long before storing it, like a
	// stalled disk.
	putDelay time.Duration
	gets     int
	hits     int // every request, answered or not
	dead     bool
	// down makes the server drop every connection without an answer, like
	// a crashed process, until it is cleared.
	down bool
}

func newFakeShards(t testing.TB) *fakeShards {
	fs := &fakeShards{t: t, shards: map[string][]byte{}, sums: map[string]uint64{}}
	fs.srv = httptest.NewServer(http.HandlerFunc(fs.serve))
	t.Cleanup(fs.kill)
	return fs
}

func (s *fakeShards) addr() string { return strings.TrimPrefix(s.srv.URL, "http://") }

// kill stops the server: connections are cut and new ones refused.
func (s *fakeShards) kill() {
	s.mu.Lock()
	dead := s.dead
	s.dead = true
	s.mu.Unlock()
	if !dead {
		s.srv.CloseClientConnections()
		s.srv.Close()
	}
}

func (s *fakeShards) setFull(v bool) { s.mu.Lock(); s.full = v; s.mu.Unlock() }

func (s *fakeShards) setDown(v bool) { s.mu.Lock(); s.down = v; s.mu.Unlock() }

func (s *fakeShards) setDelay(d time.Duration) { s.mu.Lock(); s.delay = d; s.mu.Unlock() }

func (s *fakeShards) names() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for n := range s.shards {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// flip damages a stored shard the way bit rot on disk would.
func (s *fakeShards) flip(name string, at int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.shards[name][at] ^= 0xff
}

func (s *fakeShards) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	down := s.down
	s.hits++
	s.mu.Unlock()
	if down {
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
		return
	}
	name, ok := strings.CutPrefix(r.URL.Path, "/shards/")
	if !ok || !chunkserver.ValidName(name) {
		http.Error(w, "bad name", http.StatusBadRequest)
		return
	}
	switch r.Method {
	case http.MethodPut:
		data, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		putDelay := s.putDelay
		s.mu.Unlock()
		if putDelay > 0 {
			// With the body read, the server notices the client hanging up
			// and cancels the request's context.
			select {
			case <-time.After(putDelay):
			case <-r.Context().Done():
				return
			}
		}
		sum := chunkserver.Sum(data)
		if h := r.Header.Get(chunkserver.HeaderSum); h != "" && h != chunkserver.FormatSum(sum) {
			w.Header().Set(chunkserver.HeaderError, chunkserver.ErrorSum)
			http.Error(w, "sum mismatch", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		if s.full {
			s.mu.Unlock()
			w.Header().Set(chunkserver.HeaderError, chunkserver.ErrorNoSpace)
			http.Error(w, "disk full", http.StatusInsufficientStorage)
			return
		}
		s.shards[name], s.sums[name] = data, sum
		s.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		json.NewEncoder(w).Encode(chunkserver.PutReply{Sum: chunkserver.FormatSum(sum), Size: int64(len(data))})
	case http.MethodGet:
		s.mu.Lock()
		data, ok := s.shards[name]
		bad := ok && chunkserver.Sum(data) != s.sums[name]
		delay := s.delay
		s.gets++
		s.mu.Unlock()
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		switch {
		case !ok:
			http.Error(w, "no such shard", http.StatusNotFound)
			return
		case bad:
			w.Header().Set(chunkserver.HeaderError, chunkserver.ErrorCorrupt)
			http.Error(w, "checksum failure", http.StatusInternalServerError)
			return
		}
		from, to := int64(0), int64(len(data))-1
		if rg := r.Header.Get("Range"); rg != "" {
			a, b, _ := strings.Cut(strings.TrimPrefix(rg, "bytes="), "-")
			from, _ = strconv.ParseInt(a, 10, 64)
			to, _ = strconv.ParseInt(b, 10, 64)
			if from >= int64(len(data)) || to >= int64(len(data)) || from > to {
				http.Error(w, "range", http.StatusRequestedRangeNotSatisfiable)
				return
			}
		}
		w.Header().Set("Content-Length", strconv.FormatInt(to-from+1, 10))
		w.WriteHeader(http.StatusPartialContent)
		w.Write(data[from : to+1])
	case http.MethodDelete:
		s.mu.Lock()
		delete(s.shards, name)
		delete(s.sums, name)
		s.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	default:
		http.Error(w, "method", http.StatusMethodNotAllowed)
	}
}

// fakeMeta is an in-memory metaserver with the methods the fs client uses;
// the rest of metaserver.API panics if called. Placement rotates over the
// servers not marked down, so a retried allocation lands elsewhere.
type fakeMeta struct {
	metaserver.API

	mu        sync.Mutex
	nextIno   metaserver.Ino
	inodes    map[metaserver.Ino]*metaserver.Inode
	dirs      map[metaserver.Ino]map[string]metaserver.Ino
	chunks    map[metaserver.ChunkID]*metaserver.Chunk
	nextChunk metaserver.ChunkID
	servers   []string
	down      map[string]bool
	rot       int
	reports   []string
	commits   int
	allocs    int
	committed map[metaserver.ChunkID]bool
	abandoned []metaserver.ChunkID
}

func newFakeMeta(servers []string) *fakeMeta {
	m := &fakeMeta{
		nextIno: metaserver.RootIno + 1,
		inodes:  map[metaserver.Ino]*metaserver.Inode{},
		dirs:    map[metaserver.Ino]map[string]metaserver.Ino{metaserver.RootIno: {}},
		chunks:  map[metaserver.ChunkID]*metaserver.Chunk{},
		servers: servers,
		down:    map[string]bool{},

		committed: map[metaserver.ChunkID]bool{},
	}
	m.inodes[metaserver.RootIno] = &metaserver.Inode{Attr: metaserver.Attr{Ino: metaserver.RootIno, Mode: syscall.S_IFDIR | 0o755, Nlink: 2}}
	return m
}

func (m *fakeMeta) setDown(addr string) { m.mu.Lock(); m.down[addr] = true; m.mu.Unlock() }

func (m *fakeMeta) badReports() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.reports...)
}

func (m *fakeMeta) Lookup(_ context.Context, parent metaserver.Ino, name string) (metaserver.Attr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.dirs[parent]
	if !ok {
		return metaserver.Attr{}, metaserver.Errf("lookup", syscall.ENOTDIR, "%d", parent)
	}
	ino, ok := d[name]
	if !ok {
		return metaserver.Attr{}, metaserver.Errf("lookup", syscall.ENOENT, "%s", name)
	}
	return m.inodes[ino].Attr, nil
}

func (m *fakeMeta) GetAttr(_ context.Context, ino metaserver.Ino) (metaserver.Attr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	in, ok := m.inodes[ino]
	if !ok {
		return metaserver.Attr{}, metaserver.Errf("getattr", syscall.ENOENT, "%d", ino)
	}
	return in.Attr, nil
}

func (m *fakeMeta) GetInode(_ context.Context, ino metaserver.Ino) (metaserver.Inode, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	in, ok := m.inodes[ino]
	if !ok {
		return metaserver.Inode{}, metaserver.Errf("getinode", syscall.ENOENT, "%d", ino)
	}
	out := *in
	out.Extents = append([]metaserver.Extent(nil), in.Extents...)
	return out, nil
}

func (m *fakeMeta) Create(_ context.Context, in metaserver.CreateIn) (metaserver.Attr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.dirs[in.Parent]
	if !ok {
		return metaserver.Attr{}, metaserver.Errf("create", syscall.ENOTDIR, "%d", in.Parent)
	}
	if ino, ok := d[in.Name]; ok {
		if in.Exclusive || !m.inodes[ino].IsRegular() {
			return metaserver.Attr{}, metaserver.Errf("create", syscall.EEXIST, "%s", in.Name)
		}
		return m.inodes[ino].Attr, nil
	}
	ino := m.nextIno
	m.nextIno++
	m.inodes[ino] = &metaserver.Inode{Attr: metaserver.Attr{Ino: ino, Mode: in.Mode, Uid: in.Uid, Gid: in.Gid, Nlink: 1}}
	if in.Mode&syscall.S_IFMT == syscall.S_IFDIR {
		m.dirs[ino] = map[string]metaserver.Ino{}
	}
	d[in.Name] = ino
	return m.inodes[ino].Attr, nil
}

func (m *fakeMeta) Unlink(_ context.Context, parent metaserver.Ino, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ino, ok := m.dirs[parent][name]
	if !ok {
		return metaserver.Errf("unlink", syscall.ENOENT, "%s", name)
	}
	if m.inodes[ino].IsDir() {
		return metaserver.Errf("unlink", syscall.EISDIR, "%s", name)
	}
	delete(m.dirs[parent], name)
	return nil
}

func (m *fakeMeta) Rmdir(_ context.Context, parent metaserver.Ino, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ino, ok := m.dirs[parent][name]
	if !ok {
		return metaserver.Errf("rmdir", syscall.ENOENT, "%s", name)
	}
	if len(m.dirs[ino]) > 0 {
		return metaserver.Errf("rmdir", syscall.ENOTEMPTY, "%s", name)
	}
	delete(m.dirs[parent], name)
	delete(m.dirs, ino)
	return nil
}

func (m *fakeMeta) Rename(_ context.Context, op metaserver.Ino, on string, np metaserver.Ino, nn string, _ uint32) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ino, ok := m.dirs[op][on]
	if !ok {
		return metaserver.Errf("rename", syscall.ENOENT, "%s", on)
	}
	delete(m.dirs[op], on)
	m.dirs[np][nn] = ino
	return nil
}

func (m *fakeMeta) ReadDir(_ context.Context, dir metaserver.Ino, after string, limit int, _ bool) ([]metaserver.DirEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []metaserver.DirEntry
	for name, ino := range m.dirs[dir] {
		if name > after {
			out = append(out, metaserver.DirEntry{Name: name, Ino: ino, Mode: m.inodes[ino].Mode & syscall.S_IFMT})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (m *fakeMeta) ResolvePath(ctx context.Context, p string) (metaserver.Attr, error) {
	ino := metaserver.RootIno
	for _, name := range strings.Split(strings.Trim(p, "/"), "/") {
		if name == "" {
			continue
		}
		a, err := m.Lookup(ctx, ino, name)
		if err != nil {
			return a, err
		}
		ino = a.Ino
	}
	return m.GetAttr(ctx, ino)
}

func (m *fakeMeta) SetAttr(_ context.Context, ino metaserver.Ino, in metaserver.SetAttrIn) (metaserver.Attr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.inodes[ino]
	if in.Size != nil {
		size := *in.Size
		var kept []metaserver.Extent
		for _, e := range n.Extents {
			if e.Off >= size {
				continue
			}
			if e.Off+e.Len > size {
				e.Len = size - e.Off
			}
			kept = append(kept, e)
		}
		n.Extents, n.Size = kept, size
		n.Gen++
	}
	return n.Attr, nil
}

func (m *fakeMeta) AllocChunk(_ context.Context, k, mm int, shardSize, size int64, replicated bool) (metaserver.Chunk, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.allocs++
	var up []string
	for i := range m.servers {
		a := m.servers[(m.rot+i)%len(m.servers)]
		if !m.down[a] {
			up = append(up, a)
		}
	}
	m.rot++
	if len(up) < k+mm {
		return metaserver.Chunk{}, fmt.Errorf("placing %d shards on %d servers: %w", k+mm, len(up), metaserver.ErrNoSpace)
	}
	m.nextChunk++
	ch := metaserver.Chunk{ID: m.nextChunk, K: k, M: mm, Size: size, ShardSize: shardSize, Replicated: replicated}
	for i := 0; i < k+mm; i++ {
		ch.Shards = append(ch.Shards, metaserver.Shard{Index: i, Server: metaserver.ServerID(up[i]), Addr: up[i]})
	}
	m.chunks[ch.ID] = &ch
	return ch, nil
}

func (m *fakeMeta) AbandonChunk(_ context.Context, id metaserver.ChunkID) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.chunks[id]; !ok {
		return nil
	}
	if m.committed[id] {
		return metaserver.Errf("abandonchunk", syscall.EBUSY, "chunk %d is committed", id)
	}
	delete(m.chunks, id)
	m.abandoned = append(m.abandoned, id)
	return nil
}

func (m *fakeMeta) CommitExtents(_ context.Context, ino metaserver.Ino, exts []metaserver.Extent, sums map[metaserver.ChunkID][]uint64, newSize uint64) (metaserver.Attr, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.inodes[ino]
	if !ok {
		return metaserver.Attr{}, metaserver.Errf("commit", syscall.ENOENT, "%d", ino)
	}
	for _, e := range exts {
		ch, ok := m.chunks[e.Chunk]
		if !ok || e.ChunkOff+e.Len > uint64(ch.Size) {
			return metaserver.Attr{}, metaserver.Errf("commit", syscall.EINVAL, "bad extent %+v", e)
		}
	}
	for _, e := range exts {
		m.committed[e.Chunk] = true
	}
	for id, s := range sums {
		ch := m.chunks[id]
		for i := range ch.Shards {
			ch.Shards[i].Sum = s[ch.Shards[i].Index]
		}
		ch.Committed = true
	}
	for _, e := range exts {
		n.Extents = spliceExtent(n.Extents, e)
	}
	n.Size = max(n.Size, newSize)
	n.Gen++
	m.commits++
	return n.Attr, nil
}

func (m *fakeMeta) GetChunk(_ context.Context, id metaserver.ChunkID) (metaserver.Chunk, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ch, ok := m.chunks[id]
	if !ok {
		return metaserver.Chunk{}, metaserver.Errf("getchunk", syscall.ENOENT, "%d", id)
	}
	out := *ch
	out.Shards = append([]metaserver.Shard(nil), ch.Shards...)
	return out, nil
}

func (m *fakeMeta) ReportBadShard(_ context.Context, id metaserver.ChunkID, index int, reason string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reports = append(m.reports, fmt.Sprintf("%s %s", metaserver.ShardName(id, index), reason))
	return nil
}

// cluster is n fake chunkservers and a fake metaserver placing on them.
type cluster struct {
	servers []*fakeShards
	meta    *fakeMeta
}

func newCluster(t testing.TB, n int) *cluster {
	c := &cluster{}
	var addrs []string
	for range n {
		s := newFakeShards(t)
		c.servers = append(c.servers, s)
		addrs = append(addrs, s.addr())
	}
	c.meta = newFakeMeta(addrs)
	return c
}

func (c *cluster) client(opt Options) *Client {
	if opt.Logger == nil {
		opt.Logger = discardLogger()
	}
	return New(c.meta, chunkserver.NewClient(nil), opt)
}

// server returns the fake holding addr.
func (c *cluster) server(addr string) *fakeShards {
	for _, s := range c.servers {
		if s.addr() == addr {
			return s
		}
	}
	return nil
}

// waitFor polls cond until it holds or the deadline passes.
var waitFor = testwait.For

// chunkAt returns the chunk holding file offset off of path p. Chunk ids
// follow allocation order, which parallel uploads shuffle.
func (c *cluster) chunkAt(t *testing.T, p string, off uint64) *metaserver.Chunk {
	t.Helper()
	a, err := c.meta.ResolvePath(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	c.meta.mu.Lock()
	defer c.meta.mu.Unlock()
	for _, e := range c.meta.inodes[a.Ino].Extents {
		if e.Off <= off && off < e.Off+e.Len {
			return c.meta.chunks[e.Chunk]
		}
	}
	t.Fatalf("%s has no extent at %d", p, off)
	return nil
}
