package clusterauth

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testSecret(t *testing.T) *Secret {
	t.Helper()
	text, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	s, err := ParseSecret([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseSecret(t *testing.T) {
	for _, tc := range []struct {
		name string
		text string
		want error
	}{
		{"empty", "  \n", ErrSecretFormat},
		{"password", "correct horse battery staple!", ErrSecretFormat},
		{"short hex", strings.Repeat("ab", 31), ErrSecretTooShort},
		{"zeros", strings.Repeat("00", 32), ErrSecretWeak},
		{"hex", "00112233445566778899aabbccddeeff102132435465768798a9bacbdcedfe0f\n", nil},
		{"base64", "ABEiM0RVZneImaq7zN3u/xAhMkNUZXaHmKm6y9zt/g8=", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseSecret([]byte(tc.text))
			if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
				t.Fatalf("ParseSecret(%q) = %v, want %v", tc.text, err, tc.want)
			}
		})
	}
}

func TestLoadOrCreateSecret(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "cluster-secret")
	a, err := LoadOrCreateSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v, want 0600", st.Mode().Perm())
	}
	b, err := LoadOrCreateSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(a.httpKeys[0]) != string(b.httpKeys[0]) {
		t.Fatal("a second load made a new secret instead of reading the file")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadSecret(path); !errors.Is(err, ErrSecretPermissions) {
		t.Fatalf("world-readable file: %v, want ErrSecretPermissions", err)
	}
	if _, err := LoadSecret(filepath.Join(t.TempDir(), "none")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing file: %v, want not exist", err)
	}
}

// serve runs h behind the middleware with a fixed clock.
func serve(t *testing.T, s *Secret, now time.Time) *httptest.Server {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	srv := httptest.NewServer(s.Middleware(h, WithClock(func() time.Time { return now })))
	t.Cleanup(srv.Close)
	return srv
}

func TestMiddleware(t *testing.T) {
	s, other := testSecret(t), testSecret(t)
	now := time.Unix(1_800_000_000, 0)
	srv := serve(t, s, now)

	sign := func(sec *Secret, method, uri string, at time.Time) string {
		c, err := sec.Credential(method, uri, at)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	for _, tc := range []struct {
		name, method, path, cred string
		want                     int
		reason                   error
	}{
		{"valid", "GET", "/v1/op/x?a=1", sign(s, "GET", "/v1/op/x?a=1", now), 200, nil},
		{"at the window's edge", "GET", "/a", sign(s, "GET", "/a", now.Add(-Window)), 200, nil},
		{"missing header", "GET", "/a", "", 401, ErrMissing},
		{"malformed", "GET", "/a", "v1.x.y.z", 401, ErrMalformed},
		{"wrong secret", "GET", "/a", sign(other, "GET", "/a", now), 401, ErrBadMAC},
		{"replayed after the window", "GET", "/a", sign(s, "GET", "/a", now.Add(-Window-time.Second)), 401, ErrExpired},
		{"from the future", "GET", "/a", sign(s, "GET", "/a", now.Add(Window+time.Second)), 401, ErrExpired},
		{"tampered path", "GET", "/b", sign(s, "GET", "/a", now), 401, ErrBadMAC},
		{"tampered query", "GET", "/a?x=2", sign(s, "GET", "/a?x=1", now), 401, ErrBadMAC},
		{"tampered method", "DELETE", "/a", sign(s, "GET", "/a", now), 401, ErrBadMAC},
		{"open health check", "GET", "/healthz", "", 200, nil},
		{"open metrics", "GET", "/metrics", "", 200, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(tc.method, srv.URL+tc.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tc.cred != "" {
				req.Header.Set(Header, tc.cred)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Fatalf("status %d (%s), want %d", resp.StatusCode, body, tc.want)
			}
			if tc.reason == nil {
				return
			}
			if got := resp.Header.Get(ErrorHeader); got != tc.reason.Error() {
				t.Fatalf("reason %q, want %q", got, tc.reason)
			}
			if strings.Count(string(body), "\n") != 1 || !strings.Contains(string(body), tc.reason.Error()) {
				t.Fatalf("body %q is not one line with the reason", body)
			}
			err = CheckResponse("metaserver x", resp)
			var re *RefusedError
			if !errors.As(err, &re) || !errors.Is(err, ErrRefused) || re.Reason != tc.reason.Error() {
				t.Fatalf("CheckResponse = %v", err)
			}
			if want := "metaserver x refused the request: cluster secret missing or wrong"; err.Error() != want {
				t.Fatalf("message %q, want %q", err, want)
			}
		})
	}
}

func TestMiddlewareOpenPathsConfigurable(t *testing.T) {
	s := testSecret(t)
	h := s.Middleware(http.NotFoundHandler(), WithOpenPaths("/status"))
	for path, want := range map[string]int{"/status": 404, "/healthz": 401} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest("GET", path, nil))
		if w.Code != want {
			t.Errorf("%s: %d, want %d", path, w.Code, want)
		}
	}
	if got := (*Secret)(nil).Middleware(http.NotFoundHandler()); got == nil {
		t.Fatal("nil secret must pass the handler through")
	}
}

func TestTransport(t *testing.T) {
	s := testSecret(t)
	srv := serve(t, s, time.Now())
	resp, err := s.Client(nil).Get(srv.URL + "/some/path?q=%2F")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("signed request: %d %s", resp.StatusCode, resp.Header.Get(ErrorHeader))
	}
	resp, err = testSecret(t).Client(nil).Get(srv.URL + "/some/path")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !errors.Is(CheckResponse("x", resp), ErrRefused) {
		t.Fatalf("other secret: status %d", resp.StatusCode)
	}
	// The caller's request is not modified.
	req, _ := http.NewRequest("GET", srv.URL+"/a", nil)
	resp, err = s.Client(nil).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if req.Header.Get(Header) != "" {
		t.Fatal("RoundTrip modified the caller's request")
	}
	if CheckResponse("x", &http.Response{StatusCode: 401, Header: http.Header{}}) != nil {
		t.Fatal("a 401 of another kind must not look like a cluster refusal")
	}
}

// listen wraps a loopback listener; the test closes it.
func listen(t *testing.T, s *Secret, opts ...StreamOption) *Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := s.NewListener(ln, opts...)
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestStreamHandshake(t *testing.T) {
	s := testSecret(t)
	l := listen(t, s)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	c, err := l.Dial(l.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var sc net.Conn
	select {
	case sc = <-accepted:
	case <-time.After(5 * time.Second):
		t.Fatal("no connection accepted")
	}
	defer sc.Close()
	// After the handshake the stream is plain, both ways.
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(sc, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("server read %q, %v", buf, err)
	}
	if _, err := sc.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("client read %q, %v", buf, err)
	}
}

func TestStreamWrongSecret(t *testing.T) {
	rejected := make(chan error, 1)
	l := listen(t, testSecret(t), WithRejectHook(func(_ net.Addr, err error) { rejected <- err }))
	_, err := testSecret(t).Dial(l.Addr().String(), time.Second, time.Second)
	if !errors.Is(err, ErrRefused) || !errors.Is(err, ErrHandshake) {
		t.Fatalf("dial with the wrong secret: %v, want ErrRefused", err)
	}
	select {
	case err := <-rejected:
		if !errors.Is(err, ErrBadMAC) {
			t.Fatalf("server side: %v, want ErrBadMAC", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("server did not report the refusal")
	}
}

func TestStreamHandshakeTimeout(t *testing.T) {
	rejected := make(chan error, 1)
	l := listen(t, testSecret(t), WithHandshakeTimeout(100*time.Millisecond),
		WithRejectHook(func(_ net.Addr, err error) { rejected <- err }))
	// A silent peer: connects, never answers.
	silent, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	select {
	case err := <-rejected:
		var ne net.Error
		if !errors.Is(err, ErrHandshake) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("silent peer: %v, want a handshake timeout", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the silent peer's handshake never timed out")
	}

	// The other way: a plain server that never sends a challenge.
	plain, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	go func() {
		c, err := plain.Accept()
		if err == nil {
			defer c.Close()
			_, _ = io.Copy(io.Discard, c)
		}
	}()
	start := time.Now()
	_, err = testSecret(t).Dial(plain.Addr().String(), time.Second, 100*time.Millisecond)
	if !errors.Is(err, ErrHandshake) || time.Since(start) > 3*time.Second {
		t.Fatalf("dial to a server without the handshake: %v after %v", err, time.Since(start))
	}
}

func TestListenerClose(t *testing.T) {
	rejected := make(chan error, 1)
	l := listen(t, testSecret(t), WithRejectHook(func(_ net.Addr, err error) { rejected <- err }))
	// A peer silent in the middle of its handshake does not hold Close up
	// for the handshake timeout.
	silent, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	if _, err := io.ReadFull(silent, make([]byte, len(magic)+nonceLen)); err != nil {
		t.Fatalf("no challenge: %v", err)
	}
	errc := make(chan error, 1)
	go func() { _, err := l.Accept(); errc <- err }()
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close waited %v for a silent handshake", d)
	}
	select {
	case err := <-rejected:
		t.Fatalf("a handshake cut by Close was reported as a refusal: %v", err)
	default:
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
}

// TestRotation walks the rolling steps of docs/security.md: a node accepts a
// peer when the peer's first key is one of its own, so nodes one step apart
// always accept each other, and the two ends never do.
func TestRotation(t *testing.T) {
	oldKey, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	newKey, err := GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	steps := []string{oldKey, oldKey + newKey, "\n" + newKey + "\n" + oldKey, newKey}
	secrets := make([]*Secret, len(steps))
	for i, text := range steps {
		if secrets[i], err = ParseSecret([]byte(text)); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	now := time.Now()
	for i, server := range secrets {
		l := listen(t, server)
		for j, client := range secrets {
			signs := map[int]string{0: oldKey, 1: oldKey, 2: newKey, 3: newKey}[j]
			want := strings.Contains(steps[i], signs)
			if (i-j <= 1 && j-i <= 1 && !want) || (i+j == 3 && i*j == 0 && want) {
				t.Fatalf("steps %d and %d: the rotation plan itself is wrong", i, j)
			}
			cred, err := client.Credential("GET", "/x", now)
			if err != nil {
				t.Fatal(err)
			}
			if got := server.Verify(cred, "GET", "/x", now, Window) == nil; got != want {
				t.Errorf("HTTP: server at step %d, client at step %d: accepted %v, want %v", i, j, got, want)
			}
			c, err := client.Dial(l.Addr().String(), time.Second, time.Second)
			if got := err == nil; got != want {
				t.Errorf("stream: server at step %d, client at step %d: accepted %v (%v), want %v", i, j, got, err, want)
			}
			if c != nil {
				c.Close()
			}
		}
	}
}
