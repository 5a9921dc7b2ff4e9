package registry

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// newOrgEnv is newAuthEnv plus the image acme/app:v1 and the organisation
// acme, where carol holds pull and dave push; alice, bob and root are not
// members (root is an admin).
func newOrgEnv(t *testing.T) *authEnv {
	t.Helper()
	e := newAuthEnv(t, false)
	e.start(Config{Now: e.clock.Now})
	e.pushImage("acme/app", "v1", []byte("acme layer"))
	e.pushImage("acmes/app", "v1", []byte("acmes layer"))
	e.start(Config{Now: e.clock.Now, Auth: &AuthConfig{Users: e.users}})
	ctx := context.Background()
	if err := e.users.AddOrg(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := e.users.SetOrgMember(ctx, "acme", "carol", ActionPull); err != nil {
		t.Fatal(err)
	}
	if err := e.users.SetOrgMember(ctx, "acme", "dave", ActionPush); err != nil {
		t.Fatal(err)
	}
	return e
}

// TestAuthOrgs runs the routes of acme's namespace with each kind of
// caller: a non-member, a pull member, a push member, an admin.
func TestAuthOrgs(t *testing.T) {
	e := newOrgEnv(t)
	const (
		pull = iota // carol, dave and root get the row's status; alice 403
		push        // dave and root get the row's status; alice and carol 403
		none        // only root gets the row's status: acmes is not under acme
	)
	routes := []struct {
		method, path string
		need         int
		want         int
	}{
		{"GET", "/v2/acme/app/manifests/v1", pull, 200},
		{"GET", "/v2/acme/app/tags/list", pull, 200},
		{"GET", "/v2/acme/tags/list", pull, 404}, // the organisation's own name is in its namespace
		{"GET", "/v2/acme/a/b/tags/list", pull, 404},
		{"POST", "/v2/acme/app/blobs/uploads/", push, 202},
		{"POST", "/v2/acme/new/blobs/uploads/", push, 202},
		{"DELETE", "/v2/acme/app/manifests/nope", push, 404},
		{"GET", "/v2/acmes/app/tags/list", none, 200},
		{"POST", "/v2/acmes/app/blobs/uploads/", none, 202},
	}
	callers := []struct {
		user  string
		holds int // the most the caller may do in acme/...: -1 nothing, else pull or push
	}{
		{"alice", -1}, {"carol", pull}, {"dave", push}, {"root", none},
	}
	for _, rt := range routes {
		for _, cl := range callers {
			want, wantCode := rt.want, ""
			if cl.user != "root" && (rt.need == none || cl.holds < rt.need) {
				want, wantCode = 403, "DENIED"
			}
			r := e.do(rt.method, rt.path, basic(cl.user, testPassword), nil)
			if r.status != want || (wantCode != "" && r.code() != wantCode) {
				t.Errorf("%s %s as %s: %d %s, want %d %s (%s)", rt.method, rt.path, cl.user, r.status, r.code(), want, wantCode, r.body)
			}
		}
	}

	// Tokens list only the actions held through the organisation.
	for user, want := range map[string][]string{"carol": {"pull"}, "dave": {"pull", "push", "delete"}, "alice": nil} {
		tok, _ := e.token(user, "repository:acme/app:*")
		var got []string
		if acc := claims(t, tok).Access; len(acc) == 1 {
			got = acc[0].Actions
		}
		if !slices.Equal(got, want) {
			t.Errorf("token of %s for acme/app:* grants %v, want %v", user, got, want)
		}
	}

	// Listings go through the same rights.
	for user, want := range map[string][]string{
		"alice": {"alice/app"},
		"carol": {"acme/app", "team/web"},
		"dave":  {"acme/app", "team/web"},
	} {
		r := e.must(e.do("GET", "/v2/_catalog", basic(user, testPassword), nil), 200)
		var b struct{ Repositories []string }
		if err := json.Unmarshal(r.body, &b); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(b.Repositories, want) {
			t.Errorf("catalog of %s: %v, want %v", user, b.Repositories, want)
		}
	}
}

// TestAuthOrgChangesAtOnce checks that membership changes count on the
// next request, whatever a Basic password check remembered, while a token
// issued before keeps what it lists until it expires.
func TestAuthOrgChangesAtOnce(t *testing.T) {
	e := newOrgEnv(t)
	ctx := context.Background()
	carol := basic("carol", testPassword)
	e.must(e.do("GET", "/v2/acme/app/tags/list", carol, nil), 200)
	e.must(e.do("POST", "/v2/acme/app/blobs/uploads/", carol, nil), 403)
	tok, _ := e.token("carol", "repository:acme/app:pull")

	if err := e.users.SetOrgMember(ctx, "acme", "carol", ActionPush); err != nil {
		t.Fatal(err)
	}
	e.must(e.do("POST", "/v2/acme/app/blobs/uploads/", carol, nil), 202)

	if err := e.users.RemoveOrgMember(ctx, "acme", "carol"); err != nil {
		t.Fatal(err)
	}
	e.must(e.do("GET", "/v2/acme/app/tags/list", carol, nil), 403)
	if tok2, _ := e.token("carol", "repository:acme/app:pull"); len(claims(t, tok2).Access) != 0 {
		t.Errorf("a removed member got a token for acme/app: %+v", claims(t, tok2).Access)
	}
	// The token issued before lists pull and is honoured until it expires.
	e.must(e.do("GET", "/v2/acme/app/tags/list", bearer(tok), nil), 200)

	// Removing the organisation ends dave's rights too.
	dave := basic("dave", testPassword)
	e.must(e.do("GET", "/v2/acme/app/tags/list", dave, nil), 200)
	if err := e.users.RemoveOrg(ctx, "acme", true); err != nil {
		t.Fatal(err)
	}
	e.must(e.do("GET", "/v2/acme/app/tags/list", dave, nil), 403)
}

func TestOrgStore(t *testing.T) {
	ctx := context.Background()
	s := NewUserStore(newMemKV())
	s.cost = bcrypt.MinCost
	for _, name := range []string{"Acme", "a/b", "", "-a", "acme-"} {
		if err := s.AddOrg(ctx, name); !errors.Is(err, ErrOrgInvalid) {
			t.Errorf("AddOrg(%q) = %v, want ErrOrgInvalid", name, err)
		}
	}
	for _, u := range []string{"alice", "bob"} {
		if err := s.Add(ctx, u, testPassword, false); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AddOrg(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddOrg(ctx, "acme"); !errors.Is(err, ErrOrgExists) {
		t.Errorf("second AddOrg: %v", err)
	}
	// A user and an organisation never share a name.
	if err := s.AddOrg(ctx, "alice"); !errors.Is(err, ErrNameTaken) {
		t.Errorf("AddOrg(alice) with a user alice: %v, want ErrNameTaken", err)
	}
	if err := s.Add(ctx, "acme", testPassword, false); !errors.Is(err, ErrNameTaken) {
		t.Errorf("Add(acme) with an organisation acme: %v, want ErrNameTaken", err)
	}
	if err := s.Add(ctx, "alice", testPassword, false); !errors.Is(err, ErrUserExists) {
		t.Errorf("second alice: %v, want ErrUserExists", err)
	}

	for _, tc := range []struct {
		org, user string
		role      Action
		want      error
	}{
		{"acme", "alice", "admin", ErrOrgInvalid},
		{"acme", "alice", ActionDelete, ErrOrgInvalid},
		{"acme", "mallory", ActionPull, ErrUserNotFound},
		{"nope", "alice", ActionPull, ErrOrgNotFound},
	} {
		if err := s.SetOrgMember(ctx, tc.org, tc.user, tc.role); !errors.Is(err, tc.want) {
			t.Errorf("SetOrgMember(%s, %s, %s) = %v, want %v", tc.org, tc.user, tc.role, err, tc.want)
		}
	}
	if err := s.SetOrgMember(ctx, "acme", "bob", ActionPush); err != nil {
		t.Fatal(err)
	}
	if err := s.SetOrgMember(ctx, "acme", "alice", ActionPush); err != nil {
		t.Fatal(err)
	}
	if err := s.SetOrgMember(ctx, "acme", "alice", ActionPull); err != nil { // replaces
		t.Fatal(err)
	}
	o, err := s.GetOrg(ctx, "acme")
	want := []OrgMember{{"alice", ActionPull}, {"bob", ActionPush}}
	if err != nil || !reflect.DeepEqual(o.Members, want) {
		t.Fatalf("members %+v, %v; want %+v", o, err, want)
	}
	for _, tc := range []struct {
		user, repo string
		want       actionSet
	}{
		{"alice", "acme", canPull}, {"alice", "acme/x/y", canPull}, {"alice", "acmes/x", 0}, {"alice", "other/acme", 0},
		{"bob", "acme/x", allActions}, {"bob", "acmex", 0}, {"carol", "acme/x", 0},
	} {
		if got := o.Actions(tc.user, tc.repo); got != tc.want {
			t.Errorf("%s on %s: %v, want %v", tc.user, tc.repo, got, tc.want)
		}
	}

	if err := s.RemoveOrgMember(ctx, "acme", "carol"); !errors.Is(err, ErrUserNotFound) {
		t.Errorf("removing a non-member: %v", err)
	}
	if err := s.RemoveOrg(ctx, "acme", false); !errors.Is(err, ErrOrgNotEmpty) {
		t.Errorf("RemoveOrg with members: %v, want ErrOrgNotEmpty", err)
	}

	// Removing a user removes its memberships, so a user of that name
	// added later is no member.
	if err := s.Remove(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(ctx, "bob", testPassword, false); err != nil {
		t.Fatal(err)
	}
	if o, _ := s.GetOrg(ctx, "acme"); !reflect.DeepEqual(o.Members, []OrgMember{{"alice", ActionPull}}) {
		t.Errorf("members after removing bob: %+v", o.Members)
	}

	if err := s.RemoveOrgMember(ctx, "acme", "alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.AddOrg(ctx, "zeta"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetOrgMember(ctx, "zeta", "alice", ActionPull); err != nil {
		t.Fatal(err)
	}
	orgs, err := s.ListOrgs(ctx)
	if err != nil || len(orgs) != 2 || orgs[0].Name != "acme" || orgs[1].Name != "zeta" || len(orgs[1].Members) != 1 {
		t.Errorf("ListOrgs: %+v, %v", orgs, err)
	}
	if err := s.RemoveOrg(ctx, "acme", false); err != nil { // no members left
		t.Fatal(err)
	}
	if err := s.RemoveOrg(ctx, "zeta", true); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveOrg(ctx, "zeta", true); !errors.Is(err, ErrOrgNotFound) {
		t.Errorf("second RemoveOrg: %v", err)
	}
	// The name is free for a user again.
	if err := s.Add(ctx, "acme", testPassword, false); err != nil {
		t.Errorf("user acme after the organisation went: %v", err)
	}
	if users, err := s.List(ctx); err != nil || len(users) != 3 {
		t.Errorf("users %+v, %v: organisations must not be listed as users", users, err)
	}
}
