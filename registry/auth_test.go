package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

const testPassword = "correct horse"

// authEnv is a registry with auth on over images pushed while it was open:
// alice/app and bob/app (their owners'), team/web (carol may pull it, dave
// push it), and the users alice, bob, carol, dave and root (an admin).
type authEnv struct {
	*testEnv
	users *UserStore
	clock *fakeClock
	layer string // a layer digest of team/web
	mdig  string // the manifest digest of team/web:v1
}

func newAuthEnv(t *testing.T, anonymousPull bool) *authEnv {
	t.Helper()
	env := newTestEnv(t, Config{})
	env.pushImage("alice/app", "v1", []byte("alice layer"))
	env.pushImage("bob/app", "v1", []byte("bob layer"))
	md, ld := env.pushImage("team/web", "v1", []byte("team layer"))
	users := NewUserStore(env.kv)
	users.cost = bcrypt.MinCost
	ctx := context.Background()
	for _, u := range []string{"alice", "bob", "carol", "dave", "root"} {
		if err := users.Add(ctx, u, testPassword, u == "root"); err != nil {
			t.Fatal(err)
		}
	}
	if err := users.AddGrant(ctx, "carol", "team", ActionPull); err != nil {
		t.Fatal(err)
	}
	if err := users.AddGrant(ctx, "dave", "team", ActionPush); err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{t: time.Unix(1_800_000_000, 0)}
	env.start(Config{Now: clock.Now, Auth: &AuthConfig{Users: users, AnonymousPull: anonymousPull}})
	return &authEnv{testEnv: env, users: users, clock: clock, layer: ld, mdig: md}
}

func basic(user, pw string) map[string]string {
	return map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pw))}
}

func bearer(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }

// token gets a token from /token as user (anonymous when user is "").
func (e *authEnv) token(user string, scopes ...string) (string, resp) {
	e.t.Helper()
	q := url.Values{"service": {"dockyard"}, "scope": scopes}
	var hdr map[string]string
	if user != "" {
		hdr = basic(user, testPassword)
		q.Set("account", user)
	}
	r := e.do("GET", "/token?"+q.Encode(), hdr, nil)
	if r.status != http.StatusOK {
		return "", r
	}
	var tr tokenResponse
	if err := json.Unmarshal(r.body, &tr); err != nil {
		e.t.Fatal(err)
	}
	if tr.Token == "" || tr.Token != tr.AccessToken || tr.ExpiresIn != 300 || tr.IssuedAt == "" {
		e.t.Fatalf("token response %s", r.body)
	}
	return tr.Token, r
}

// claims decodes a token's payload without checking it.
func claims(t *testing.T, tok string) tokenClaims {
	t.Helper()
	parts := strings.Split(tok, ".")
	b, err := b64.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c tokenClaims
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestAuthRoutes runs every route with each kind of caller: nobody, a wrong
// password, a user without rights, a user with pull only, a user with
// push, an admin.
func TestAuthRoutes(t *testing.T) {
	e := newAuthEnv(t, false)
	manifest := imageManifest(e.layer, 10, nil, nil) // config = the layer: any linked blob will do
	callers := []struct {
		name string
		hdr  map[string]string
	}{
		{"nobody", nil},
		{"wrong password", basic("carol", "not the password")},
		{"unknown user", basic("mallory", testPassword)},
		{"no rights", basic("alice", testPassword)},
		{"pull only", basic("carol", testPassword)},
		{"push grant", basic("dave", testPassword)},
		{"admin", basic("root", testPassword)},
	}
	const (
		open   = 0 // every caller gets the status of the row
		login  = 1 // nobody and bad credentials 401, every user the row's status
		pull   = 2 // 401 / 403 for alice / row status for carol, dave, root
		push   = 3 // 401 / 403 for alice and carol / row status for dave, root
		anyone = 4 // 401 for bad credentials only
	)
	routes := []struct {
		method, path string
		hdr          map[string]string
		body         []byte
		need         int
		want         int
	}{
		{"GET", "/v2/", nil, nil, login, 200},
		{"GET", "/v2/team/web/tags/list", nil, nil, pull, 200},
		{"GET", "/v2/team/web/manifests/v1", nil, nil, pull, 200},
		{"HEAD", "/v2/team/web/manifests/v1", nil, nil, pull, 200},
		{"GET", "/v2/team/web/blobs/" + e.layer, nil, nil, pull, 200},
		{"GET", "/v2/team/web/referrers/" + e.mdig, nil, nil, pull, 200},
		{"POST", "/v2/team/web/blobs/uploads/", nil, nil, push, 202},
		{"GET", "/v2/team/web/blobs/uploads/0123456789abcdef", nil, nil, push, 404},
		{"PUT", "/v2/team/web/manifests/v2", map[string]string{"Content-Type": MediaTypeOCIManifest}, manifest, push, 201},
		{"DELETE", "/v2/team/web/manifests/nope", nil, nil, push, 404},
		{"DELETE", "/v2/team/web/blobs/sha256:" + strings.Repeat("0", 64), nil, nil, push, 404},
		{"GET", "/team/web?ac-discovery=1", nil, nil, pull, 200},
		{"GET", "/metrics", nil, nil, open, 200},
		{"GET", "/v1/_ping", nil, nil, open, 200},
		{"GET", "/v1/search?q=web", nil, nil, anyone, 200},
		{"GET", "/v2/_catalog", nil, nil, login, 200},
	}
	for _, rt := range routes {
		for _, cl := range callers {
			want, wantCode := rt.want, ""
			bad := cl.name == "nobody" || cl.name == "wrong password" || cl.name == "unknown user"
			switch {
			case rt.need == open:
			case bad && !(rt.need == anyone && cl.name == "nobody"):
				want, wantCode = 401, "UNAUTHORIZED"
			case rt.need == anyone && cl.name == "nobody":
				want, wantCode = 401, "UNAUTHORIZED"
			case rt.need == pull && cl.name == "no rights",
				rt.need == push && (cl.name == "no rights" || cl.name == "pull only"):
				want, wantCode = 403, "DENIED"
			}
			hdr := map[string]string{}
			for k, v := range rt.hdr {
				hdr[k] = v
			}
			for k, v := range cl.hdr {
				hdr[k] = v
			}
			r := e.do(rt.method, rt.path, hdr, rt.body)
			if r.status != want || (wantCode != "" && rt.method != "HEAD" && r.code() != wantCode) {
				t.Errorf("%s %s as %s: %d %s, want %d %s (%s)", rt.method, rt.path, cl.name, r.status, r.code(), want, wantCode, r.body)
			}
			if r.status == 401 && r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s as %s: 401 without a challenge", rt.method, rt.path, cl.name)
			}
		}
	}
	// The challenge of a /v2/ route names the token endpoint and the scope.
	r := e.do("PUT", "/v2/team/web/manifests/v3", nil, manifest)
	wantCh := `Bearer realm="` + e.srv.URL + `/token",service="dockyard",scope="repository:team/web:pull,push"`
	if got := r.header.Get("WWW-Authenticate"); got != wantCh {
		t.Errorf("challenge %q, want %q", got, wantCh)
	}
	// Outside /v2/ clients send Basic credentials.
	if got := e.do("GET", "/v1/search?q=x", nil, nil).header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
		t.Errorf("search challenge %q", got)
	}
}

// TestAuthListingsFiltered checks that the catalog and the search list only
// what the caller may pull.
func TestAuthListingsFiltered(t *testing.T) {
	e := newAuthEnv(t, false)
	catalog := func(hdr map[string]string, q string) []string {
		r := e.must(e.do("GET", "/v2/_catalog"+q, hdr, nil), 200)
		var b struct{ Repositories []string }
		if err := json.Unmarshal(r.body, &b); err != nil {
			t.Fatal(err)
		}
		return b.Repositories
	}
	for user, want := range map[string][]string{
		"alice": {"alice/app"},
		"carol": {"team/web"},
		"dave":  {"team/web"},
		"root":  {"alice/app", "bob/app", "team/web"},
	} {
		if got := catalog(basic(user, testPassword), ""); !reflect.DeepEqual(got, want) {
			t.Errorf("catalog of %s: %v, want %v", user, got, want)
		}
		r := e.must(e.do("GET", "/v1/search?q=app", basic(user, testPassword), nil), 200)
		var sr SearchResults
		if err := json.Unmarshal(r.body, &sr); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, x := range sr.Results {
			names = append(names, x.Name)
		}
		var wantApps []string
		for _, w := range want {
			if strings.Contains(w, "app") {
				wantApps = append(wantApps, w)
			}
		}
		if !slices.Equal(names, wantApps) || sr.NumResults != len(wantApps) {
			t.Errorf("search of %s: %v (%d), want %v", user, names, sr.NumResults, wantApps)
		}
	}
	// Pages count what the caller sees.
	if got := catalog(basic("root", testPassword), "?n=2"); !slices.Equal(got, []string{"alice/app", "bob/app"}) {
		t.Errorf("first page: %v", got)
	}
	if got := catalog(basic("root", testPassword), "?n=2&last=bob/app"); !slices.Equal(got, []string{"team/web"}) {
		t.Errorf("second page: %v", got)
	}
	// With a token, the catalog needs the catalog scope and is still
	// filtered by the token's user.
	tok, _ := e.token("alice", "repository:alice/app:pull")
	r := e.must(e.do("GET", "/v2/_catalog", bearer(tok), nil), 401)
	if ch := r.header.Get("WWW-Authenticate"); !strings.Contains(ch, `scope="registry:catalog:*"`) {
		t.Errorf("catalog challenge %q", ch)
	}
	tok, _ = e.token("alice", "registry:catalog:*")
	if got := catalog(bearer(tok), ""); !slices.Equal(got, []string{"alice/app"}) {
		t.Errorf("catalog with a token: %v", got)
	}
}

// TestAuthTokenFlow is what docker does: 401, a token for the scope, retry.
func TestAuthTokenFlow(t *testing.T) {
	e := newAuthEnv(t, false)
	r := e.must(e.do("GET", "/v2/", nil, nil), 401)
	if ch := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(ch, `Bearer realm="`+e.srv.URL+`/token"`) {
		t.Fatalf("challenge %q", ch)
	}

	// Only the actions the user holds are granted, per repository.
	tok, _ := e.token("carol", "repository:team/web:pull,push", "repository:bob/app:pull", "repository:carol/x:push,pull")
	c := claims(t, tok)
	want := []ResourceAccess{
		{Type: "repository", Name: "team/web", Actions: []string{"pull"}},
		{Type: "repository", Name: "carol/x", Actions: []string{"pull", "push"}},
	}
	if !reflect.DeepEqual(c.Access, want) || c.Subject != "carol" || c.Audience != "dockyard" || c.Issuer != tokenIssuer {
		t.Errorf("claims %+v, want access %+v", c, want)
	}
	e.must(e.do("GET", "/v2/", bearer(tok), nil), 200)
	e.must(e.do("GET", "/v2/team/web/manifests/v1", bearer(tok), nil), 200)
	// carol holds no push on team/web: denied, not asked to log in again.
	if r := e.do("POST", "/v2/team/web/blobs/uploads/", bearer(tok), nil); r.status != 403 || r.code() != "DENIED" {
		t.Errorf("push with a pull token: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/v2/bob/app/manifests/v1", bearer(tok), nil); r.status != 403 || r.code() != "DENIED" {
		t.Errorf("pull of bob/app: %d %s", r.status, r.body)
	}

	// A token lacking an action its user holds gets a challenge for it.
	tok, _ = e.token("dave", "repository:team/web:pull")
	r = e.must(e.do("POST", "/v2/team/web/blobs/uploads/", bearer(tok), nil), 401)
	if ch := r.header.Get("WWW-Authenticate"); !strings.Contains(ch, `scope="repository:team/web:pull,push",error="insufficient_scope"`) {
		t.Errorf("insufficient scope challenge %q", ch)
	}
	tok, _ = e.token("dave", "repository:team/web:pull,push")
	e.must(e.do("POST", "/v2/team/web/blobs/uploads/", bearer(tok), nil), 202)
	// "*" (crane's delete scope) is granted as what the user holds.
	tok, _ = e.token("dave", "repository:team/web:*")
	if got := claims(t, tok).Access[0].Actions; !slices.Equal(got, []string{"pull", "push", "delete"}) {
		t.Errorf("* granted %v", got)
	}
	e.must(e.do("DELETE", "/v2/team/web/manifests/nope", bearer(tok), nil), 404)

	// POST /token, the OAuth2 password grant containerd tries first.
	form := url.Values{"grant_type": {"password"}, "username": {"dave"}, "password": {testPassword},
		"service": {"dockyard"}, "scope": {"repository:team/web:pull"}, "client_id": {"containerd"}}
	r = e.must(e.do("POST", "/token", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, []byte(form.Encode())), 200)
	var tr tokenResponse
	if err := json.Unmarshal(r.body, &tr); err != nil || tr.AccessToken == "" {
		t.Fatalf("POST /token: %s", r.body)
	}
	e.must(e.do("GET", "/v2/team/web/tags/list", bearer(tr.AccessToken), nil), 200)
	form.Set("password", "wrong password")
	e.must(e.do("POST", "/token", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, []byte(form.Encode())), 401)
	form.Set("grant_type", "refresh_token")
	e.must(e.do("POST", "/token", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, []byte(form.Encode())), 400)

	// Token requests that cannot be answered.
	for _, tc := range []struct {
		query string
		hdr   map[string]string
		want  int
	}{
		{"scope=repository:team/web:pull", nil, 401}, // no anonymous pulls
		{"scope=repository:team/web:pull", basic("carol", "wrong password"), 401},
		{"scope=repository:team/web:pull&account=dave", basic("carol", testPassword), 401},
		{"scope=repository:team/web:pull&service=elsewhere", basic("carol", testPassword), 400},
		{"scope=repository:Team/Web:pull", basic("carol", testPassword), 400},
		{"scope=pull", basic("carol", testPassword), 400},
		{"scope=repository:team/web:pull&offline_token=true&client_id=docker", basic("carol", testPassword), 200},
	} {
		if r := e.do("GET", "/token?"+tc.query, tc.hdr, nil); r.status != tc.want {
			t.Errorf("GET /token?%s: %d, want %d: %s", tc.query, r.status, tc.want, r.body)
		}
	}
}

// TestAuthTokenRefused checks expiry, foreign keys, other algorithms and
// other services.
func TestAuthTokenRefused(t *testing.T) {
	e := newAuthEnv(t, false)
	tok, _ := e.token("carol", "repository:team/web:pull")
	e.must(e.do("GET", "/v2/team/web/tags/list", bearer(tok), nil), 200)
	e.clock.Add(5*time.Minute - time.Second)
	e.must(e.do("GET", "/v2/team/web/tags/list", bearer(tok), nil), 200)
	e.clock.Add(time.Second)
	r := e.must(e.do("GET", "/v2/team/web/tags/list", bearer(tok), nil), 401)
	if !strings.Contains(string(r.body), "expired") || !strings.Contains(r.header.Get("WWW-Authenticate"), `error="invalid_token"`) {
		t.Errorf("expired token: %s, challenge %q", r.body, r.header.Get("WWW-Authenticate"))
	}

	now := e.clock.Now()
	good := tokenClaims{Issuer: tokenIssuer, Subject: "root", Audience: "dockyard", Expires: now.Add(time.Minute).Unix(),
		NotBefore: now.Unix(), IssuedAt: now.Unix(), ID: "x",
		Access: []ResourceAccess{{Type: "repository", Name: "team/web", Actions: []string{"pull"}}}}
	ours, err := e.reg.auth.keys.get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	e.must(e.do("GET", "/v2/team/web/tags/list", bearer(signToken(ours, good)), nil), 200)

	// A key of another cluster, even one claiming our key ID.
	other, err := (&keyring{kv: newMemKV()}).get(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	forged := *other
	forged.ID = ours.ID
	otherAud := good
	otherAud.Audience = "elsewhere"
	otherIss := good
	otherIss.Issuer = "someone"
	early := good
	early.NotBefore = now.Add(time.Hour).Unix()
	parts := strings.Split(signToken(ours, good), ".")
	none := b64.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + "."
	hs := b64.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT","kid":"`+ours.ID+`"}`)) + "." + parts[1] + "." + parts[2]
	tampered := parts[0] + "." + b64.EncodeToString(mustJSON(otherIss)) + "." + parts[2]
	for name, tok := range map[string]string{
		"other key":      signToken(other, good),
		"forged key ID":  signToken(&forged, good),
		"other service":  signToken(ours, otherAud),
		"other issuer":   signToken(ours, otherIss),
		"not yet valid":  signToken(ours, early),
		"alg none":       none,
		"alg HS256":      hs,
		"tampered":       tampered,
		"garbage":        "abc",
		"empty":          "",
		"too many parts": signToken(ours, good) + ".x",
	} {
		if r := e.do("GET", "/v2/team/web/tags/list", bearer(tok), nil); r.status != 401 || r.code() != "UNAUTHORIZED" {
			t.Errorf("%s: %d %s", name, r.status, r.body)
		}
	}

	// A token outlives neither its user nor, through Basic, a password.
	tok, _ = e.token("carol", "repository:team/web:pull")
	if err := e.users.Remove(context.Background(), "carol"); err != nil {
		t.Fatal(err)
	}
	// The token still lists its grant (tokens are short-lived)...
	e.must(e.do("GET", "/v2/team/web/tags/list", bearer(tok), nil), 200)
	// ...but nothing more is given to a removed user.
	e.must(e.do("GET", "/v2/team/web/tags/list", basic("carol", testPassword), nil), 401)
	e.must(e.do("GET", "/token?scope=repository:team/web:pull", basic("carol", testPassword), nil), 401)
}

// TestAuthAnonymousPull checks --auth-anonymous-pull: pulls without
// credentials, nothing else, and /v2/ still asks for a login.
func TestAuthAnonymousPull(t *testing.T) {
	e := newAuthEnv(t, true)
	e.must(e.do("GET", "/v2/", nil, nil), 401)
	e.must(e.do("GET", "/v2/bob/app/manifests/v1", nil, nil), 200)
	r := e.must(e.do("POST", "/v2/bob/app/blobs/uploads/", nil, nil), 401)
	if ch := r.header.Get("WWW-Authenticate"); !strings.Contains(ch, `scope="repository:bob/app:pull,push"`) {
		t.Errorf("challenge %q", ch)
	}
	tok, _ := e.token("", "repository:bob/app:pull,push")
	c := claims(t, tok)
	if c.Subject != "" || len(c.Access) != 1 || !slices.Equal(c.Access[0].Actions, []string{"pull"}) {
		t.Errorf("anonymous token claims %+v", c)
	}
	e.must(e.do("GET", "/v2/", bearer(tok), nil), 200)
	e.must(e.do("GET", "/v2/bob/app/tags/list", bearer(tok), nil), 200)
	e.must(e.do("POST", "/v2/bob/app/blobs/uploads/", bearer(tok), nil), 401)
	// alice may pull bob's images too, but not push them.
	e.must(e.do("GET", "/v2/bob/app/manifests/v1", basic("alice", testPassword), nil), 200)
	e.must(e.do("POST", "/v2/bob/app/blobs/uploads/", basic("alice", testPassword), nil), 403)
	e.must(e.do("GET", "/v1/search?q=app", nil, nil), 200)
}

// TestAuthMountNeedsPullOnSource checks that a cross-repository mount
// from a repository the pusher may not pull starts a plain upload instead.
func TestAuthMountNeedsPullOnSource(t *testing.T) {
	e := newAuthEnv(t, false)
	q := "?mount=" + e.layer + "&from=team/web"
	e.must(e.do("POST", "/v2/alice/app/blobs/uploads/"+q, basic("alice", testPassword), nil), 202)
	e.must(e.do("POST", "/v2/dave/app/blobs/uploads/"+q, basic("dave", testPassword), nil), 201)
	// Without a source a digest proves nothing.
	e.must(e.do("POST", "/v2/root/app/blobs/uploads/?mount="+e.layer, basic("root", testPassword), nil), 202)
}

func TestUserStore(t *testing.T) {
	ctx := context.Background()
	s := NewUserStore(newMemKV())
	s.cost = bcrypt.MinCost
	for _, tc := range []struct{ name, pw string }{
		{"Alice", testPassword}, {"a/b", testPassword}, {"", testPassword}, {"-a", testPassword},
		{"alice", "short"}, {"alice", strings.Repeat("x", 73)},
	} {
		if err := s.Add(ctx, tc.name, tc.pw, false); !errors.Is(err, ErrUserInvalid) {
			t.Errorf("Add(%q, %d bytes) = %v, want ErrUserInvalid", tc.name, len(tc.pw), err)
		}
	}
	if err := s.Add(ctx, "alice", testPassword, false); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(ctx, "alice", testPassword, true); !errors.Is(err, ErrUserExists) {
		t.Errorf("second add: %v", err)
	}
	if _, err := s.Authenticate(ctx, "alice", "wrong password"); !errors.Is(err, ErrBadPassword) {
		t.Errorf("wrong password: %v", err)
	}
	if _, err := s.Authenticate(ctx, "nobody", testPassword); !errors.Is(err, ErrBadPassword) {
		t.Errorf("unknown user: %v", err)
	}
	if _, err := s.Authenticate(ctx, "alice", testPassword); err != nil {
		t.Fatal(err)
	}
	// A remembered check does not survive a password change.
	if err := s.SetPassword(ctx, "alice", "another password"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Authenticate(ctx, "alice", testPassword); !errors.Is(err, ErrBadPassword) {
		t.Errorf("old password after change: %v", err)
	}
	if _, err := s.Authenticate(ctx, "alice", "another password"); err != nil {
		t.Errorf("new password: %v", err)
	}
	if err := s.AddGrant(ctx, "alice", "team", "admin"); !errors.Is(err, ErrUserInvalid) {
		t.Errorf("grant of admin: %v", err)
	}
	if err := s.AddGrant(ctx, "alice", "team/", ActionPull); !errors.Is(err, ErrUserInvalid) {
		t.Errorf("grant on team/: %v", err)
	}
	if err := s.AddGrant(ctx, "alice", "team", ActionPull); err != nil {
		t.Fatal(err)
	}
	if err := s.AddGrant(ctx, "alice", "team", ActionPush); err != nil { // replaces
		t.Fatal(err)
	}
	u, err := s.Get(ctx, "alice")
	if err != nil || len(u.Grants) != 1 || u.Grants[0].Action != ActionPush {
		t.Fatalf("grants %+v, %v", u, err)
	}
	for repo, want := range map[string]actionSet{
		"alice": allActions, "alice/x/y": allActions, "alicex": 0, "team": allActions, "team/a": allActions, "teams": 0, "bob/x": 0,
	} {
		if got := u.Actions(repo); got != want {
			t.Errorf("actions on %s: %v, want %v", repo, got, want)
		}
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || list[0].Hash != nil {
		t.Errorf("list %+v, %v", list, err)
	}
	if err := s.RemoveGrant(ctx, "alice", "other"); !errors.Is(err, ErrUserNotFound) {
		t.Errorf("removing a missing grant: %v", err)
	}
	if err := s.Remove(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(ctx, "alice"); !errors.Is(err, ErrUserNotFound) {
		t.Errorf("second remove: %v", err)
	}
}

func TestParseScopes(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []scope
		bad  bool
	}{
		{in: nil},
		{in: []string{"repository:a/b:pull,push"}, want: []scope{{"repository", "a/b", []string{"pull", "push"}}}},
		{in: []string{"repository:a:pull repository:b:push"}, want: []scope{{"repository", "a", []string{"pull"}}, {"repository", "b", []string{"push"}}}},
		{in: []string{"repository:a:pull", "registry:catalog:*"}, want: []scope{{"repository", "a", []string{"pull"}}, {"registry", "catalog", []string{"*"}}}},
		{in: []string{"repository(plugin):a/b:pull"}, want: []scope{{"repository", "a/b", []string{"pull"}}}},
		{in: []string{"repository:a:"}, want: []scope{{"repository", "a", nil}}},
		{in: []string{"repository:a:pull,,push,"}, want: []scope{{"repository", "a", []string{"pull", "push"}}}},
		{in: []string{"repository:a:fly"}, want: []scope{{"repository", "a", []string{"fly"}}}},
		{in: []string{"other:x:y"}, want: []scope{{"other", "x", []string{"y"}}}},
		{in: []string{""}},
		{in: []string{"repository:a"}, bad: true},
		{in: []string{"repository"}, bad: true},
		{in: []string{":a:pull"}, bad: true},
		{in: []string{"repository::pull"}, bad: true},
		{in: []string{"repository:A:pull"}, bad: true},
		{in: []string{"repository:a:b:pull"}, bad: true},
		{in: []string{"repository:../a:pull"}, bad: true},
	} {
		got, err := parseScopes(tc.in)
		if tc.bad {
			if !errors.Is(err, ErrScopeInvalid) {
				t.Errorf("parseScopes(%q) = %v, %v; want ErrScopeInvalid", tc.in, got, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseScopes(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
	// Unknown actions are granted nothing.
	if got := parseActions([]string{"fly", "pull"}); got != canPull {
		t.Errorf("parseActions: %v", got)
	}
}

// TestAuthSigningKeyShared checks that registries of one cluster create one
// key between them and accept each other's tokens.
func TestAuthSigningKeyShared(t *testing.T) {
	kv := newMemKV()
	ctx := context.Background()
	ids := make(chan string, 8)
	for range 8 {
		go func() {
			k, err := (&keyring{kv: kv}).get(ctx)
			if err != nil {
				ids <- "error: " + err.Error()
				return
			}
			ids <- k.ID
		}()
	}
	first := <-ids
	for range 7 {
		if id := <-ids; id != first {
			t.Fatalf("registries disagree on the key: %s and %s", first, id)
		}
	}
	a, b := &keyring{kv: kv}, &keyring{kv: kv}
	ka, _ := a.get(ctx)
	now := time.Now()
	tok := signToken(ka, tokenClaims{Issuer: tokenIssuer, Audience: "dockyard", Expires: now.Add(time.Minute).Unix(), NotBefore: now.Unix()})
	if _, err := verifyToken(ctx, b, tok, "dockyard", now); err != nil {
		t.Errorf("the other registry refused the token: %v", err)
	}
}
