package clusterauth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const (
	// Header carries the credential: "v1.<unix seconds>.<nonce hex>.<mac hex>".
	Header = "Dockyard-Cluster-Auth"
	// ErrorHeader on a 401 says why the credential was refused. Its presence
	// tells a client the refusal came from this middleware, not from some
	// other authentication (the registry's tokens use 401 too).
	ErrorHeader = "Dockyard-Cluster-Auth-Error"
	// Window is how far a credential's time may be from the server's clock,
	// either way: it bounds how long a captured header stays usable and
	// how much clock skew between nodes is tolerated.
	Window = 5 * time.Minute
)

// Reasons a request is refused, matched with errors.Is on a *RefusedError's
// Reason or on the error Verify returns.
var (
	ErrMissing   = errors.New("no cluster credential")
	ErrMalformed = errors.New("malformed cluster credential")
	ErrExpired   = errors.New("cluster credential outside the time window (replayed, or clocks more than 5 minutes apart)")
	ErrBadMAC    = errors.New("cluster credential does not match (wrong secret, or the request was altered)")
	// ErrRefused matches every *RefusedError.
	ErrRefused = errors.New("cluster secret missing or wrong")
)

// RefusedError is a peer's refusal of our cluster credential (or of its
// absence), as a client sees it.
type RefusedError struct {
	Peer   string // who refused, e.g. "metaserver 10.0.0.1:9500"
	Reason string // the peer's own one-line reason, possibly empty
}

func (e *RefusedError) Error() string {
	return e.Peer + " refused the request: " + ErrRefused.Error()
}

// Is makes errors.Is(err, ErrRefused) true.
func (e *RefusedError) Is(target error) bool { return target == ErrRefused }

// CheckResponse returns a *RefusedError when resp is this package's 401, and
// nil for any other response. peer names the server in the message.
func CheckResponse(peer string, resp *http.Response) error {
	if resp.StatusCode != http.StatusUnauthorized {
		return nil
	}
	reason, ok := resp.Header[http.CanonicalHeaderKey(ErrorHeader)]
	if !ok {
		return nil
	}
	r := ""
	if len(reason) > 0 {
		r = reason[0]
	}
	return &RefusedError{Peer: peer, Reason: r}
}

// sign computes the MAC of one request. Fields are separated by a byte that
// cannot occur in a method, a request URI or a decimal number, so no two
// requests share a message.
func sign(key []byte, method, uri, ts, nonce string) []byte {
	m := hmac.New(sha256.New, key)
	for _, f := range []string{method, uri, ts, nonce} {
		m.Write([]byte(f))
		m.Write([]byte{0})
	}
	return m.Sum(nil)
}

// Credential returns the header value for a request with this method and
// request URI (path and query, as sent on the request line) at time now.
func (s *Secret) Credential(method, uri string, now time.Time) (string, error) {
	var nb [16]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return "", fmt.Errorf("cluster credential nonce: %w", err)
	}
	ts := strconv.FormatInt(now.Unix(), 10)
	nonce := hex.EncodeToString(nb[:])
	return "v1." + ts + "." + nonce + "." + hex.EncodeToString(sign(s.httpKeys[0], method, uri, ts, nonce)), nil
}

// Verify checks a credential for a request with this method and request URI
// at time now. The error is one of ErrMissing, ErrMalformed, ErrExpired or
// ErrBadMAC.
func (s *Secret) Verify(cred, method, uri string, now time.Time, window time.Duration) error {
	if cred == "" {
		return ErrMissing
	}
	parts := strings.Split(cred, ".")
	if len(parts) != 4 || parts[0] != "v1" || len(parts[2]) != 32 {
		return ErrMalformed
	}
	sec, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return ErrMalformed
	}
	mac, err := hex.DecodeString(parts[3])
	if err != nil {
		return ErrMalformed
	}
	// The MAC first: an outsider learns nothing about our clock.
	ok := false
	for _, k := range s.httpKeys {
		ok = hmac.Equal(mac, sign(k, method, uri, parts[1], parts[2])) || ok
	}
	if !ok {
		return ErrBadMAC
	}
	if d := now.Sub(time.Unix(sec, 0)); d > window || d < -window {
		return ErrExpired
	}
	return nil
}

// MiddlewareOption configures Middleware.
type MiddlewareOption func(*middleware)

// WithOpenPaths replaces the paths served without a credential (default
// /healthz and /metrics, so load balancers and Prometheus need no secret).
// Paths match exactly.
func WithOpenPaths(paths ...string) MiddlewareOption {
	return func(m *middleware) {
		m.open = map[string]bool{}
		for _, p := range paths {
			m.open[p] = true
		}
	}
}

// WithClock replaces time.Now, for tests.
func WithClock(now func() time.Time) MiddlewareOption {
	return func(m *middleware) { m.now = now }
}

// WithWindow replaces the accepted clock difference (default Window).
func WithWindow(d time.Duration) MiddlewareOption {
	return func(m *middleware) { m.window = d }
}

type middleware struct {
	s      *Secret
	next   http.Handler
	open   map[string]bool
	now    func() time.Time
	window time.Duration
}

// Middleware serves next only to requests with a valid credential (and to
// the open paths); others get 401 with a one-line reason in the body and in
// ErrorHeader. A nil secret returns next unchanged: no secret, no checks.
func (s *Secret) Middleware(next http.Handler, opts ...MiddlewareOption) http.Handler {
	if s == nil {
		return next
	}
	m := &middleware{s: s, next: next, now: time.Now, window: Window,
		open: map[string]bool{"/healthz": true, "/metrics": true}}
	for _, o := range opts {
		o(m)
	}
	return m
}

func (m *middleware) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if m.open[r.URL.Path] {
		m.next.ServeHTTP(w, r)
		return
	}
	// The raw request line, exactly what the client signed; r.URL may
	// have been cleaned or re-encoded.
	uri := r.RequestURI
	if uri == "" {
		uri = r.URL.RequestURI()
	}
	if err := m.s.Verify(r.Header.Get(Header), r.Method, uri, m.now(), m.window); err != nil {
		w.Header().Set(ErrorHeader, err.Error())
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Www-Authenticate", "DockyardCluster")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte("cluster authentication failed: " + err.Error() + "\n"))
		return
	}
	m.next.ServeHTTP(w, r)
}

// Transport adds the credential to every request before Base sends it.
type Transport struct {
	Secret *Secret
	Base   http.RoundTripper // nil means http.DefaultTransport
	now    func() time.Time
}

// RoundTrip implements http.RoundTripper. It leaves req itself untouched,
// as the interface requires, and signs a shallow copy.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if t.Secret == nil {
		return base.RoundTrip(req)
	}
	now := time.Now
	if t.now != nil {
		now = t.now
	}
	cred, err := t.Secret.Credential(req.Method, req.URL.RequestURI(), now())
	if err != nil {
		if req.Body != nil {
			_ = req.Body.Close()
		}
		return nil, err
	}
	r := req.Clone(req.Context())
	r.Header.Set(Header, cred)
	return base.RoundTrip(r)
}

// Client returns a copy of hc (nil: a new default client) whose transport
// signs every request. A nil secret returns hc unchanged.
func (s *Secret) Client(hc *http.Client) *http.Client {
	if s == nil {
		return hc
	}
	var c http.Client
	if hc != nil {
		c = *hc
	}
	c.Transport = &Transport{Secret: s, Base: c.Transport}
	return &c
}
