package clusterauth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// The handshake in front of a Raft stream, before any Raft byte:
//
//	server -> client: magic (8 bytes) | server nonce (32 bytes)
//	client -> server: HMAC(raft key, magic | nonce | client addr | server addr) (32 bytes)
//	server -> client: one status byte, statusOK or statusRefused
//
// Binding both connection addresses into the MAC means an answer captured on
// one connection is worthless on any other, even for the same nonce. It also
// means a NAT or proxy rewriting addresses between nodes breaks the
// handshake: nodes must see each other's real addresses.
const (
	magic          = "DYRAFT01"
	nonceLen       = 32
	statusOK       = byte('+')
	statusRefused  = byte('-')
	defaultTimeout = 5 * time.Second
)

// ErrHandshake is the cause of every failed stream handshake, on both sides.
var ErrHandshake = errors.New("cluster handshake failed")

func streamMAC(key, nonce []byte, clientAddr, serverAddr string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(magic))
	m.Write(nonce)
	m.Write([]byte(clientAddr))
	m.Write([]byte{0})
	m.Write([]byte(serverAddr))
	return m.Sum(nil)
}

// StreamOption configures a Listener.
type StreamOption func(*Listener)

// WithHandshakeTimeout bounds a handshake, on either side (default 5 s).
func WithHandshakeTimeout(d time.Duration) StreamOption {
	return func(l *Listener) { l.timeout = d }
}

// WithRejectHook is called for every refused incoming connection, e.g. to log
// it. It must not block.
func WithRejectHook(f func(remote net.Addr, err error)) StreamOption {
	return func(l *Listener) { l.onReject = f }
}

// Listener authenticates every connection it accepts and dials. Its methods
// (Accept, Close, Addr, Dial) are those of hashicorp/raft's StreamLayer, except
// that Dial takes a plain string address: the caller adapts it in one line,
// which keeps this package free of the Raft dependency.
type Listener struct {
	s        *Secret
	ln       net.Listener
	timeout  time.Duration
	onReject func(net.Addr, error)

	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup

	mu       sync.Mutex
	acceptE  error                 // the underlying listener's final error
	shaking  map[net.Conn]struct{} // handshakes in progress, cut short by Close
	isClosed bool
}

// NewListener wraps ln. Handshakes run in their own goroutines, so a peer
// that connects and stays silent delays nobody else's Accept.
func (s *Secret) NewListener(ln net.Listener, opts ...StreamOption) *Listener {
	l := &Listener{s: s, ln: ln, timeout: defaultTimeout, conns: make(chan net.Conn), done: make(chan struct{}),
		shaking: map[net.Conn]struct{}{}}
	for _, o := range opts {
		o(l)
	}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.ln.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			l.mu.Lock()
			l.acceptE = err
			l.mu.Unlock()
			l.close()
			return
		}
		l.mu.Lock()
		if l.isClosed {
			l.mu.Unlock()
			_ = c.Close()
			continue // Accept fails next: the listener is closed
		}
		l.shaking[c] = struct{}{}
		l.mu.Unlock()
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			err := l.serverHandshake(c)
			l.mu.Lock()
			delete(l.shaking, c)
			closing := l.isClosed
			l.mu.Unlock()
			if err != nil {
				_ = c.Close()
				// A handshake Close cut short is no refusal worth reporting.
				if l.onReject != nil && !closing {
					l.onReject(c.RemoteAddr(), err)
				}
				return
			}
			select {
			case l.conns <- c:
			case <-l.done:
				_ = c.Close()
			}
		}()
	}
}

func (l *Listener) serverHandshake(c net.Conn) error {
	if err := c.SetDeadline(time.Now().Add(l.timeout)); err != nil {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	challenge := make([]byte, len(magic)+nonceLen)
	copy(challenge, magic)
	if _, err := rand.Read(challenge[len(magic):]); err != nil {
		return fmt.Errorf("%w: nonce: %w", ErrHandshake, err)
	}
	if _, err := c.Write(challenge); err != nil {
		return fmt.Errorf("%w: sending challenge: %w", ErrHandshake, err)
	}
	answer := make([]byte, sha256.Size)
	if _, err := io.ReadFull(c, answer); err != nil {
		return fmt.Errorf("%w: reading answer: %w", ErrHandshake, err)
	}
	ok := false
	for _, k := range l.s.raftKeys {
		want := streamMAC(k, challenge[len(magic):], c.RemoteAddr().String(), c.LocalAddr().String())
		ok = hmac.Equal(answer, want) || ok
	}
	if !ok {
		_, _ = c.Write([]byte{statusRefused})
		return fmt.Errorf("%w: %w", ErrHandshake, ErrBadMAC)
	}
	if _, err := c.Write([]byte{statusOK}); err != nil {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	return c.SetDeadline(time.Time{})
}

// Accept returns the next connection whose peer proved it holds the secret.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.acceptE != nil && !errors.Is(l.acceptE, net.ErrClosed) {
			return nil, l.acceptE
		}
		return nil, net.ErrClosed
	}
}

func (l *Listener) close() { l.once.Do(func() { close(l.done) }) }

// Close stops accepting, cuts handshakes in progress and waits for their
// goroutines.
func (l *Listener) Close() error {
	err := l.ln.Close()
	l.mu.Lock()
	l.isClosed = true
	for c := range l.shaking {
		_ = c.Close()
	}
	l.mu.Unlock()
	l.close()
	l.wg.Wait()
	return err
}

// Addr is the underlying listener's address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Dial connects to a peer's Listener and answers its challenge; the
// connection it returns carries the plain stream from then on.
func (l *Listener) Dial(addr string, timeout time.Duration) (net.Conn, error) {
	return l.s.Dial(addr, timeout, l.timeout)
}

// Dial connects to addr (within dialTimeout) and authenticates the
// connection (within handshakeTimeout).
func (s *Secret) Dial(addr string, dialTimeout, handshakeTimeout time.Duration) (net.Conn, error) {
	c, err := (&net.Dialer{Timeout: dialTimeout}).Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if err := s.clientHandshake(c, handshakeTimeout); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("%s: %w", addr, err)
	}
	return c, nil
}

func (s *Secret) clientHandshake(c net.Conn, timeout time.Duration) error {
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
		return fmt.Errorf("%w: %w", ErrHandshake, err)
	}
	// Exact-size reads straight from the connection: a buffered reader
	// could swallow the first bytes of the stream that follows.
	challenge := make([]byte, len(magic)+nonceLen)
	if _, err := io.ReadFull(c, challenge); err != nil {
		return fmt.Errorf("%w: reading challenge (is the peer running without a cluster secret?): %w", ErrHandshake, err)
	}
	if string(challenge[:len(magic)]) != magic {
		return fmt.Errorf("%w: peer did not send a challenge (is it running without a cluster secret?)", ErrHandshake)
	}
	if _, err := c.Write(streamMAC(s.raftKeys[0], challenge[len(magic):], c.LocalAddr().String(), c.RemoteAddr().String())); err != nil {
		return fmt.Errorf("%w: sending answer: %w", ErrHandshake, err)
	}
	var status [1]byte
	if _, err := io.ReadFull(c, status[:]); err != nil {
		return fmt.Errorf("%w: peer closed the connection: %w: %w", ErrHandshake, ErrRefused, err)
	}
	if status[0] != statusOK {
		return fmt.Errorf("%w: %w", ErrHandshake, ErrRefused)
	}
	return c.SetDeadline(time.Time{})
}
