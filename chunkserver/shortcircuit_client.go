package chunkserver

import (
	"container/list"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// ShortCircuitOptions tune short-circuit reads. Zero values mean the
// defaults below.
type ShortCircuitOptions struct {
	// MaxOpen bounds the shard descriptors kept open per chunkserver,
	// default 256: a 1 GiB file has about 170 data shards on each of six
	// servers, and the descriptors of unread shards are closed LRU first.
	MaxOpen int
	// DownFor is how long reads go over HTTP after the socket failed,
	// default 30 s.
	DownFor time.Duration
	// RetryAfter is how long before a server that offered no usable socket
	// (remote, disabled, stale path) is asked again, default one minute.
	RetryAfter time.Duration
	// Writes sends the bytes of puts over the socket too, instead of
	// loopback HTTP (see ShortCircuit.PutShard).
	Writes bool
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Defaults of ShortCircuitOptions.
const (
	DefaultShortCircuitMaxOpen    = 256
	DefaultShortCircuitDownFor    = 30 * time.Second
	DefaultShortCircuitRetryAfter = time.Minute
	// shortCircuitTimeout bounds a dial, hello or open on the socket that
	// comes with no deadline of its own.
	shortCircuitTimeout = 5 * time.Second
)

func (o ShortCircuitOptions) withDefaults() ShortCircuitOptions {
	if o.MaxOpen <= 0 {
		o.MaxOpen = DefaultShortCircuitMaxOpen
	}
	if o.DownFor <= 0 {
		o.DownFor = DefaultShortCircuitDownFor
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = DefaultShortCircuitRetryAfter
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// EnableShortCircuit makes c read shards itself from chunkservers on the
// same host. The first read from a chunkserver that is not attached starts a
// probe in the background (that read goes over HTTP); when the server's
// socket proves to be on this host and its own, it is attached (see Attach)
// as a *ShortCircuit, which reads through descriptors and sends everything
// else over HTTP.
func (c *Client) EnableShortCircuit(opt ShortCircuitOptions) {
	c.probe.Store(&scProber{c: c, opt: opt.withDefaults(), next: map[string]time.Time{}})
}

// scProber remembers which servers were probed, so each is asked once per
// RetryAfter at most.
type scProber struct {
	c   *Client
	opt ShortCircuitOptions

	mu   sync.Mutex
	next map[string]time.Time // addr -> earliest next probe; zero: probing now
	// attached is every server the probes attached, kept after a Detach
	// so the client's counters (Client.ShortCircuitStats) never go back.
	// At most one per chunkserver on this host.
	attached []*ShortCircuit
}

// maybeProbe starts a probe of addr unless one ran recently or is running.
func (p *scProber) maybeProbe(addr string) {
	p.mu.Lock()
	t, seen := p.next[addr]
	if seen && (t.IsZero() || time.Now().Before(t)) {
		p.mu.Unlock()
		return
	}
	p.next[addr] = time.Time{}
	p.mu.Unlock()
	go p.probeNow(addr)
}

func (p *scProber) probeNow(addr string) {
	ctx, cancel := context.WithTimeout(context.Background(), shortCircuitTimeout)
	defer cancel()
	s, err := DialShortCircuit(ctx, p.c, addr, p.opt)
	if err != nil {
		p.opt.Logger.Debug("no short-circuit reads from chunkserver", "addr", addr, "err", err)
		p.mu.Lock()
		p.next[addr] = time.Now().Add(p.opt.RetryAfter)
		p.mu.Unlock()
		return
	}
	p.c.localMu.Lock()
	attached := p.c.localMap()[addr] != nil
	p.c.localMu.Unlock()
	if attached { // e.g. an in-process server, which beats any socket
		s.Close()
		return
	}
	p.opt.Logger.Info("short-circuit reads from chunkserver", "addr", addr, "id", s.info.ID, "socket", s.info.Socket)
	p.mu.Lock()
	p.attached = append(p.attached, s)
	p.mu.Unlock()
	p.c.Attach(addr, s)
}

// ShortCircuitEnabled reports whether EnableShortCircuit was called on c.
func (c *Client) ShortCircuitEnabled() bool { return c.probe.Load() != nil }

// ShortCircuitStats adds up the counters of the servers c reaches through
// their sockets: those its probes attached (still counted once detached),
// and any *ShortCircuit attached by hand while it is. Attached counts those
// attached now. It reads the counters the reads keep anyway, so it costs
// the read path nothing, and a client without short-circuit reads returns
// zeros.
func (c *Client) ShortCircuitStats() ShortCircuitStats {
	var all []*ShortCircuit
	if pr := c.probe.Load(); pr != nil {
		pr.mu.Lock()
		all = append(all, pr.attached...)
		pr.mu.Unlock()
	}
	now := c.localMap()
	var st ShortCircuitStats
	for _, ls := range now {
		if s, ok := ls.(*ShortCircuit); ok {
			st.Attached++
			if !slices.Contains(all, s) {
				all = append(all, s)
			}
		}
	}
	for _, s := range all {
		st.add(s.Stats())
	}
	return st
}

// ShortCircuit reaches one chunkserver on this host: shard reads through
// descriptors it hands over its Unix socket, puts over the socket too when
// ShortCircuitOptions.Writes is set, everything else (and any call the
// socket path fails) over HTTP. It implements LocalBufferedServer, so
// Client.Attach takes it. Attached, the client also skips hashing whole
// shards again after reading them (see fs), which is sound for both paths:
// short-circuit reads check every block here, and the HTTP fallback is
// loopback to a server that checked them.
type ShortCircuit struct {
	addr string
	http *Client // HTTP only: never sees attached servers
	opt  ShortCircuitOptions

	mu   sync.Mutex // one exchange at a time on conn; guards info, conn
	info ShortCircuitInfo
	conn *net.UnixConn // nil until dialled, and after a failure

	downUntil atomic.Int64 // unix nanoseconds; reads go over HTTP before it
	closed    atomic.Bool
	// noFDs: the server hands out no descriptors (its shard files are
	// encrypted), so reads ask it for the bytes over the socket (SCRead).
	noFDs atomic.Bool

	fds fdCache

	// idle holds connections for puts, which run many at once; opens keep
	// to conn, one at a time.
	idle chan *net.UnixConn

	opens, reads, puts, fallbacks         atomic.Int64
	fdReadBytes, byteReads, byteReadBytes atomic.Int64
	socketErrors                          atomic.Int64
}

var _ LocalBufferedServer = (*ShortCircuit)(nil)

// DialShortCircuit asks the chunkserver at addr over HTTP (with c's
// transport, so with its cluster secret) where its socket is, connects and
// checks that the socket answers as that very server. It fails when the
// server offers no socket, the socket is not on this host, or it belongs to
// another server (ErrShortCircuitIdentity).
func DialShortCircuit(ctx context.Context, c *Client, addr string, opt ShortCircuitOptions) (*ShortCircuit, error) {
	s := &ShortCircuit{addr: addr, http: NewClient(c.hc), opt: opt.withDefaults(), idle: make(chan *net.UnixConn, maxIdlePuts)}
	s.fds.init(s.opt.MaxOpen)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.connectLocked(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// connectLocked fetches the server's socket description and dials it.
func (s *ShortCircuit) connectLocked(ctx context.Context) error {
	info, err := fetchShortCircuitInfo(ctx, s.http.hc, s.addr)
	if err != nil {
		return err
	}
	conn, hello, err := dialShortCircuit(ctx, info)
	if err != nil {
		return fmt.Errorf("chunkserver %s: short-circuit: %w", s.addr, err)
	}
	if s.conn != nil {
		_ = s.conn.Close()
	}
	s.info, s.conn = info, conn
	s.noFDs.Store(hello.NoDescriptors)
	return nil
}

func fetchShortCircuitInfo(ctx context.Context, hc *http.Client, addr string) (ShortCircuitInfo, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+ShortCircuitPath, nil)
	if err != nil {
		return ShortCircuitInfo{}, fmt.Errorf("chunkserver %s: short-circuit: %w", addr, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return ShortCircuitInfo{}, fmt.Errorf("chunkserver %s: short-circuit: %w", addr, err)
	}
	defer drain(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ShortCircuitInfo{}, fmt.Errorf("chunkserver %s: short-circuit: %w", addr, statusError(resp))
	}
	var info ShortCircuitInfo
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&info); err != nil {
		return ShortCircuitInfo{}, fmt.Errorf("chunkserver %s: short-circuit: decoding: %w", addr, err)
	}
	if info.Socket == "" || info.ID == "" || info.Instance == "" {
		return ShortCircuitInfo{}, fmt.Errorf("chunkserver %s: short-circuit: incomplete reply %+v", addr, info)
	}
	return info, nil
}

// dialShortCircuit connects to info.Socket and checks the hello against info.
func dialShortCircuit(ctx context.Context, info ShortCircuitInfo) (*net.UnixConn, ShortCircuitHello, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", info.Socket)
	if err != nil {
		return nil, ShortCircuitHello{}, err
	}
	conn := nc.(*net.UnixConn)
	_ = conn.SetDeadline(deadline(ctx))
	var hello ShortCircuitHello
	f, err := ReadShortCircuitFrame(conn, &hello)
	if f != nil {
		_ = f.Close()
	}
	if err != nil {
		_ = conn.Close()
		return nil, hello, fmt.Errorf("reading hello on %s: %w", info.Socket, err)
	}
	// Version 2 differs from 1 only in serving reads as bytes, which it
	// must say; a version 1 server always hands out descriptors.
	if hello.Version != ShortCircuitVersion && (hello.Version != ShortCircuitVersionBytes || !hello.NoDescriptors) {
		_ = conn.Close()
		return nil, hello, fmt.Errorf("socket %s speaks version %d, want %d or %d", info.Socket, hello.Version, ShortCircuitVersion, ShortCircuitVersionBytes)
	}
	if hello.Version == ShortCircuitVersion && hello.NoDescriptors {
		_ = conn.Close()
		return nil, hello, fmt.Errorf("socket %s speaks version %d without descriptors", info.Socket, hello.Version)
	}
	if hello.ID != info.ID || hello.Instance != info.Instance {
		_ = conn.Close()
		return nil, hello, fmt.Errorf("socket %s answered as %s (run %.8s), want %s (run %.8s): %w",
			info.Socket, hello.ID, hello.Instance, info.ID, info.Instance, ErrShortCircuitIdentity)
	}
	return conn, hello, nil
}

func deadline(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(shortCircuitTimeout)
}

// ShortCircuitStats counts what a ShortCircuit did, or (from
// Client.ShortCircuitStats) all of a client's.
type ShortCircuitStats struct {
	// Attached is the servers reached through their sockets now; always
	// zero from ShortCircuit.Stats.
	Attached int
	Opens    int64 // descriptors received
	// Reads and ReadBytes count the reads served through descriptors and
	// the bytes they returned.
	Reads, ReadBytes int64
	// ByteReads and ByteReadBytes count the reads a server without
	// descriptors (an encrypted store) answered with checked plaintext
	// over the socket, and their bytes.
	ByteReads, ByteReadBytes int64
	Puts                     int64 // shards stored over the socket (ShortCircuitOptions.Writes)
	Fallbacks                int64 // reads and puts sent over HTTP because the socket path was down or failed
	// SocketErrors counts the failures of the socket path (not answers
	// about a shard) that sent it down for ShortCircuitOptions.DownFor.
	SocketErrors int64
}

func (st *ShortCircuitStats) add(o ShortCircuitStats) {
	st.Attached += o.Attached
	st.Opens += o.Opens
	st.Reads += o.Reads
	st.ReadBytes += o.ReadBytes
	st.ByteReads += o.ByteReads
	st.ByteReadBytes += o.ByteReadBytes
	st.Puts += o.Puts
	st.Fallbacks += o.Fallbacks
	st.SocketErrors += o.SocketErrors
}

// Stats returns the counters so far.
func (s *ShortCircuit) Stats() ShortCircuitStats {
	return ShortCircuitStats{
		Opens: s.opens.Load(), Reads: s.reads.Load(), ReadBytes: s.fdReadBytes.Load(),
		ByteReads: s.byteReads.Load(), ByteReadBytes: s.byteReadBytes.Load(),
		Puts: s.puts.Load(), Fallbacks: s.fallbacks.Load(), SocketErrors: s.socketErrors.Load(),
	}
}

// Info is the socket description the server gave when last connected.
func (s *ShortCircuit) Info() ShortCircuitInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info
}

// Close closes the socket and every cached descriptor (those being read
// once their reads finish). Later reads go over HTTP.
func (s *ShortCircuit) Close() {
	s.closed.Store(true)
	s.mu.Lock()
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
	s.mu.Unlock()
	s.fds.close()
	s.drainIdle()
}

// ReadShard implements LocalServer: through a descriptor when the socket
// path is up, else (or when it fails for any reason but a definite answer
// about the shard) over HTTP.
func (s *ShortCircuit) ReadShard(ctx context.Context, name string, p []byte, off int64) error {
	if !s.closed.Load() && time.Now().UnixNano() >= s.downUntil.Load() {
		// readLocal counts what it served, by the way it went.
		err := s.readLocal(ctx, name, p, off)
		if err == nil || definite(err) {
			return err
		}
		s.markDown(err)
	}
	s.fallbacks.Add(1)
	_, err := s.http.ReadAt(ctx, s.addr, name, p, off)
	return unwrapShardError(err)
}

// definite reports whether err is the server's (or the file's) answer about
// the shard, which HTTP would only repeat: missing, corrupt, bad name, a
// range past its end.
func definite(err error) bool {
	var se *StatusError
	return errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF)
}

func (s *ShortCircuit) markDown(err error) {
	s.socketErrors.Add(1)
	s.opt.Logger.Warn("short-circuit reads failed; reading over HTTP for a while", "addr", s.addr, "for", s.opt.DownFor, "err", err)
	s.downUntil.Store(time.Now().Add(s.opt.DownFor).UnixNano())
	s.mu.Lock()
	if s.conn != nil {
		_ = s.conn.Close()
		s.conn = nil
	}
	s.mu.Unlock()
	// Idle put connections most likely broke the same way.
	s.drainIdle()
}

func (s *ShortCircuit) drainIdle() {
	for {
		select {
		case c := <-s.idle:
			_ = c.Close()
		default:
			return
		}
	}
}

func (s *ShortCircuit) readLocal(ctx context.Context, name string, p []byte, off int64) error {
	if !ValidName(name) {
		return NewStatusError(http.StatusBadRequest, ErrorName, fmt.Sprintf("invalid shard name %q", name))
	}
	if s.noFDs.Load() {
		return s.readBytes(ctx, name, p, off)
	}
	h := s.fds.get(name)
	fresh := false
	if h != nil && h.unlinked() {
		// Deleted, or replaced by a repair: ask again, so a deleted shard
		// reads as missing (as over HTTP) and no descriptor pins the
		// blocks of a file gone from the store.
		s.fds.drop(h)
		s.fds.release(h)
		h = nil
	}
	if h == nil {
		var err error
		if h, err = s.open(ctx, name); err != nil {
			return err
		}
		fresh = true
	}
	err := h.readAt(p, off)
	s.fds.release(h)
	if errors.Is(err, ErrCorrupt) && !fresh {
		// The cached file may since have been replaced by a repaired
		// copy under the same name; only the current file's damage counts.
		s.fds.drop(h)
		if h, err = s.open(ctx, name); err != nil {
			return err
		}
		err = h.readAt(p, off)
		s.fds.release(h)
	}
	if errors.Is(err, ErrCorrupt) {
		s.fds.drop(h)
		s.tellCorrupt(ctx, name)
		return NewStatusError(http.StatusInternalServerError, ErrorCorrupt, fmt.Sprintf("read %s: %v", name, err))
	}
	if err == nil {
		s.reads.Add(1)
		s.fdReadBytes.Add(int64(len(p)))
	}
	return err
}

// open asks the server for a descriptor of shard name and caches it; the
// caller must release the handle.
func (s *ShortCircuit) open(ctx context.Context, name string) (*scFile, error) {
	var reply ShortCircuitReply
	f, err := s.exchange(ctx, ShortCircuitRequest{Op: SCOpen, Name: name}, &reply)
	if err != nil {
		return nil, err
	}
	if reply.Status != 0 {
		if f != nil {
			_ = f.Close()
		}
		return nil, NewStatusError(reply.Status, reply.Kind, reply.Msg)
	}
	if f == nil || reply.Layout == nil {
		if f != nil {
			_ = f.Close()
		}
		return nil, fmt.Errorf("open %s: reply without a descriptor or layout", name)
	}
	h, err := newSCFile(name, f, *reply.Layout)
	if err != nil {
		_ = f.Close()
		return nil, err
	}
	s.opens.Add(1)
	return s.fds.add(h), nil
}

// tellCorrupt lets the server count and report the damage, as it would
// have on an HTTP read. Best effort: the fs client reports it too.
func (s *ShortCircuit) tellCorrupt(ctx context.Context, name string) {
	var reply ShortCircuitReply
	if f, err := s.exchange(ctx, ShortCircuitRequest{Op: SCCorrupt, Name: name}, &reply); f != nil {
		_ = f.Close()
	} else if err != nil {
		s.opt.Logger.Debug("could not tell chunkserver of a corrupt shard", "addr", s.addr, "shard", name, "err", err)
	}
}

// exchange sends one request and reads its reply, (re)connecting first when
// needed. Any failure closes the connection: a half-read frame would leave it
// out of step.
func (s *ShortCircuit) exchange(ctx context.Context, req ShortCircuitRequest, reply *ShortCircuitReply) (*os.File, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		return nil, ErrServerClosed
	}
	if s.conn == nil {
		// The socket was down: the server may have restarted on a new
		// socket, so ask over HTTP again where it is and who answers.
		if err := s.connectLocked(ctx); err != nil {
			return nil, err
		}
	}
	_ = s.conn.SetDeadline(deadline(ctx))
	err := WriteShortCircuitFrame(s.conn, req, nil)
	var f *os.File
	if err == nil {
		f, err = ReadShortCircuitFrame(s.conn, reply)
	}
	if err != nil {
		_ = s.conn.Close()
		s.conn = nil
		return nil, fmt.Errorf("short-circuit %s %s: %w", req.Op, req.Name, err)
	}
	return f, nil
}

// maxIdlePuts bounds the idle put connections kept per server: about the
// shards a client writes to one server at once.
const maxIdlePuts = 16

// PutShard implements LocalServer: over the socket with Writes set and the
// socket path up, else over HTTP.
func (s *ShortCircuit) PutShard(ctx context.Context, name string, data []byte) (uint64, error) {
	return s.put(ctx, name, data, false)
}

// PutShardBuffered implements LocalBufferedServer like PutShard.
func (s *ShortCircuit) PutShardBuffered(ctx context.Context, name string, data []byte) (uint64, error) {
	return s.put(ctx, name, data, true)
}

func (s *ShortCircuit) put(ctx context.Context, name string, data []byte, buffered bool) (uint64, error) {
	if s.opt.Writes && !s.closed.Load() && time.Now().UnixNano() >= s.downUntil.Load() {
		sum, err := s.putLocal(ctx, name, data, buffered)
		if err == nil {
			s.puts.Add(1)
		}
		if err == nil || definite(err) {
			return sum, err
		}
		// Stored or not, the same bytes may be put again.
		s.markDown(err)
	}
	if s.opt.Writes {
		s.fallbacks.Add(1)
	}
	var sum uint64
	var err error
	if buffered {
		sum, err = s.http.PutBuffered(ctx, s.addr, name, data)
	} else {
		sum, err = s.http.Put(ctx, s.addr, name, data)
	}
	return sum, unwrapShardError(err)
}

// putLocal sends the shard over a pooled connection. No checksum goes
// along: the bytes cannot be damaged between two processes of one host, and
// the server returns the sum of what it stored.
func (s *ShortCircuit) putLocal(ctx context.Context, name string, data []byte, buffered bool) (uint64, error) {
	c, err := s.pooled(ctx)
	if err != nil {
		return 0, fmt.Errorf("short-circuit put %s: %w", name, err)
	}
	var reply ShortCircuitReply
	err = WriteShortCircuitPut(c, ShortCircuitRequest{Op: SCPut, Name: name, Size: int64(len(data)), Buffered: buffered}, data)
	var f *os.File
	if err == nil {
		f, err = ReadShortCircuitFrame(c, &reply)
	}
	if f != nil {
		_ = f.Close()
	}
	if err != nil {
		_ = c.Close()
		return 0, fmt.Errorf("short-circuit put %s: %w", name, err)
	}
	s.release(c)
	if reply.Status != 0 {
		return 0, NewStatusError(reply.Status, reply.Kind, reply.Msg)
	}
	return reply.Sum, nil
}

// readBytes asks the server for len(p) bytes at off of shard name over a
// pooled connection, as putLocal sends them: the server reads them through
// its store, which checks them, so they arrive as plaintext already
// verified (and a corrupt block as the server's answer, reported by it).
func (s *ShortCircuit) readBytes(ctx context.Context, name string, p []byte, off int64) error {
	if len(p) == 0 {
		return nil
	}
	c, err := s.pooled(ctx)
	if err != nil {
		return fmt.Errorf("short-circuit read %s: %w", name, err)
	}
	var reply ShortCircuitReply
	err = WriteShortCircuitFrame(c, ShortCircuitRequest{Op: SCRead, Name: name, Off: off, Size: int64(len(p))}, nil)
	if err == nil {
		// Exactly the frame: the bytes follow it on the connection.
		err = ReadShortCircuitRequest(c, &reply)
	}
	if err == nil && reply.Status == 0 {
		if reply.Size != int64(len(p)) {
			err = fmt.Errorf("reply of %d bytes to a read of %d", reply.Size, len(p))
		} else {
			_, err = io.ReadFull(c, p)
		}
	}
	if err != nil {
		_ = c.Close()
		return fmt.Errorf("short-circuit read %s: %w", name, err)
	}
	s.release(c)
	switch reply.Status {
	case 0:
		s.byteReads.Add(1)
		s.byteReadBytes.Add(int64(len(p)))
		return nil
	case http.StatusRequestedRangeNotSatisfiable:
		// As the HTTP client makes of a 416.
		return fmt.Errorf("range %d+%d past end of shard: %w", off, len(p), io.ErrUnexpectedEOF)
	default:
		return NewStatusError(reply.Status, reply.Kind, reply.Msg)
	}
}

// pooled returns an idle connection for a put or a byte read, or dials
// one, with ctx's deadline set on it. The caller hands it back with release
// once its exchange is complete, or closes it after an error.
func (s *ShortCircuit) pooled(ctx context.Context) (*net.UnixConn, error) {
	var c *net.UnixConn
	select {
	case c = <-s.idle:
	default:
		var err error
		if c, err = s.dialPut(ctx); err != nil {
			return nil, err
		}
	}
	_ = c.SetDeadline(deadline(ctx))
	return c, nil
}

// dialPut opens another connection for puts and byte reads. After the
// socket path was down it first asks the server again where its socket is
// and who answers there, as opens do, so a restarted server is found.
func (s *ShortCircuit) dialPut(ctx context.Context) (*net.UnixConn, error) {
	s.mu.Lock()
	if s.conn == nil {
		if err := s.connectLocked(ctx); err != nil {
			s.mu.Unlock()
			return nil, err
		}
	}
	info := s.info
	s.mu.Unlock()
	c, _, err := dialShortCircuit(ctx, info)
	return c, err
}

// release keeps c for the next put, or closes it.
func (s *ShortCircuit) release(c *net.UnixConn) {
	if s.closed.Load() {
		_ = c.Close()
		return
	}
	select {
	case s.idle <- c:
	default:
		_ = c.Close()
	}
}

// SyncShards implements LocalBufferedServer over HTTP.
func (s *ShortCircuit) SyncShards(ctx context.Context) error {
	return unwrapShardError(s.http.Sync(ctx, s.addr))
}

// StatShard implements LocalServer over HTTP.
func (s *ShortCircuit) StatShard(ctx context.Context, name string) (ShardInfo, error) {
	info, err := s.http.Stat(ctx, s.addr, name)
	return info, unwrapShardError(err)
}

// DeleteShard implements LocalServer over HTTP.
func (s *ShortCircuit) DeleteShard(ctx context.Context, name string) error {
	return unwrapShardError(s.http.Delete(ctx, s.addr, name))
}

// unwrapShardError strips the *ShardError the HTTP client adds, since the
// attaching Client wraps the result in its own.
func unwrapShardError(err error) error {
	var se *ShardError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}

// scFile is an open shard file received from the server.
type scFile struct {
	name string
	f    *os.File
	l    ShardLayout
	sums []byte // the trailer, read once: the file never changes
	refs int    // readers, plus one while cached
	el   *list.Element
}

func newSCFile(name string, f *os.File, l ShardLayout) (*scFile, error) {
	if err := l.Check(); err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", name, err)
	}
	if !fi.Mode().IsRegular() || fi.Size() != l.FileSize() {
		return nil, NewStatusError(http.StatusInternalServerError, ErrorCorrupt,
			fmt.Sprintf("open %s: file of %d bytes, layout wants %d: %v", name, fi.Size(), l.FileSize(), ErrCorrupt))
	}
	h := &scFile{name: name, f: f, l: l, sums: make([]byte, 8*l.Blocks()), refs: 1}
	if err := ReadFullAt(f, h.sums, l.SumsOffset); err != nil {
		return nil, fmt.Errorf("open %s: checksums: %w", name, err)
	}
	return h, nil
}

// maxPooledBuf bounds the buffers kept for unaligned reads: a FUSE read of
// up to 1 MiB plus the partial blocks at both ends.
const maxPooledBuf = 1<<20 + 128<<10

var scBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256<<10); return &b }}

// readAt fills p from the shard's data at off, checking every block it
// touches; it returns no bytes that failed their check. It mirrors the
// store's ReadAt, which it replaces on this path.
func (h *scFile) readAt(p []byte, off int64) error {
	size := h.l.Size
	if off < 0 {
		return fmt.Errorf("negative offset %d", off)
	}
	if len(p) == 0 {
		return nil
	}
	if off+int64(len(p)) > size {
		return fmt.Errorf("range %d+%d past end of shard (%d bytes): %w", off, len(p), size, io.ErrUnexpectedEOF)
	}
	bs := h.l.BlockSize
	first, last := off/bs, (off+int64(len(p))-1)/bs
	lo, hi := first*bs, min((last+1)*bs, size)
	// Straight into p when it covers whole blocks (whole-shard reads);
	// otherwise through a buffer of the blocks it touches.
	var buf []byte
	if lo == off && hi == off+int64(len(p)) {
		buf = p
	} else {
		bp := scBufs.Get().(*[]byte)
		if int64(cap(*bp)) < hi-lo {
			*bp = make([]byte, hi-lo)
		}
		// Rare huge unaligned reads must not leave huge buffers pooled.
		if cap(*bp) <= maxPooledBuf {
			defer scBufs.Put(bp)
		}
		buf = (*bp)[:hi-lo]
	}
	if err := ReadFullAt(h.f, buf, h.l.DataOffset+lo); err != nil {
		return err
	}
	if bad := BadBlock(buf, bs, h.sums[8*first:]); bad >= 0 {
		if &buf[0] == &p[0] {
			clear(p) // never hand back bytes that failed their check
		}
		return fmt.Errorf("block %d: %w", first+bad, ErrCorrupt)
	}
	if &buf[0] != &p[0] {
		copy(p, buf[off-lo:])
	}
	return nil
}

// fdCache keeps received shard files open, LRU, so a shard is asked for
// once and then read with preads alone. Shards are immutable, so a cached
// file never goes stale; a file unlinked since (delete, repair) is noticed
// on use (scFile.unlinked) and asked for again.
type fdCache struct {
	mu     sync.Mutex
	max    int
	byName map[string]*scFile
	lru    list.List // of *scFile, front = most recently used
	closed bool
}

func (c *fdCache) init(limit int) {
	c.max = limit
	c.byName = map[string]*scFile{}
}

// get returns the cached file of name with a reference the caller must
// release, or nil.
func (c *fdCache) get(name string) *scFile {
	c.mu.Lock()
	defer c.mu.Unlock()
	h := c.byName[name]
	if h == nil {
		return nil
	}
	c.lru.MoveToFront(h.el)
	h.refs++
	return h
}

// add caches h (which holds the caller's reference) and returns it.
func (c *fdCache) add(h *scFile) *scFile {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return h // release closes it
	}
	if old := c.byName[h.name]; old != nil {
		c.dropLocked(old)
	}
	h.refs++
	h.el = c.lru.PushFront(h)
	c.byName[h.name] = h
	for c.lru.Len() > c.max {
		c.dropLocked(c.lru.Back().Value.(*scFile))
	}
	return h
}

// drop removes h from the cache if it is still there.
func (c *fdCache) drop(h *scFile) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byName[h.name] == h {
		c.dropLocked(h)
	}
}

func (c *fdCache) dropLocked(h *scFile) {
	c.lru.Remove(h.el)
	delete(c.byName, h.name)
	h.el = nil
	c.unrefLocked(h)
}

func (c *fdCache) release(h *scFile) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.unrefLocked(h)
}

func (c *fdCache) unrefLocked(h *scFile) {
	h.refs--
	if h.refs == 0 {
		_ = h.f.Close()
	}
}

func (c *fdCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for c.lru.Len() > 0 {
		c.dropLocked(c.lru.Back().Value.(*scFile))
	}
}

// Open reports how many shard files are cached open.
func (s *ShortCircuit) Open() int {
	s.fds.mu.Lock()
	defer s.fds.mu.Unlock()
	return s.fds.lru.Len()
}
