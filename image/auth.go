package image

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// How a Resolver authenticates, the rules in one place:
//
//   - It answers challenges; it sends nothing until a registry asks. On a
//     401 with a Bearer challenge it fetches a token from the realm (with
//     the user's credentials when it finds some, anonymously otherwise),
//     keeps it per registry host and repository until it expires, and
//     repeats the request once. On a Basic challenge it repeats the request
//     with the credentials, and sends them on every later request to that
//     host.
//   - Credentials are looked up only when a registry asks for them (so a
//     broken credential helper matters only for registries that need it),
//     in the Resolver's Keychain, by default DefaultKeychain.
//   - A request whose body cannot be sent twice (a streamed layer) is never
//     answered with a retry: it carries the token an earlier request of the
//     same repository fetched (the upload's POST, or a HEAD).
//   - Credentials, and tokens, go only to the host the request was made
//     for: never to where a registry redirects (blob downloads sent to
//     other storage), and to a token realm on another host only over
//     HTTPS.
//   - Over plain HTTP, credentials go only to loopback hosts, unless the
//     caller set the Resolver's Scheme to "http" explicitly (the user asked
//     for plain HTTP to that registry, e.g. with --registry-scheme http).
//   - Credentials and tokens are never logged or put in error messages;
//     errors name the user and where the credentials came from.

// tokenMargin is how long before its expiry a token stops being used, so
// a request does not reach the registry with a token that just ran out.
const tokenMargin = 10 * time.Second

// defaultTokenTTL is a token's life when the token service does not say
// (the distribution token specification's default).
const defaultTokenTTL = 60 * time.Second

// AuthError is a registry refusing a request for want of credentials or
// rights.
type AuthError struct {
	Host   string
	Repo   string // empty for the registry's base endpoint
	Action string // "pull" or "push"
	Status int    // 401 or 403
	// User and Source name the credential that was refused; User is empty
	// when none was sent.
	User, Source string
	// Lookup is why no credential was found, when looking failed.
	Lookup error
}

func (e *AuthError) Error() string {
	verb := e.Action + " " + e.Repo
	if e.Repo == "" {
		verb = "use it"
	}
	switch {
	case e.User != "" && e.Status == http.StatusForbidden:
		return fmt.Sprintf("registry %s: user %s (credentials from %s) has no right to %s", e.Host, e.User, e.Source, verb)
	case e.User != "":
		return fmt.Sprintf("registry %s refused user %s (credentials from %s): wrong password, unknown user or expired login; log in again with \"docker login %s\"",
			e.Host, e.User, e.Source, e.Host)
	case e.Lookup != nil:
		return fmt.Sprintf("registry %s wants credentials to %s, and looking them up failed: %v", e.Host, verb, e.Lookup)
	case e.Status == http.StatusForbidden:
		return fmt.Sprintf("registry %s does not let anonymous users %s; log in with \"docker login %s\"", e.Host, verb, e.Host)
	}
	return fmt.Sprintf("registry %s wants credentials to %s and none were found; log in with \"docker login %s\" (Dockyard reads docker's config.json and podman's auth.json)",
		e.Host, verb, e.Host)
}

func (e *AuthError) Unwrap() error { return e.Lookup }

// authError finds an AuthError in err: it says all there is to say, so
// callers return it as it is rather than under the URL that was refused.
func authError(err error) error {
	var ae *AuthError
	if errors.As(err, &ae) {
		return ae
	}
	return nil
}

// client returns the Resolver's HTTP client with authentication added,
// built once.
func (r *Resolver) client() *http.Client {
	r.authOnce.Do(func() {
		base := r.HTTP
		if base == nil {
			base = http.DefaultClient
		}
		c := *base
		rt := base.Transport
		if rt == nil {
			rt = http.DefaultTransport
		}
		kc := r.Keychain
		if kc == nil {
			kc = DefaultKeychain()
		}
		c.Transport = &authTransport{base: rt, keychain: kc, plainHTTP: r.Scheme == "http", now: time.Now}
		r.authed = &c
	})
	return r.authed
}

// authTransport adds registry authentication to requests; see the rules
// above.
type authTransport struct {
	base      http.RoundTripper
	keychain  Keychain
	plainHTTP bool
	now       func() time.Time

	mu     sync.Mutex
	tokens map[tokenKey]cachedToken
	basic  map[string]bool       // hosts that asked for Basic credentials
	creds  map[string]credLookup // per host, looked up once
}

type tokenKey struct{ host, repo string }

type cachedToken struct {
	token   string
	expires time.Time
	user    string // who it was fetched as ("" for anonymous)
	source  string
}

type credLookup struct {
	c   Credential
	ok  bool
	err error
}

// sentAs is what a request carried, for errors.
type sentAs struct{ user, source string }

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if originHost(req) != req.URL.Host {
		// A redirect to other storage: it gets nothing of ours.
		req = req.Clone(req.Context())
		req.Header.Del("Authorization")
		return t.base.RoundTrip(req)
	}
	host, repo := req.URL.Host, repoOf(req.URL.Path)
	out, as, err := t.attach(req, host, repo)
	if err != nil {
		return nil, err
	}
	resp, err := t.base.RoundTrip(out)
	if err != nil || (resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden) {
		return resp, err
	}
	ae := &AuthError{Host: host, Repo: repo, Action: actionOf(req.Method), Status: resp.StatusCode, User: as.user, Source: as.source}
	if resp.StatusCode == http.StatusForbidden {
		discard(resp)
		return nil, ae
	}
	ch, ok := parseChallenge(resp.Header.Values("WWW-Authenticate"))
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	if !ok || !replayable {
		discard(resp)
		return nil, ae
	}
	discard(resp)

	cred, credOK, lookupErr := t.lookup(host)
	if credOK {
		as = sentAs{user: userName(cred), source: cred.Source}
	} else {
		as = sentAs{}
	}
	retry := req.Clone(req.Context())
	if req.GetBody != nil {
		if retry.Body, err = req.GetBody(); err != nil {
			return nil, err
		}
	}
	switch ch.scheme {
	case "bearer":
		tok, err := t.fetchToken(req.Context(), req.URL, ch, cred, credOK)
		if err != nil {
			if ae, ok := err.(*AuthError); ok {
				ae.Repo, ae.Action, ae.Lookup = repo, actionOf(req.Method), lookupErr
			}
			return nil, err
		}
		tok.user, tok.source = as.user, as.source
		t.mu.Lock()
		if t.tokens == nil {
			t.tokens = map[tokenKey]cachedToken{}
		}
		t.tokens[tokenKey{host, repo}] = tok
		t.mu.Unlock()
		retry.Header.Set("Authorization", "Bearer "+tok.token)
	case "basic":
		if !credOK || cred.Username == "" {
			return nil, &AuthError{Host: host, Repo: repo, Action: actionOf(req.Method), Status: http.StatusUnauthorized, Lookup: lookupErr}
		}
		if err := t.checkPlain(req.URL, host, cred); err != nil {
			return nil, err
		}
		t.mu.Lock()
		if t.basic == nil {
			t.basic = map[string]bool{}
		}
		t.basic[host] = true
		t.mu.Unlock()
		retry.SetBasicAuth(cred.Username, cred.Password)
	default:
		return nil, fmt.Errorf("registry %s: unsupported authentication scheme %q", host, ch.scheme)
	}
	resp, err = t.base.RoundTrip(retry)
	if err != nil || (resp.StatusCode != http.StatusUnauthorized && resp.StatusCode != http.StatusForbidden) {
		return resp, err
	}
	discard(resp)
	return nil, &AuthError{Host: host, Repo: repo, Action: actionOf(req.Method), Status: resp.StatusCode, User: as.user, Source: as.source, Lookup: lookupErr}
}

// attach adds what an earlier challenge taught: a cached token for the
// repository, or Basic credentials for a host that asked for them.
func (t *authTransport) attach(req *http.Request, host, repo string) (*http.Request, sentAs, error) {
	t.mu.Lock()
	tok, haveTok := t.tokens[tokenKey{host, repo}]
	basic := t.basic[host]
	t.mu.Unlock()
	switch {
	case haveTok && t.now().Before(tok.expires):
		out := req.Clone(req.Context())
		out.Header.Set("Authorization", "Bearer "+tok.token)
		return out, sentAs{tok.user, tok.source}, nil
	case basic:
		cred, ok, _ := t.lookup(host)
		if !ok || cred.Username == "" {
			return req, sentAs{}, nil
		}
		if err := t.checkPlain(req.URL, host, cred); err != nil {
			return nil, sentAs{}, err
		}
		out := req.Clone(req.Context())
		out.SetBasicAuth(cred.Username, cred.Password)
		return out, sentAs{cred.Username, cred.Source}, nil
	}
	return req, sentAs{}, nil
}

// lookup finds host's credential once per transport.
func (t *authTransport) lookup(host string) (Credential, bool, error) {
	t.mu.Lock()
	l, done := t.creds[host]
	t.mu.Unlock()
	if done {
		return l.c, l.ok, l.err
	}
	l.c, l.ok, l.err = t.keychain.Lookup(host)
	if l.c.Source == "" {
		l.c.Source = "the caller"
	}
	t.mu.Lock()
	if t.creds == nil {
		t.creds = map[string]credLookup{}
	}
	t.creds[host] = l
	t.mu.Unlock()
	return l.c, l.ok, l.err
}

// checkPlain refuses to send host's credential over plain HTTP to u unless
// u is loopback or the caller chose plain HTTP.
func (t *authTransport) checkPlain(u *url.URL, host string, c Credential) error {
	if u.Scheme != "http" || t.plainHTTP || isLoopback(u.Hostname()) {
		return nil
	}
	return fmt.Errorf("not sending the credentials for %s (from %s) over plain HTTP to %s: use --registry-scheme https, or --registry-scheme http to send them unencrypted anyway",
		host, c.Source, u.Host)
}

// fetchToken asks the challenge's realm for a token: with the credential
// when there is one, anonymously otherwise.
func (t *authTransport) fetchToken(ctx context.Context, reqURL *url.URL, ch challenge, cred Credential, credOK bool) (cachedToken, error) {
	host := reqURL.Host
	realm, err := reqURL.Parse(ch.params["realm"])
	if err != nil || ch.params["realm"] == "" || (realm.Scheme != "http" && realm.Scheme != "https") {
		return cachedToken{}, fmt.Errorf("registry %s: bad token realm %q in its challenge", host, ch.params["realm"])
	}
	if credOK && realm.Host != host && realm.Scheme != "https" {
		return cachedToken{}, fmt.Errorf("registry %s: not sending its credentials (from %s) to the token service %s on another host over plain HTTP", host, cred.Source, realm.Host)
	}
	if credOK {
		if err := t.checkPlain(realm, host, cred); err != nil {
			return cachedToken{}, err
		}
	}
	q := realm.Query()
	if s := ch.params["service"]; s != "" {
		q.Set("service", s)
	}
	scopes := strings.Fields(ch.params["scope"])
	var req *http.Request
	if credOK && cred.IdentityToken != "" {
		form := url.Values{"grant_type": {"refresh_token"}, "refresh_token": {cred.IdentityToken}, "client_id": {"dockyard"}}
		if s := ch.params["service"]; s != "" {
			form.Set("service", s)
		}
		if len(scopes) > 0 {
			form.Set("scope", strings.Join(scopes, " "))
		}
		realm.RawQuery = q.Encode()
		req, err = http.NewRequestWithContext(ctx, http.MethodPost, realm.String(), strings.NewReader(form.Encode()))
		if err != nil {
			return cachedToken{}, err
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		for _, s := range scopes {
			q.Add("scope", s)
		}
		realm.RawQuery = q.Encode()
		if req, err = http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil); err != nil {
			return cachedToken{}, err
		}
		if credOK {
			req.SetBasicAuth(cred.Username, cred.Password)
		}
	}
	start := t.now()
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return cachedToken{}, fmt.Errorf("registry %s: token service %s: %w", host, realm.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
		ae := &AuthError{Host: host, Status: resp.StatusCode}
		if credOK {
			ae.User, ae.Source = userName(cred), cred.Source
		}
		return cachedToken{}, ae
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return cachedToken{}, fmt.Errorf("registry %s: token service %s: %s: %s", host, realm.Host, resp.Status, strings.TrimSpace(string(msg)))
	}
	var body struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int    `json:"expires_in"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return cachedToken{}, fmt.Errorf("registry %s: token service %s: unreadable answer: %v", host, realm.Host, err)
	}
	tok := body.Token
	if tok == "" {
		tok = body.AccessToken
	}
	if tok == "" {
		return cachedToken{}, fmt.Errorf("registry %s: token service %s answered without a token", host, realm.Host)
	}
	ttl := defaultTokenTTL
	if body.ExpiresIn > 0 {
		ttl = time.Duration(body.ExpiresIn) * time.Second
	}
	margin := min(tokenMargin, ttl/10)
	return cachedToken{token: tok, expires: start.Add(ttl - margin)}, nil
}

// challenge is one WWW-Authenticate challenge: its scheme (lower case) and
// parameters.
type challenge struct {
	scheme string
	params map[string]string
}

// parseChallenge picks the challenge to answer among a response's
// WWW-Authenticate headers: Bearer, else Basic.
func parseChallenge(headers []string) (challenge, bool) {
	var basic *challenge
	for _, h := range headers {
		c := parseOneChallenge(h)
		switch c.scheme {
		case "bearer":
			return c, true
		case "basic":
			basic = &c
		}
	}
	if basic != nil {
		return *basic, true
	}
	if len(headers) > 0 {
		c := parseOneChallenge(headers[0])
		return c, c.scheme != ""
	}
	return challenge{}, false
}

// parseOneChallenge parses `Scheme k="v", k2=v2` (quoted values may hold
// commas and escaped quotes).
func parseOneChallenge(h string) challenge {
	h = strings.TrimSpace(h)
	scheme, rest, _ := strings.Cut(h, " ")
	c := challenge{scheme: strings.ToLower(scheme), params: map[string]string{}}
	for rest = strings.TrimSpace(rest); rest != ""; {
		eq := strings.IndexByte(rest, '=')
		if eq < 0 {
			break
		}
		key := strings.ToLower(strings.TrimSpace(rest[:eq]))
		rest = strings.TrimSpace(rest[eq+1:])
		var val strings.Builder
		if strings.HasPrefix(rest, `"`) {
			i := 1
			for ; i < len(rest) && rest[i] != '"'; i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				val.WriteByte(rest[i])
			}
			rest = rest[min(i+1, len(rest)):]
		} else {
			end := strings.IndexByte(rest, ',')
			if end < 0 {
				end = len(rest)
			}
			val.WriteString(strings.TrimSpace(rest[:end]))
			rest = rest[end:]
		}
		c.params[key] = val.String()
		rest = strings.TrimLeft(strings.TrimSpace(rest), ",")
		rest = strings.TrimSpace(rest)
	}
	return c
}

// originHost is the host the client was asked to reach, before redirects.
func originHost(req *http.Request) string {
	r := req
	for r.Response != nil && r.Response.Request != nil {
		r = r.Response.Request
	}
	return r.URL.Host
}

// repoOf is the repository a /v2/NAME/KIND/... path names, or "" for the
// base endpoint and paths outside the API.
func repoOf(p string) string {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return ""
	}
	best := -1
	for _, kind := range []string{"/blobs/", "/manifests/", "/tags/", "/referrers/"} {
		if i := strings.LastIndex(rest, kind); i > best {
			best = i
		}
	}
	if best < 0 {
		return ""
	}
	return rest[:best]
}

func actionOf(method string) string {
	if method == http.MethodGet || method == http.MethodHead {
		return "pull"
	}
	return "push"
}

func userName(c Credential) string {
	if c.Username == "" && c.IdentityToken != "" {
		return "(identity token)"
	}
	return c.Username
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func discard(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}
