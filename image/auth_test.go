package image

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// authGate puts a registry behind docker's token flow (or Basic
// authentication), as `dockyard serve --auth` does: users own the
// repositories under their name and nothing else.
type authGate struct {
	next      http.Handler
	users     map[string]string // name -> password
	basic     bool              // challenge with Basic instead of Bearer
	expiresIn int
	redirect  string // when set, blob GETs are redirected to this server

	mu            sync.Mutex
	tokens        map[string]gateToken
	tokenRequests int
	scopes        []string // scopes asked for, in order
	refused       []string // "METHOD path" answered 401
	bodies401     int      // 401s to requests that carried a body
	realmHost     string
}

type gateToken struct {
	user   string
	access map[string]string // repo -> "pull" or "pull,push"
}

func newAuthGate(next http.Handler) *authGate {
	return &authGate{next: next, users: map[string]string{"alice": "alice-secret-1", "bob": "bob-secret-22"},
		tokens: map[string]gateToken{}, expiresIn: 60}
}

func owns(user, repo string) bool {
	return user != "" && (repo == user || strings.HasPrefix(repo, user+"/"))
}

func (g *authGate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if r.URL.Path == "/token" {
		g.serveToken(w, r)
		return
	}
	repo, action := repoOf(r.URL.Path), actionOf(r.Method)
	user, granted, known := "", "", false
	if g.basic {
		if u, p, ok := r.BasicAuth(); ok && g.users[u] == p && p != "" {
			user, known = u, true
			if owns(u, repo) {
				granted = "pull,push"
			}
		}
	} else if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		if t, ok := g.tokens[tok]; ok {
			user, granted, known = t.user, t.access[repo], true
		}
	}
	allowed := repo == "" && known || strings.Contains(granted, action)
	if !allowed {
		if known && (repo == "" || !owns(user, repo)) {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		g.refused = append(g.refused, r.Method+" "+r.URL.Path)
		if r.ContentLength > 0 {
			g.bodies401++
		}
		if g.basic {
			w.Header().Set("WWW-Authenticate", `Basic realm="stub"`)
		} else {
			ch := fmt.Sprintf(`Bearer realm="http://%s/token",service="stub"`, r.Host)
			if repo != "" {
				scope := "pull"
				if action == "push" {
					scope = "pull,push"
				}
				ch += fmt.Sprintf(`,scope="repository:%s:%s"`, repo, scope)
			}
			w.Header().Set("WWW-Authenticate", ch)
		}
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if g.redirect != "" && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") {
		http.Redirect(w, r, g.redirect+r.URL.Path, http.StatusTemporaryRedirect)
		return
	}
	g.mu.Unlock()
	defer g.mu.Lock()
	g.next.ServeHTTP(w, r)
}

func (g *authGate) serveToken(w http.ResponseWriter, r *http.Request) {
	g.tokenRequests++
	user, scopes, service := "", r.URL.Query()["scope"], r.URL.Query().Get("service")
	if u, p, ok := r.BasicAuth(); ok {
		if g.users[u] != p {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		user = u
	}
	if r.Method == http.MethodPost {
		// The OAuth2 refresh-token grant: an identity token "refresh-USER".
		r.ParseForm()
		u, _ := strings.CutPrefix(r.PostForm.Get("refresh_token"), "refresh-")
		if r.PostForm.Get("grant_type") != "refresh_token" || g.users[u] == "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		user, scopes, service = u, strings.Fields(r.PostForm.Get("scope")), r.PostForm.Get("service")
	}
	if service != "stub" {
		http.Error(w, "wrong service", http.StatusBadRequest)
		return
	}
	t := gateToken{user: user, access: map[string]string{}}
	for _, s := range scopes {
		g.scopes = append(g.scopes, s)
		parts := strings.Split(s, ":")
		if len(parts) == 3 && owns(user, parts[1]) {
			t.access[parts[1]] = parts[2]
		}
	}
	tok := fmt.Sprintf("token-%d", g.tokenRequests)
	g.tokens[tok] = t
	json.NewEncoder(w).Encode(map[string]any{"token": tok, "expires_in": g.expiresIn})
}

// authTestRegistry starts a push registry behind an auth gate and returns
// them with the registry's host.
func authTestRegistry(t *testing.T) (*pushRegistry, *authGate, string) {
	t.Helper()
	reg := newPushRegistry()
	gate := newAuthGate(reg)
	srv := httptest.NewServer(gate)
	t.Cleanup(srv.Close)
	return reg, gate, strings.TrimPrefix(srv.URL, "http://")
}

// streamed hides that a reader could be read again, as a layer file
// streamed from disk cannot be replayed by the HTTP client.
type streamed struct{ io.ReadSeeker }

func (g *authGate) counts() (int, []string, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.tokenRequests, append([]string(nil), g.scopes...), g.bodies401
}

func TestAuthBearerPushAndPull(t *testing.T) {
	_, gate, host := authTestRegistry(t)
	r := &Resolver{Keychain: Static{Username: "alice", Password: "alice-secret-1", Source: "test"}}
	ctx := context.Background()
	ref := Ref{Registry: host, Repo: "alice/app", Tag: "v1"}
	c := testCommit(t, nil)
	c.Blob = streamed{c.Blob}

	if err := r.Ping(ctx, ref); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	d, err := r.Push(ctx, ref, c)
	if err != nil {
		t.Fatalf("Push: %v", err)
	}
	n, scopes, bodies := gate.counts()
	// /v2/ (no scope), then the HEAD's pull token, then the POST's push one.
	if n != 3 || len(scopes) != 2 || scopes[0] != "repository:alice/app:pull" || scopes[1] != "repository:alice/app:pull,push" {
		t.Errorf("%d token requests, scopes %q: want the ping's, a pull token, then a push one", n, scopes)
	}
	if bodies != 0 {
		t.Errorf("%d requests with a body were refused: the streamed upload must carry the token up front", bodies)
	}

	// Pulls reuse the cached token: no more token requests.
	for i := 0; i < 2; i++ {
		res, err := r.Resolve(ctx, ref)
		if err != nil {
			t.Fatalf("Resolve: %v", err)
		}
		if res.ManifestDigest != d {
			t.Errorf("resolved %s, pushed %s", res.ManifestDigest, d)
		}
	}
	if n2, _, _ := gate.counts(); n2 != n {
		t.Errorf("%d token requests after two pulls, want still %d", n2, n)
	}

	// Another repository gets a token scoped to it.
	if _, err := r.Push(ctx, Ref{Registry: host, Repo: "alice/other", Tag: "v1"}, testCommit(t, nil)); err != nil {
		t.Fatalf("Push alice/other: %v", err)
	}
	_, scopes, _ = gate.counts()
	if last := scopes[len(scopes)-1]; last != "repository:alice/other:pull,push" {
		t.Errorf("scopes %q: want the last for alice/other", scopes)
	}

	// Past its expiry (less the margin) a token is fetched again.
	now := time.Now()
	r.client().Transport.(*authTransport).now = func() time.Time { return now.Add(55 * time.Second) }
	before, _, _ := gate.counts()
	if _, err := r.Resolve(ctx, ref); err != nil {
		t.Fatalf("Resolve after expiry: %v", err)
	}
	if after, _, _ := gate.counts(); after != before+1 {
		t.Errorf("%d token requests after expiry, want %d", after, before+1)
	}
}

func TestAuthErrors(t *testing.T) {
	_, _, host := authTestRegistry(t)
	ctx := context.Background()
	ref := Ref{Registry: host, Repo: "alice/app", Tag: "v1"}

	// A wrong password names the user and the source, never the password.
	r := &Resolver{Keychain: Static{Username: "alice", Password: "not-the-one", Source: "the test's file"}}
	_, err := r.Resolve(ctx, ref)
	var ae *AuthError
	if !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("wrong password: %v", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "refused user alice (credentials from the test's file)") || strings.Contains(msg, "not-the-one") {
		t.Errorf("wrong password: %q", msg)
	}

	// No credentials: how to log in.
	r = &Resolver{Keychain: Chain{}}
	_, err = r.Resolve(ctx, ref)
	if err == nil || !strings.Contains(err.Error(), `docker login `+host) {
		t.Errorf("no credentials: %v", err)
	}

	// Someone else's repository: the right is missing.
	r = &Resolver{Keychain: Static{Username: "bob", Password: "bob-secret-22", Source: "test"}}
	_, err = r.Push(ctx, ref, testCommit(t, nil))
	if !errors.As(err, &ae) || ae.Status != http.StatusForbidden || !strings.Contains(err.Error(), "user bob (credentials from test) has no right to pull alice/app") {
		t.Errorf("another user's repository: %v", err)
	}

	// A broken helper is reported when credentials are needed.
	r = &Resolver{Keychain: Chain{keychainFunc(func(string) (Credential, bool, error) {
		return Credential{}, false, errors.New("helper exploded")
	})}}
	if _, err = r.Resolve(ctx, ref); err == nil || !strings.Contains(err.Error(), "helper exploded") {
		t.Errorf("broken helper: %v", err)
	}
}

func TestAuthIdentityToken(t *testing.T) {
	_, _, host := authTestRegistry(t)
	ctx := context.Background()
	ref := Ref{Registry: host, Repo: "alice/app", Tag: "v1"}
	r := &Resolver{Keychain: Static{IdentityToken: "refresh-alice", Source: "test"}}
	if _, err := r.Push(ctx, ref, testCommit(t, nil)); err != nil {
		t.Fatalf("Push with an identity token: %v", err)
	}
	r = &Resolver{Keychain: Static{IdentityToken: "refresh-mallory", Source: "test"}}
	if _, err := r.Resolve(ctx, ref); err == nil || !strings.Contains(err.Error(), "refused user (identity token) (credentials from test)") {
		t.Errorf("an unknown identity token: %v", err)
	}
}

type keychainFunc func(string) (Credential, bool, error)

func (f keychainFunc) Lookup(h string) (Credential, bool, error) { return f(h) }

func TestAuthBasic(t *testing.T) {
	_, gate, host := authTestRegistry(t)
	gate.basic = true
	r := &Resolver{Keychain: Static{Username: "alice", Password: "alice-secret-1", Source: "test"}}
	ctx := context.Background()
	ref := Ref{Registry: host, Repo: "alice/app", Tag: "v1"}
	c := testCommit(t, nil)
	c.Blob = streamed{c.Blob}
	if _, err := r.Push(ctx, ref, c); err != nil {
		t.Fatalf("Push: %v", err)
	}
	if _, err := r.Resolve(ctx, ref); err != nil {
		t.Fatalf("Resolve: %v", err)
	}
	if len(gate.refused) != 1 || gate.bodies401 != 0 {
		t.Errorf("refused %q: want only the first request, then Basic on every one", gate.refused)
	}
	r = &Resolver{Keychain: Static{Username: "alice", Password: "nope-nope", Source: "test"}}
	if _, err := r.Resolve(ctx, ref); err == nil || !strings.Contains(err.Error(), "refused user alice") {
		t.Errorf("wrong Basic password: %v", err)
	}
}

func TestAuthNotSentToRedirectTarget(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	challenge := false
	blobs := newPushRegistry()
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Get("Authorization"))
		ask := challenge
		mu.Unlock()
		if ask && r.Header.Get("Authorization") == "" {
			// Asking is not enough to get the registry's credentials.
			w.Header().Set("WWW-Authenticate", `Basic realm="store"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		blobs.ServeHTTP(w, r)
	}))
	defer store.Close()
	for _, basic := range []bool{false, true} {
		reg, gate, host := authTestRegistry(t)
		gate.basic = basic
		// A Static keychain would hand its credential to any host asking.
		r := &Resolver{Keychain: Static{Username: "alice", Password: "alice-secret-1", Source: "test"}}
		ref := Ref{Registry: host, Repo: "alice/app", Tag: "v1"}
		if _, err := r.Push(context.Background(), ref, testCommit(t, nil)); err != nil {
			t.Fatal(err)
		}
		blobs.blobs = reg.blobs
		gate.redirect = store.URL
		if _, err := r.Resolve(context.Background(), ref); err != nil {
			t.Fatalf("Resolve through a redirect: %v", err)
		}
		mu.Lock()
		challenge = true
		mu.Unlock()
		if _, err := r.Resolve(context.Background(), ref); err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("a redirect target asking for credentials: %v", err)
		}
		mu.Lock()
		challenge = false
		mu.Unlock()
	}
	if len(seen) != 4 {
		t.Fatalf("%d requests reached the blob store, want 4", len(seen))
	}
	for _, a := range seen {
		if a != "" {
			t.Errorf("the blob store on another host got Authorization %q", a)
		}
	}
}

func TestAuthPlainHTTPRule(t *testing.T) {
	tr := &authTransport{}
	c := Credential{Username: "alice", Source: "test"}
	for _, tc := range []struct {
		url   string
		plain bool
		ok    bool
	}{
		{"http://127.0.0.1:5000/v2/", false, true},
		{"http://localhost:5000/v2/", false, true},
		{"http://[::1]:5000/v2/", false, true},
		{"https://reg.example:5000/v2/", false, true},
		{"http://reg.example:5000/v2/", false, false},
		{"http://10.1.2.3:5000/v2/", false, false},
		{"http://10.1.2.3:5000/v2/", true, true},
	} {
		u, _ := url.Parse(tc.url)
		tr.plainHTTP = tc.plain
		err := tr.checkPlain(u, u.Host, c)
		if (err == nil) != tc.ok {
			t.Errorf("%s (explicit http %v): %v", tc.url, tc.plain, err)
		}
	}

	// A realm on another host over plain HTTP gets no credentials.
	tr = &authTransport{base: http.DefaultTransport, now: time.Now}
	reqURL, _ := url.Parse("http://127.0.0.1:5000/v2/a/manifests/x")
	ch := challenge{scheme: "bearer", params: map[string]string{"realm": "http://127.0.0.2:9/token"}}
	if _, err := tr.fetchToken(context.Background(), reqURL, ch, c, true); err == nil || !strings.Contains(err.Error(), "another host") {
		t.Errorf("realm on another host over http: %v", err)
	}
}

func TestParseChallenge(t *testing.T) {
	c, ok := parseChallenge([]string{`Basic realm="x"`, `Bearer realm="http://h/token",service="dockyard",scope="repository:a/b:pull,push",error="insufficient_scope"`})
	if !ok || c.scheme != "bearer" || c.params["realm"] != "http://h/token" || c.params["scope"] != "repository:a/b:pull,push" || c.params["service"] != "dockyard" {
		t.Errorf("got %+v", c)
	}
	c, _ = parseChallenge([]string{`Basic realm="a \"quoted\", realm"`})
	if c.scheme != "basic" || c.params["realm"] != `a "quoted", realm` {
		t.Errorf("got %+v", c)
	}
	if _, ok := parseChallenge(nil); ok {
		t.Error("no header is no challenge")
	}
	for p, want := range map[string]string{
		"/v2/":                       "",
		"/v2/a/b/manifests/v1":       "a/b",
		"/v2/a/blobs/uploads/u1":     "a",
		"/v2/a/blobs/c/manifests/t":  "a/blobs/c",
		"/v2/x/referrers/sha256:abc": "x",
		"/v2/x/blobs/sha256:abc":     "x",
		"/token":                     "",
	} {
		if got := repoOf(p); got != want {
			t.Errorf("repoOf(%q) = %q, want %q", p, got, want)
		}
	}
}

// writeConfig writes a docker config file in a temp dir and returns its
// path.
func writeConfig(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// fakeHelper puts docker-credential-NAME on PATH: it answers host with
// user/secret and anything else with docker's "not found".
func fakeHelper(t *testing.T, dir, name, host, user, secret string) {
	t.Helper()
	script := fmt.Sprintf(`#!/bin/sh
[ "$1" = get ] || exit 2
read -r server
if [ "$server" = %q ]; then
  printf '{"ServerURL":"%%s","Username":"%s","Secret":"%s"}' "$server"
  exit 0
fi
echo "credentials not found in native keychain"
exit 1
`, host, user, secret)
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-"+name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestConfigFile(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	bin := t.TempDir()
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	fakeHelper(t, bin, "fake", "helped:5000", "hank", "from-helper")
	fakeHelper(t, bin, "store", "stored:5000", "sally", "from-store")
	fakeHelper(t, bin, "tok", "tokened:5000", "<token>", "refresh-me")

	p := writeConfig(t, map[string]any{
		"auths": map[string]any{
			"127.0.0.1:5000":              map[string]string{"auth": b64("alice:pw:with:colons")},
			"http://schemed:5000":         map[string]string{"username": "una", "password": "pw2"},
			"https://index.docker.io/v1/": map[string]string{"auth": b64("hubuser:hubpw")},
			"https://ident:5000/v1/":      map[string]string{"identitytoken": "idtok"},
			"empty:5000":                  map[string]string{},
			"stored:5000":                 map[string]string{},
			"onlyfile:5000":               map[string]string{"auth": b64("olga:pw3")},
			"bad:5000":                    map[string]string{"auth": "%%%"},
		},
		"credHelpers": map[string]string{"helped:5000": "fake", "tokened:5000": "tok", "missing:5000": "nosuchhelper"},
		"credsStore":  "store",
	})
	kc := ConfigFile(p)
	for _, tc := range []struct {
		host, user, pass, idtok, source string
		ok                              bool
		err                             string
	}{
		{host: "127.0.0.1:5000", user: "alice", pass: "pw:with:colons", ok: true, source: p},
		{host: "schemed:5000", user: "una", pass: "pw2", ok: true, source: p},
		{host: "docker.io", user: "hubuser", pass: "hubpw", ok: true, source: p},
		{host: "registry-1.docker.io", user: "hubuser", pass: "hubpw", ok: true, source: p},
		{host: "ident:5000", idtok: "idtok", ok: true, source: p},
		{host: "helped:5000", user: "hank", pass: "from-helper", ok: true, source: "credential helper docker-credential-fake"},
		{host: "tokened:5000", idtok: "refresh-me", ok: true, source: "credential helper docker-credential-tok"},
		{host: "stored:5000", user: "sally", pass: "from-store", ok: true, source: "credential helper docker-credential-store"},
		// The store knows nothing of it; the file's entry is used.
		{host: "onlyfile:5000", user: "olga", pass: "pw3", ok: true, source: p},
		{host: "empty:5000"},
		{host: "127.0.0.1:5001"},
		{host: "missing:5000", err: "docker-credential-nosuchhelper for missing:5000 is not installed"},
		{host: "bad:5000", err: "is not base64"},
	} {
		c, ok, err := kc.Lookup(tc.host)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: error %v, want %q", tc.host, err, tc.err)
			}
			continue
		}
		if err != nil || ok != tc.ok || c.Username != tc.user || c.Password != tc.pass || c.IdentityToken != tc.idtok || c.Source != tc.source {
			t.Errorf("%s: got %+v %v %v, want %s/%s/%s from %s", tc.host, c, ok, err, tc.user, tc.pass, tc.idtok, tc.source)
		}
	}

	if _, ok, err := ConfigFile(filepath.Join(t.TempDir(), "none.json")).Lookup("x:1"); ok || err != nil {
		t.Errorf("a missing file: %v %v", ok, err)
	}
	bad := filepath.Join(t.TempDir(), "config.json")
	os.WriteFile(bad, []byte("{not json"), 0o600)
	if _, _, err := ConfigFile(bad).Lookup("x:1"); err == nil || !strings.Contains(err.Error(), "not a docker config file") {
		t.Errorf("a broken file: %v", err)
	}
}

func TestDefaultKeychain(t *testing.T) {
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	docker := writeConfig(t, map[string]any{"auths": map[string]any{"a:1": map[string]string{"auth": b64("dan:pw")}}})
	runtime := t.TempDir()
	os.MkdirAll(filepath.Join(runtime, "containers"), 0o700)
	podman := filepath.Join(runtime, "containers", "auth.json")
	os.WriteFile(podman, []byte(`{"auths":{"a:1":{"auth":"`+b64("pat:pw")+`"},"b:1":{"auth":"`+b64("pat:pw")+`"}}}`), 0o600)
	t.Setenv("DOCKER_CONFIG", filepath.Dir(docker))
	t.Setenv("XDG_RUNTIME_DIR", runtime)
	t.Setenv("REGISTRY_AUTH_FILE", "")
	kc := DefaultKeychain()
	if c, ok, err := kc.Lookup("a:1"); !ok || err != nil || c.Username != "dan" {
		t.Errorf("docker's config first: %+v %v %v", c, ok, err)
	}
	if c, ok, err := kc.Lookup("b:1"); !ok || err != nil || c.Username != "pat" || c.Source != podman {
		t.Errorf("then podman's auth.json: %+v %v %v", c, ok, err)
	}
	if _, ok, err := kc.Lookup("c:1"); ok || err != nil {
		t.Errorf("an unknown host: %v %v", ok, err)
	}
}
