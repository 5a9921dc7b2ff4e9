package metaserver

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dockyard/dockyard/internal/clusterauth"
)

// Client implements API on top of an Executor: over HTTP against a cluster
// (NewClient) or in process (NewClientWith).
type Client struct {
	exec     Executor
	clientID string
	seq      atomic.Uint64
}

var _ API = (*Client)(nil)

// ClientOption tunes NewClient.
type ClientOption func(*httpExecutor)

// WithRetryTimeout bounds how long one call keeps retrying through leader
// changes and connection failures when its context has no earlier deadline.
// Default 30s.
func WithRetryTimeout(d time.Duration) ClientOption {
	return func(h *httpExecutor) { h.retryTimeout = d }
}

// WithAttemptTimeout bounds one request to one node (default 2s). A node that
// does not answer in time (a leader cut off with connections still open) is
// skipped and the call moves on to the next address; retrying is safe because
// a mutation keeps its request id.
func WithAttemptTimeout(d time.Duration) ClientOption {
	return func(h *httpExecutor) { h.attemptTimeout = d }
}

// WithoutStream makes the client send every operation as its own HTTP
// request with JSON bodies, as clients before the stream protocol did: for
// debugging with HTTP tools, and to compare the two.
func WithoutStream() ClientOption {
	return func(h *httpExecutor) { h.noStream = true }
}

// WithHTTPClient replaces the tuned default HTTP client.
func WithHTTPClient(c *http.Client) ClientOption {
	return func(h *httpExecutor) { h.hc = c }
}

// NewClient returns a client of the metaservers at addrs (host:port of their
// APIs, or http:// URLs). It finds the leader itself and follows it.
func NewClient(addrs []string, opts ...ClientOption) (*Client, error) {
	h := &httpExecutor{retryTimeout: 30 * time.Second, attemptTimeout: 2 * time.Second}
	for _, a := range addrs {
		if a = strings.TrimSpace(a); a != "" {
			h.addrs = append(h.addrs, baseURL(a))
		}
	}
	if len(h.addrs) == 0 {
		return nil, errors.New("metaserver client: no addresses")
	}
	for _, o := range opts {
		o(h)
	}
	if h.hc == nil {
		h.hc = &http.Client{Transport: &http.Transport{
			Proxy:               nil, // cluster-internal traffic never goes through a proxy
			DialContext:         (&net.Dialer{Timeout: 2 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        512,
			MaxIdleConnsPerHost: 256, // many goroutines share one client; keep their connections
			IdleConnTimeout:     90 * time.Second,
			ForceAttemptHTTP2:   false,
		}}
	}
	h.hc = h.secret.Client(h.hc)
	return NewClientWith(h), nil
}

// NewClientWith returns a client running operations through e.
func NewClientWith(e Executor) *Client {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return &Client{exec: e, clientID: hex.EncodeToString(b[:])}
}

// Close releases idle connections and closes stream connections; calls in
// flight on them fail. The client stays usable: a later call reconnects.
func (c *Client) Close() error {
	if h, ok := c.exec.(*httpExecutor); ok {
		h.hc.CloseIdleConnections()
		h.closeStreams()
	}
	return nil
}

func baseURL(a string) string {
	if strings.HasPrefix(a, "http://") || strings.HasPrefix(a, "https://") {
		return strings.TrimRight(a, "/")
	}
	return "http://" + a
}

// call runs one operation. Mutations get a request id made of the client's
// random id and a counter; the id stays the same across every retry, so the
// metaserver applies the mutation once however often it is sent.
func (c *Client) call(ctx context.Context, op string, args, out any) error {
	reqID := ""
	if IsMutation(op) {
		reqID = c.clientID + "-" + strconv.FormatUint(c.seq.Add(1), 10)
	}
	var reply []byte
	var err error
	if h, ok := c.exec.(*httpExecutor); ok {
		// The HTTP executor picks the arguments' form per attempt: binary
		// on a stream, JSON in a plain request.
		reply, err = h.exec(ctx, op, reqID, &callArgs{v: args})
	} else {
		body, merr := json.Marshal(args)
		if merr != nil {
			return fmt.Errorf("%s: encoding arguments: %w", op, merr)
		}
		reply, err = c.exec.Exec(ctx, op, reqID, body)
	}
	if err != nil {
		return err
	}
	if out == nil || len(reply) == 0 {
		return nil
	}
	if err := Unmarshal(reply, out); err != nil {
		return fmt.Errorf("%s: decoding reply: %w", op, err)
	}
	return nil
}

// callArgs is one call's arguments, encoded on first use in the form an
// attempt needs and kept for the retries.
type callArgs struct {
	v    any
	js   []byte
	bin  []byte
	jerr error
}

func (a *callArgs) json() ([]byte, error) {
	if a.js == nil && a.jerr == nil {
		a.js, a.jerr = json.Marshal(a.v)
	}
	return a.js, a.jerr
}

// forStream is the binary form when the arguments have one, else JSON.
func (a *callArgs) forStream() ([]byte, error) {
	if a.bin == nil && HasBinary(a.v) {
		a.bin, _ = AppendBinary(nil, a.v)
	}
	if a.bin != nil {
		return a.bin, nil
	}
	return a.json()
}

// httpExecutor sends operations to the leader over HTTP.
type httpExecutor struct {
	addrs          []string
	hc             *http.Client
	retryTimeout   time.Duration
	attemptTimeout time.Duration
	secret         *clusterauth.Secret // signs requests; nil: unsigned

	noStream  bool // WithoutStream
	mu        sync.Mutex
	leader    string // base URL of the last known leader
	next      int    // round-robin position when the leader is unknown
	staleNext int    // round-robin position of stale reads
	streams   map[string]*streamSlot
}

// staleTarget spreads stale reads over every address.
func (h *httpExecutor) staleTarget(advance bool) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if advance {
		h.staleNext++
	}
	return h.addrs[h.staleNext%len(h.addrs)]
}

func (h *httpExecutor) target() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.leader != "" {
		return h.leader
	}
	return h.addrs[h.next%len(h.addrs)]
}

// failed forgets a leader that did not answer and moves on to the next
// address.
func (h *httpExecutor) failed(url string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.leader == url {
		h.leader = ""
	}
	h.next++
}

func (h *httpExecutor) setLeader(url string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.leader = url
}

// Exec retries connection errors, "not leader" and "unavailable" answers
// until the context's deadline or the retry timeout; other errors return at
// once.
func (h *httpExecutor) Exec(ctx context.Context, op, reqID string, args []byte) ([]byte, error) {
	return h.exec(ctx, op, reqID, &callArgs{js: args})
}

func (h *httpExecutor) exec(ctx context.Context, op, reqID string, args *callArgs) ([]byte, error) {
	// The call's deadline is kept as a time, not as a derived context:
	// that would cost a timer and a registration with the parent context
	// on every call, a measurable share of a metadata operation's CPU.
	deadline, bounded := ctx.Deadline()
	if !bounded && h.retryTimeout > 0 {
		deadline, bounded = time.Now().Add(h.retryTimeout), true
	}
	expired := func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if bounded && !time.Now().Before(deadline) {
			return context.DeadlineExceeded
		}
		return nil
	}
	backoff := 10 * time.Millisecond
	var last error
	misses := 0 // failed attempts since the last backoff
	stale := IsRead(op) && StaleAllowed(ctx)
	for {
		if err := expired(); err != nil {
			if last != nil {
				return nil, fmt.Errorf("%s: giving up after retries: %w (last error: %w)", op, err, last)
			}
			return nil, fmt.Errorf("%s: %w", op, err)
		}
		// Each attempt ends by the attempt timeout, and by the call's end.
		attempt := deadline
		if h.attemptTimeout > 0 {
			if a := time.Now().Add(h.attemptTimeout); !bounded || a.Before(deadline) {
				attempt = a
			}
		}
		url := h.target()
		if stale {
			// Any node answers; rotate so the load spreads and a dead
			// node costs one attempt.
			url = h.staleTarget(true)
		}
		reply, err, retry := h.once(ctx, attempt, url, op, reqID, args, stale)
		if err == nil {
			return reply, nil
		}
		if !retry {
			if xerr := expired(); xerr != nil {
				// The node did not answer before the caller's deadline
				// cut the attempt: prefer another one for the next call.
				h.failed(url)
				if last != nil {
					// The earlier failure says why better than the
					// cancelled request does.
					return nil, fmt.Errorf("%s: giving up after retries: %w (last error: %w)", op, xerr, last)
				}
			}
			return nil, err
		}
		last = err
		misses++
		var nl *ErrNotLeader
		switch {
		case stale:
		case errors.As(err, &nl) && nl.Leader != "" && baseURL(nl.Leader) != url:
			// Redirected: go straight to the named leader.
			h.setLeader(baseURL(nl.Leader))
		default:
			h.failed(url)
		}
		// Sweep the known addresses (and follow a redirect) at once; back
		// off when that did not help, e.g. during an election, when nodes
		// may name a stale leader to each other.
		if misses <= len(h.addrs) {
			continue
		}
		misses = 0
		wait := backoff
		if bounded {
			wait = min(wait, time.Until(deadline))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%s: giving up after retries: %w (last error: %w)", op, ctx.Err(), last)
		case <-t.C:
		}
		backoff = min(backoff*2, 500*time.Millisecond)
	}
}

// once sends one request, on the address's stream when it has one, else as
// a plain HTTP request; retry says whether another attempt may succeed.
func (h *httpExecutor) once(ctx context.Context, attempt time.Time, url, op, reqID string, a *callArgs, stale bool) (reply []byte, err error, retry bool) {
	s, err, retry := h.stream(ctx, attempt, url)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err), retry
	}
	if s != nil {
		args, err := a.forStream()
		if err != nil {
			return nil, fmt.Errorf("%s: encoding arguments: %w", op, err), false
		}
		return s.call(ctx, attempt, url, op, reqID, args, stale)
	}
	args, err := a.json()
	if err != nil {
		return nil, fmt.Errorf("%s: encoding arguments: %w", op, err), false
	}
	actx := ctx
	if !attempt.IsZero() {
		var cancel context.CancelFunc
		actx, cancel = context.WithDeadline(ctx, attempt)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(actx, http.MethodPost, url+"/v1/op/"+op, bytes.NewReader(args))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err), false
	}
	req.Header.Set("Content-Type", "application/json")
	if reqID != "" {
		req.Header.Set(RequestIDHeader, reqID)
	}
	if stale {
		req.Header.Set(ConsistencyHeader, "stale")
	}
	resp, err := h.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s: %w", op, err), false
		}
		// Includes an attempt that timed out while the caller has time left.
		return nil, fmt.Errorf("%s: %s: %w: %w", op, url, ErrUnavailable, err), true
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: reading reply from %s: %w: %w", op, url, ErrUnavailable, err), ctx.Err() == nil
	}
	if resp.StatusCode == http.StatusOK {
		return body, nil, false
	}
	if err := clusterauth.CheckResponse("metaserver "+strings.TrimPrefix(url, "http://"), resp); err != nil {
		return nil, fmt.Errorf("%s: %w", op, err), false // every node holds the same secret: no retry helps
	}
	var env struct {
		Error *WireError `json:"error"`
	}
	if json.Unmarshal(body, &env) != nil || env.Error == nil {
		// Not our error envelope (a proxy, a dying server): worth another try.
		return nil, fmt.Errorf("%s: %w: HTTP %d: %.200s", op, ErrUnavailable, resp.StatusCode, body), true
	}
	werr := env.Error.Err()
	switch env.Error.Kind {
	case KindNotLeader, KindUnavailable:
		return nil, werr, true
	}
	return nil, werr, false
}

// --- stream connections ---

// streamRetryAfter is how long an address that refused the stream upgrade
// (an older metaserver, a proxy) is served by plain HTTP before the client
// asks again.
const streamRetryAfter = time.Minute

// maxStreamReply bounds one reply frame; a length beyond it means the stream
// is garbage, not that a reply is that large.
const maxStreamReply = 1 << 30

// streamSlot holds one address's stream connection.
type streamSlot struct {
	cur      atomic.Pointer[clientStream]
	dial     sync.Mutex // one upgrade at a time per address
	httpOnly time.Time  // under dial: plain HTTP until then
}

// stream returns the address's stream connection, dialling it when there is
// none. A nil stream and nil error mean: use plain HTTP at this address.
func (h *httpExecutor) stream(ctx context.Context, attempt time.Time, url string) (*clientStream, error, bool) {
	if h.noStream {
		return nil, nil, false
	}
	h.mu.Lock()
	slot := h.streams[url]
	if slot == nil {
		if h.streams == nil {
			h.streams = map[string]*streamSlot{}
		}
		slot = &streamSlot{}
		h.streams[url] = slot
	}
	h.mu.Unlock()
	if s := slot.cur.Load(); s != nil && !s.broken() {
		return s, nil, false
	}
	slot.dial.Lock()
	defer slot.dial.Unlock()
	if s := slot.cur.Load(); s != nil && !s.broken() {
		return s, nil, false // another caller dialled meanwhile
	}
	if time.Now().Before(slot.httpOnly) {
		return nil, nil, false
	}
	dctx := ctx
	if !attempt.IsZero() {
		var cancel context.CancelFunc
		dctx, cancel = context.WithDeadline(ctx, attempt)
		defer cancel()
	}
	s, unsupported, err := h.dialStream(dctx, url)
	switch {
	case err != nil:
		if ctx.Err() != nil {
			return nil, err, false
		}
		return nil, err, !errors.Is(err, clusterauth.ErrRefused)
	case unsupported:
		slot.httpOnly = time.Now().Add(streamRetryAfter)
		return nil, nil, false
	}
	slot.cur.Store(s)
	return s, nil, false
}

// dialStream upgrades a new connection to url. unsupported reports a server
// that answered the upgrade with anything but 101 (it does not speak the
// stream protocol).
func (h *httpExecutor) dialStream(ctx context.Context, url string) (_ *clientStream, unsupported bool, _ error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url+StreamPath, nil)
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", StreamProtocol)
	resp, err := h.hc.Do(req)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w: %w", url, ErrUnavailable, err)
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		rwc, ok := resp.Body.(io.ReadWriteCloser)
		if !ok {
			resp.Body.Close()
			return nil, true, nil
		}
		return newClientStream(rwc), false, nil
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // so the connection is reused
	if err := clusterauth.CheckResponse("metaserver "+strings.TrimPrefix(url, "http://"), resp); err != nil {
		return nil, false, err
	}
	return nil, true, nil
}

func (h *httpExecutor) closeStreams() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, slot := range h.streams {
		if s := slot.cur.Swap(nil); s != nil {
			s.fail(net.ErrClosed)
		}
	}
}

// clientStream is one stream connection, shared by every call of the client
// to that address. Calls write their frames directly; one goroutine reads
// the replies and hands each to its caller.
type clientStream struct {
	rwc  io.ReadWriteCloser
	wmu  sync.Mutex // one frame at a time on the wire
	wbuf []byte     // under wmu

	mu      sync.Mutex
	pending map[uint64]pendingCall
	next    uint64
	err     error // why the stream broke; nil while it works
	dead    atomic.Bool
	// One timer per stream ends calls whose attempt deadline passed; it is
	// armed for the earliest deadline while calls are pending. A timer per
	// call would cost more than the rest of the client's work on it.
	expiry  *time.Timer
	armedAt time.Time // zero: not armed
	// writeSince is when the write in progress began (unix nanos, 0: none).
	// A write still blocked when a call expires means the node stopped
	// reading: the stream is closed, which also ends the write (the
	// connection is the HTTP transport's, so there is no write deadline to
	// set on it).
	writeSince atomic.Int64
	suspect    int64 // under mu: writeSince of a write seen in progress when a call timed out
}

type pendingCall struct {
	ch       chan streamReply
	deadline time.Time // zero: none
}

// errNoAnswer ends a call whose node did not answer within the attempt.
var errNoAnswer = errors.New("no answer within the attempt timeout")

type streamReply struct {
	status byte
	body   []byte
	err    error // the stream broke before the reply came
}

func newClientStream(rwc io.ReadWriteCloser) *clientStream {
	s := &clientStream{rwc: rwc, pending: map[uint64]pendingCall{}}
	go s.readLoop()
	return s
}

func (s *clientStream) broken() bool { return s.dead.Load() }

// fail breaks the stream: the connection is closed and every waiting call
// gets err (and retries, on this address's next stream or elsewhere).
func (s *clientStream) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
		s.dead.Store(true)
	}
	pending := s.pending
	s.pending = map[uint64]pendingCall{}
	s.mu.Unlock()
	_ = s.rwc.Close()
	for _, p := range pending {
		p.ch <- streamReply{err: err}
	}
}

// arm makes sure the expiry timer fires by deadline; the caller holds mu.
func (s *clientStream) arm(deadline time.Time) {
	if deadline.IsZero() || (!s.armedAt.IsZero() && !deadline.Before(s.armedAt)) {
		return
	}
	s.armedAt = deadline
	if s.expiry == nil {
		s.expiry = time.AfterFunc(time.Until(deadline), s.expire)
	} else {
		s.expiry.Reset(time.Until(deadline))
	}
}

// expire ends the calls whose deadline passed and re-arms the timer for the
// earliest one left.
func (s *clientStream) expire() {
	now := time.Now()
	var late []chan streamReply
	s.mu.Lock()
	s.armedAt = time.Time{}
	var next time.Time
	for id, p := range s.pending {
		switch {
		case p.deadline.IsZero():
		case !now.Before(p.deadline):
			late = append(late, p.ch)
			delete(s.pending, id)
		case next.IsZero() || p.deadline.Before(next):
			next = p.deadline
		}
	}
	s.arm(next)
	// A write in progress when a call times out is suspect: if it is still
	// the same write stuckWrite after it began, the node stopped reading.
	stuck := false
	if w := s.writeSince.Load(); w != 0 && (len(late) > 0 || w == s.suspect) {
		if began := time.Unix(0, w); now.Sub(began) >= stuckWrite {
			stuck = true
		} else {
			s.suspect = w
			s.arm(began.Add(stuckWrite))
		}
	}
	s.mu.Unlock()
	if stuck {
		s.fail(errStuckWrite) // the late calls get errNoAnswer below
	}
	for _, ch := range late {
		ch <- streamReply{err: errNoAnswer}
	}
}

// stuckWrite: a write in progress for this long when a call times out means
// the node stopped reading (a request is a few hundred bytes; even a large
// CreateTree takes milliseconds on a healthy connection).
const stuckWrite = 100 * time.Millisecond

// errStuckWrite breaks a stream whose node stopped reading requests.
var errStuckWrite = errors.New("the node stopped reading requests")

func (s *clientStream) readLoop() {
	br := bufio.NewReaderSize(s.rwc, 32<<10)
	for {
		f, err := ReadStreamFrame(br, maxStreamReply)
		if err != nil {
			s.fail(fmt.Errorf("stream closed: %w", err))
			return
		}
		id, status, body, err := ParseStreamFrame(f)
		if err != nil {
			s.fail(err)
			return
		}
		s.mu.Lock()
		p, ok := s.pending[id]
		delete(s.pending, id)
		s.mu.Unlock()
		if ok { // else its caller gave up waiting
			p.ch <- streamReply{status: status, body: body}
		}
	}
}

// call sends one operation and waits for its reply until the attempt's
// deadline (zero: none) or the end of ctx, the caller's.
func (s *clientStream) call(ctx context.Context, deadline time.Time, url, op, reqID string, args []byte, stale bool) ([]byte, error, bool) {
	ch := make(chan streamReply, 1)
	s.mu.Lock()
	if s.err != nil {
		err := s.err
		s.mu.Unlock()
		return nil, fmt.Errorf("%s: %s: %w: %w", op, url, ErrUnavailable, err), ctx.Err() == nil
	}
	s.next++
	id := s.next
	s.pending[id] = pendingCall{ch: ch, deadline: deadline}
	s.arm(deadline)
	s.mu.Unlock()

	var flags byte
	if stale {
		flags |= StreamStale
	}
	s.wmu.Lock()
	// Mark the write first, then look at the clock: a call whose deadline
	// passes from here on finds the write marked (see expire), and one
	// whose deadline passed already (waiting for wmu, say) is not sent.
	now := time.Now()
	s.writeSince.Store(now.UnixNano())
	var werr error
	if deadline.IsZero() || now.Before(deadline) {
		s.wbuf = AppendStreamRequest(s.wbuf[:0], id, flags, op, reqID, args)
		_, werr = s.rwc.Write(s.wbuf)
		if cap(s.wbuf) > 64<<10 {
			s.wbuf = nil // do not pin one large request's buffer
		}
	}
	s.writeSince.Store(0)
	s.wmu.Unlock()
	if werr != nil {
		s.fail(werr) // answers ch too
	}
	select {
	case r := <-ch:
		switch {
		case r.err != nil:
			// The stream broke, or the node holds the request without
			// answering (errNoAnswer: a leader cut off from its peers,
			// say; the connection stays, other calls on it may be
			// answered). A mutation may or may not have been applied; its
			// retry elsewhere carries the same request id.
			return nil, fmt.Errorf("%s: %s: %w: %w", op, url, ErrUnavailable, r.err), ctx.Err() == nil
		case r.status == StreamOK:
			return r.body, nil, false
		}
		var we WireError
		if json.Unmarshal(r.body, &we) != nil || we.Kind == "" {
			return nil, fmt.Errorf("%s: %w: undecodable error from %s: %.200s", op, ErrUnavailable, url, r.body), true
		}
		switch we.Kind {
		case KindNotLeader, KindUnavailable:
			return nil, we.Err(), true
		}
		return nil, we.Err(), false
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.pending, id)
		s.mu.Unlock()
		return nil, fmt.Errorf("%s: %w", op, ctx.Err()), false
	}
}

// --- API ---

func (c *Client) Lookup(ctx context.Context, parent Ino, name string) (a Attr, err error) {
	err = c.call(ctx, OpLookup, NameArgs{Parent: parent, Name: name}, &a)
	return
}

func (c *Client) GetAttr(ctx context.Context, ino Ino) (a Attr, err error) {
	err = c.call(ctx, OpGetAttr, InoArgs{Ino: ino}, &a)
	return
}

func (c *Client) GetInode(ctx context.Context, ino Ino) (n Inode, err error) {
	err = c.call(ctx, OpGetInode, InoArgs{Ino: ino}, &n)
	return
}

func (c *Client) SetAttr(ctx context.Context, ino Ino, in SetAttrIn) (a Attr, err error) {
	err = c.call(ctx, OpSetAttr, SetAttrArgs{Ino: ino, In: in}, &a)
	return
}

func (c *Client) Create(ctx context.Context, in CreateIn) (a Attr, err error) {
	err = c.call(ctx, OpCreate, in, &a)
	return
}

func (c *Client) Link(ctx context.Context, ino Ino, newParent Ino, newName string) (a Attr, err error) {
	err = c.call(ctx, OpLink, LinkArgs{Ino: ino, NewParent: newParent, NewName: newName}, &a)
	return
}

func (c *Client) Unlink(ctx context.Context, parent Ino, name string) error {
	return c.call(ctx, OpUnlink, NameArgs{Parent: parent, Name: name}, nil)
}

func (c *Client) Rmdir(ctx context.Context, parent Ino, name string) error {
	return c.call(ctx, OpRmdir, NameArgs{Parent: parent, Name: name}, nil)
}

func (c *Client) Rename(ctx context.Context, oldParent Ino, oldName string, newParent Ino, newName string, flags uint32) error {
	return c.call(ctx, OpRename, RenameArgs{OldParent: oldParent, OldName: oldName, NewParent: newParent, NewName: newName, Flags: flags}, nil)
}

func (c *Client) ReadDir(ctx context.Context, dir Ino, after string, limit int, plus bool) (es []DirEntry, err error) {
	err = c.call(ctx, OpReadDir, ReadDirArgs{Dir: dir, After: after, Limit: limit, Plus: plus}, &es)
	return
}

func (c *Client) SetXattr(ctx context.Context, ino Ino, name string, value []byte, flags int) error {
	if value == nil {
		value = []byte{}
	}
	return c.call(ctx, OpSetXattr, XattrArgs{Ino: ino, Name: name, Value: value, Flags: flags}, nil)
}

func (c *Client) GetXattr(ctx context.Context, ino Ino, name string) (v []byte, err error) {
	err = c.call(ctx, OpGetXattr, XattrArgs{Ino: ino, Name: name}, &v)
	if err == nil && v == nil {
		v = []byte{}
	}
	return
}

func (c *Client) ListXattr(ctx context.Context, ino Ino) (names []string, err error) {
	err = c.call(ctx, OpListXattr, InoArgs{Ino: ino}, &names)
	return
}

func (c *Client) RemoveXattr(ctx context.Context, ino Ino, name string) error {
	return c.call(ctx, OpRemoveXattr, XattrArgs{Ino: ino, Name: name}, nil)
}

func (c *Client) StatFS(ctx context.Context) (s StatFS, err error) {
	err = c.call(ctx, OpStatFS, struct{}{}, &s)
	return
}

func (c *Client) ResolvePath(ctx context.Context, path string) (a Attr, err error) {
	err = c.call(ctx, OpResolvePath, PathArgs{Path: path}, &a)
	return
}

func (c *Client) CreateTree(ctx context.Context, parent Ino, entries []TreeEntry) (inos []Ino, err error) {
	err = c.call(ctx, OpCreateTree, CreateTreeArgs{Parent: parent, Entries: entries}, &inos)
	return
}

func (c *Client) CloneTree(ctx context.Context, src Ino, newParent Ino, newName string) (a Attr, err error) {
	err = c.call(ctx, OpCloneTree, CloneTreeArgs{Src: src, NewParent: newParent, NewName: newName}, &a)
	return
}

func (c *Client) AllocChunk(ctx context.Context, k, m int, shardSize int64, size int64, replicated bool) (ch Chunk, err error) {
	err = c.call(ctx, OpAllocChunk, AllocChunkArgs{K: k, M: m, ShardSize: shardSize, Size: size, Replicated: replicated}, &ch)
	return
}

func (c *Client) CommitExtents(ctx context.Context, ino Ino, extents []Extent, sums map[ChunkID][]uint64, newSize uint64) (a Attr, err error) {
	err = c.call(ctx, OpCommitExtents, CommitExtentsArgs{Ino: ino, Extents: extents, Sums: sums, NewSize: newSize}, &a)
	return
}

func (c *Client) GetChunk(ctx context.Context, id ChunkID) (ch Chunk, err error) {
	err = c.call(ctx, OpGetChunk, ChunkArgs{ID: id}, &ch)
	return
}

func (c *Client) AbandonChunk(ctx context.Context, id ChunkID) error {
	return c.call(ctx, OpAbandonChunk, ChunkArgs{ID: id}, nil)
}

func (c *Client) ReportBadShard(ctx context.Context, id ChunkID, index int, reason string) error {
	return c.call(ctx, OpReportBadShard, BadShardArgs{ID: id, Index: index, Reason: reason}, nil)
}

func (c *Client) Heartbeat(ctx context.Context, hb Heartbeat) (r HeartbeatReply, err error) {
	err = c.call(ctx, OpHeartbeat, hb, &r)
	return
}

func (c *Client) Chunkservers(ctx context.Context) (cs []ChunkserverInfo, err error) {
	err = c.call(ctx, OpChunkservers, struct{}{}, &cs)
	return
}

func (c *Client) SetChunkserverState(ctx context.Context, id ServerID, state string) error {
	return c.call(ctx, OpSetChunkserverState, SetStateArgs{ID: id, State: state}, nil)
}

func (c *Client) CompleteRepair(ctx context.Context, r RepairDone) error {
	return c.call(ctx, OpCompleteRepair, r, nil)
}

func (c *Client) StrayShards(ctx context.Context, id ServerID, names []string) (stray []string, err error) {
	err = c.call(ctx, OpStrayShards, StrayShardsArgs{Server: id, Names: names}, &stray)
	return
}

func (c *Client) Members(ctx context.Context) (m []Member, err error) {
	err = c.call(ctx, OpMembers, struct{}{}, &m)
	return
}

func (c *Client) AddMember(ctx context.Context, id, raftAddr, apiAddr string) error {
	return c.call(ctx, OpAddMember, MemberArgs{ID: id, RaftAddr: raftAddr, APIAddr: apiAddr}, nil)
}

func (c *Client) RemoveMember(ctx context.Context, id string) error {
	return c.call(ctx, OpRemoveMember, MemberArgs{ID: id}, nil)
}

func (c *Client) Status(ctx context.Context) (s Status, err error) {
	err = c.call(ctx, OpStatus, struct{}{}, &s)
	return
}

func (c *Client) KVGet(ctx context.Context, bucket, key string) ([]byte, bool, error) {
	var r KVGetReply
	if err := c.call(ctx, OpKVGet, KVGetArgs{Bucket: bucket, Key: key}, &r); err != nil {
		return nil, false, err
	}
	if r.Found && r.Value == nil {
		r.Value = []byte{}
	}
	return r.Value, r.Found, nil
}

func (c *Client) KVList(ctx context.Context, bucket, prefix, after string, limit int) (ps []KVPair, err error) {
	err = c.call(ctx, OpKVList, KVListArgs{Bucket: bucket, Prefix: prefix, After: after, Limit: limit}, &ps)
	return
}

func (c *Client) KVTxn(ctx context.Context, conds []KVCond, ops []KVOp) error {
	return c.call(ctx, OpKVTxn, KVTxnArgs{Conds: conds, Ops: ops}, nil)
}
