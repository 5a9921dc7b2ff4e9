package registry

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// AuthConfig turns on accounts and token authentication. With it, every
// /v2/ request needs a user (HTTP Basic, or a bearer token from /token);
// see docs/auth.md.
//
// Who may do what:
//   - an admin: everything, on every repository;
//   - a user NAME: pull, push and delete on NAME and NAME/...;
//   - grants: pull, or push (which includes pull and delete), on a
//     repository and everything under it;
//   - members of an organisation ORG: their role, pull or push, on ORG
//     and ORG/...;
//   - anyone, with AnonymousPull: pull.
//
// Deleting needs push rights: whoever may overwrite a tag may remove it.
type AuthConfig struct {
	// Users is the account store. Required.
	Users *UserStore
	// AnonymousPull lets requests without credentials pull every repository.
	AnonymousPull bool
	// TokenTTL is how long an issued token is valid (default 5 min).
	TokenTTL time.Duration
	// Realm is the token endpoint announced in challenges. Default: /token
	// on the scheme and host the client used.
	Realm string
	// Service names this registry in tokens (their audience); every
	// registry of a cluster must use the same one (default "dockyard").
	Service string
}

func (a *AuthConfig) setDefaults() {
	if a.TokenTTL <= 0 {
		a.TokenTTL = 5 * time.Minute
	}
	if a.Service == "" {
		a.Service = "dockyard"
	}
}

// TokenPath is where the registry issues tokens.
const TokenPath = "/token"

// Echo context keys of the auth layer.
const (
	challengeKey = "dockyard.challenge"
	identityKey  = "dockyard.identity"
)

// identity is who a request is: a user from Basic credentials, a token's
// subject, or nobody.
type identity struct {
	name   string          // "" for anonymous
	user   *User           // set for Basic credentials, or once looked up
	claims *tokenClaims    // set for a bearer token
	orgs   map[string]*Org // organisations read for this request; nil: none of that name
}

// auth is the registry's access control; nil when auth is off.
type auth struct {
	cfg  AuthConfig
	keys *keyring
	now  func() time.Time
}

// identify reads the request's credentials, once per request. Bad
// credentials are UNAUTHORIZED; missing ones are the anonymous identity.
func (a *auth) identify(c echo.Context) (*identity, error) {
	if id, ok := c.Get(identityKey).(*identity); ok {
		return id, nil
	}
	req := c.Request()
	h := req.Header.Get(echo.HeaderAuthorization)
	id := &identity{}
	scheme, cred, _ := strings.Cut(h, " ")
	switch {
	case h == "":
	case strings.EqualFold(scheme, "basic"):
		name, pw, ok := req.BasicAuth()
		if !ok {
			return nil, ErrUnauthorized.With("malformed Basic credentials")
		}
		u, err := a.cfg.Users.Authenticate(req.Context(), name, pw)
		if errors.Is(err, ErrBadPassword) {
			return nil, ErrUnauthorized.With("wrong user name or password")
		} else if err != nil {
			return nil, err
		}
		id.name, id.user = u.Name, u
	case strings.EqualFold(scheme, "bearer"):
		cl, err := verifyToken(req.Context(), a.keys, strings.TrimSpace(cred), a.cfg.Service, a.now())
		if errors.Is(err, ErrTokenInvalid) {
			return nil, ErrUnauthorized.With("%v", err)
		} else if err != nil {
			return nil, err
		}
		id.name, id.claims = cl.Subject, cl
	default:
		return nil, ErrUnauthorized.With("unsupported authorization scheme %q", scheme)
	}
	c.Set(identityKey, id)
	return id, nil
}

// rights returns what the identity's account holds on repo now, whatever
// its token says. A token's subject removed since is UNAUTHORIZED.
func (a *auth) rights(ctx context.Context, id *identity, repo string) (actionSet, error) {
	if id.name == "" {
		if a.cfg.AnonymousPull {
			return canPull, nil
		}
		return 0, nil
	}
	if id.user == nil {
		u, err := a.cfg.Users.Get(ctx, id.name)
		if errors.Is(err, ErrUserNotFound) {
			return 0, ErrUnauthorized.With("user %q no longer exists", id.name)
		} else if err != nil {
			return 0, err
		}
		id.user = u
	}
	s := id.user.Actions(repo)
	if s != allActions {
		o, err := a.orgRights(ctx, id, repo)
		if err != nil {
			return 0, err
		}
		s |= o
	}
	if a.cfg.AnonymousPull {
		s |= canPull
	}
	return s, nil
}

// actionsOf is what a request of this identity may do on repo: a token's
// grants, or for Basic credentials and anonymous requests the account's.
func (a *auth) actionsOf(ctx context.Context, id *identity, repo string) (actionSet, error) {
	if id.claims != nil {
		return id.claims.actions(repo), nil
	}
	return a.rights(ctx, id, repo)
}

// authorize checks that the request may do need on repo. A token that
// lacks an action the account holds gets a challenge for it (the client
// fetches a new token); an account that does not hold it is DENIED, so
// clients print "denied" rather than asking for a login again.
func (a *auth) authorize(c echo.Context, repo string, need actionSet, challenge string) error {
	id, err := a.identify(c)
	if err != nil {
		a.challenge(c, "repository:"+repo+":"+challenge, "invalid_token")
		return err
	}
	ctx := c.Request().Context()
	have, err := a.actionsOf(ctx, id, repo)
	if err != nil {
		return err
	}
	if have&need == need {
		return nil
	}
	if id.claims != nil {
		held, err := a.rights(ctx, id, repo)
		if err != nil {
			return err
		}
		if held&need == need {
			a.challenge(c, "repository:"+repo+":"+challenge, "insufficient_scope")
			return ErrUnauthorized.With("the token does not grant %s on %s", challenge, repo)
		}
	}
	if id.name == "" {
		a.challenge(c, "repository:"+repo+":"+challenge, "")
		return ErrUnauthorized.With("log in to %s %s", challenge, repo)
	}
	return ErrDenied.With("%s may not %s %s", id.name, challenge, repo)
}

// authenticated checks that the request has a user or a token (which
// anonymous pulls get too). /v2/ answers 401 to nobody, even with
// anonymous pulls on, because `docker login` takes a 200 there as
// "no login needed" and would accept any password.
func (a *auth) authenticated(c echo.Context) (*identity, error) {
	id, err := a.identify(c)
	if err != nil {
		a.challenge(c, "", "invalid_token")
		return nil, err
	}
	if id.name == "" && id.claims == nil {
		a.challenge(c, "", "")
		return nil, ErrUnauthorized.With("log in to use this registry")
	}
	return id, nil
}

// challenge sets the WWW-Authenticate header the error renderer sends
// with a 401: where to get a token, for which service and scope.
func (a *auth) challenge(c echo.Context, scope, errCode string) {
	realm := a.cfg.Realm
	if realm == "" {
		realm = c.Scheme() + "://" + c.Request().Host + TokenPath
	}
	v := fmt.Sprintf(`Bearer realm=%q,service=%q`, realm, a.cfg.Service)
	if scope != "" {
		v += fmt.Sprintf(`,scope=%q`, scope)
	}
	if errCode != "" {
		v += fmt.Sprintf(`,error=%q`, errCode)
	}
	c.Set(challengeKey, v)
}

// authorizeV2 checks a /v2/ request against its route.
func (r *Registry) authorizeV2(c echo.Context, rt route) error {
	a := r.auth
	if a == nil {
		return nil
	}
	switch rt.kind {
	case "base":
		_, err := a.authenticated(c)
		return err
	case "catalog":
		id, err := a.authenticated(c)
		if err != nil {
			return err
		}
		if id.claims != nil && !id.claims.catalog() {
			a.challenge(c, "registry:catalog:*", "insufficient_scope")
			return ErrUnauthorized.With("the token does not grant the catalog")
		}
		return nil
	}
	need, challenge := canPull, "pull"
	switch m := c.Request().Method; {
	case rt.kind == "upload":
		// Every step of an upload writes, even GET of its status.
		need, challenge = canPush, "pull,push"
	case m == http.MethodGet || m == http.MethodHead:
	case m == http.MethodDelete:
		need, challenge = canDelete, "delete"
	default:
		need, challenge = canPush, "pull,push"
	}
	return a.authorize(c, rt.name, need, challenge)
}

// mayList reports whether a listing (the catalog, the search) shows repo
// to this request: what the account may pull now. The catalog's token
// grants the listing itself, not the repositories in it.
func (r *Registry) mayList(c echo.Context, repo string) (bool, error) {
	if r.auth == nil {
		return true, nil
	}
	id, err := r.auth.identify(c)
	if err != nil {
		return false, err
	}
	have, err := r.auth.rights(c.Request().Context(), id, repo)
	return have.has(ActionPull), err
}

// mayPull reports whether the request may read repo (a cross-repository
// mount's source, appc): its token's grants, or its account's.
func (r *Registry) mayPull(c echo.Context, repo string) (bool, error) {
	if r.auth == nil {
		return true, nil
	}
	id, err := r.auth.identify(c)
	if err != nil {
		return false, err
	}
	have, err := r.auth.actionsOf(c.Request().Context(), id, repo)
	return have.has(ActionPull), err
}

// authorizePull guards the routes outside /v2/ (search, appc) that read
// repositories: anonymous requests without anonymous pulls are asked for
// Basic credentials, which is what those clients send.
func (r *Registry) authorizePull(c echo.Context, repo string) error {
	if r.auth == nil {
		return nil
	}
	id, err := r.auth.identify(c)
	if err != nil {
		return err
	}
	if repo == "" {
		if id.name == "" && !r.auth.cfg.AnonymousPull {
			return ErrUnauthorized.With("log in to search this registry")
		}
		return nil
	}
	ok, err := r.mayPull(c, repo)
	switch {
	case err != nil:
		return err
	case ok:
		return nil
	case id.name == "":
		return ErrUnauthorized.With("log in to pull %s", repo)
	}
	return ErrDenied.With("%s may not pull %s", id.name, repo)
}

// tokenResponse is the body of a token answer (distribution token spec;
// both names of the token, for old and OAuth2 clients).
type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int    `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// token answers GET /token (Basic credentials, docker's flow) and POST
// /token (OAuth2 password grant, containerd's flow). Requests without
// credentials get an anonymous token when anonymous pulls are on. The
// token grants, of what was asked, only what the account holds.
func (r *Registry) token(c echo.Context) error {
	c.Set(routeKey, "token")
	a := r.auth
	req := c.Request()
	var name, pw, service string
	var scopes []string
	var haveCreds bool
	if req.Method == http.MethodPost {
		if err := req.ParseForm(); err != nil {
			return ErrTokenRequest.With("malformed form: %v", err)
		}
		switch gt := req.PostForm.Get("grant_type"); gt {
		case "password":
			name, pw, haveCreds = req.PostForm.Get("username"), req.PostForm.Get("password"), true
		default:
			// No refresh tokens are issued; a client with one falls back
			// to GET with its credentials.
			return ErrTokenRequest.With("grant_type %q is not supported; use password", gt)
		}
		service, scopes = req.PostForm.Get("service"), req.PostForm["scope"]
	} else {
		q := req.URL.Query()
		service, scopes = q.Get("service"), q["scope"]
		name, pw, haveCreds = req.BasicAuth()
		if acct := q.Get("account"); haveCreds && acct != "" && acct != name {
			return ErrUnauthorized.With("account %q does not match the credentials", acct)
		}
	}
	if service != "" && service != a.cfg.Service {
		return ErrTokenRequest.With("this registry issues tokens for service %q, not %q", a.cfg.Service, service)
	}
	ss, err := parseScopes(scopes)
	if err != nil {
		return ErrTokenRequest.With("%v", err)
	}
	ctx := req.Context()
	id := &identity{}
	if haveCreds {
		u, err := a.cfg.Users.Authenticate(ctx, name, pw)
		if errors.Is(err, ErrBadPassword) {
			return ErrUnauthorized.With("wrong user name or password")
		} else if err != nil {
			return err
		}
		id.name, id.user = u.Name, u
	} else if !a.cfg.AnonymousPull {
		return ErrUnauthorized.With("log in to get a token")
	}
	var access []ResourceAccess
	for _, s := range ss {
		switch s.Type {
		case "repository":
			held, err := a.rights(ctx, id, s.Name)
			if err != nil {
				return err
			}
			if got := (parseActions(s.Actions) & held).list(); len(got) > 0 {
				access = append(access, ResourceAccess{Type: s.Type, Name: s.Name, Actions: got})
			}
		case "registry":
			// The catalog is filtered per account when it is listed.
			if s.Name == "catalog" {
				access = append(access, ResourceAccess{Type: s.Type, Name: s.Name, Actions: []string{"*"}})
			}
		}
	}
	key, err := a.keys.get(ctx)
	if err != nil {
		return err
	}
	now := a.now()
	exp := now.Add(a.cfg.TokenTTL)
	tok := signToken(key, tokenClaims{
		Issuer:    tokenIssuer,
		Subject:   id.name,
		Audience:  a.cfg.Service,
		Expires:   exp.Unix(),
		NotBefore: now.Unix(),
		IssuedAt:  now.Unix(),
		ID:        newID(),
		Access:    access,
	})
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.JSON(http.StatusOK, tokenResponse{
		Token:       tok,
		AccessToken: tok,
		ExpiresIn:   int(a.cfg.TokenTTL / time.Second),
		IssuedAt:    now.UTC().Format(time.RFC3339),
	})
}
