package registry

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/dockyard/dockyard/metaserver"
)

// Tokens are JWTs (RFC 7519) signed with EdDSA (ed25519), in the shape of
// the distribution token specification: the claims name the service they
// are for and list, per resource, the actions granted. Clients treat them
// as opaque; only registries of this cluster read them. The few lines of
// JWT here are written out rather than imported: one algorithm, fixed
// header, no key discovery, so nothing a library would add is needed, and
// every other algorithm (including "none") is refused by construction.

// tokenIssuer is the iss claim of every token the registry issues.
const tokenIssuer = "dockyard"

const signingKeyKey = "signing-key"

// ErrTokenInvalid reports a token that cannot be trusted: malformed, signed
// by another key, for another service, or expired.
var ErrTokenInvalid = errors.New("invalid token")

// ResourceAccess is one entry of a token's access claim.
type ResourceAccess struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// tokenClaims is the JWT payload.
type tokenClaims struct {
	Issuer    string           `json:"iss"`
	Subject   string           `json:"sub"` // user name; "" for anonymous
	Audience  string           `json:"aud"`
	Expires   int64            `json:"exp"`
	NotBefore int64            `json:"nbf"`
	IssuedAt  int64            `json:"iat"`
	ID        string           `json:"jti"`
	Access    []ResourceAccess `json:"access"`
}

// actions returns what the claims grant on a repository. "*" grants
// everything, as some clients ask for it to delete.
func (c *tokenClaims) actions(repo string) actionSet {
	var s actionSet
	for _, a := range c.Access {
		if a.Type != "repository" || a.Name != repo {
			continue
		}
		s |= parseActions(a.Actions)
	}
	return s
}

func (c *tokenClaims) catalog() bool {
	for _, a := range c.Access {
		if a.Type == "registry" && a.Name == "catalog" {
			return true
		}
	}
	return false
}

func parseActions(as []string) actionSet {
	var s actionSet
	for _, a := range as {
		switch a {
		case "*":
			s |= allActions
		case string(ActionPull):
			s |= canPull
		case string(ActionPush):
			s |= canPush
		case string(ActionDelete):
			s |= canDelete
		}
	}
	return s
}

// signingKey is the ed25519 key of the cluster's registries with its key ID.
type signingKey struct {
	ID   string
	Priv ed25519.PrivateKey
}

type storedKey struct {
	Seed    []byte `json:"seed"`
	Created int64  `json:"created"`
}

func keyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// keyring loads the signing key from the metaserver KV, creating it on
// first use. Creation is a conditional put, so when several registries
// start at once exactly one key wins and all of them use it.
type keyring struct {
	kv metaserver.KV

	mu      sync.Mutex
	key     *signingKey
	checked time.Time // last reload because of an unknown key ID
}

// get returns the key, loading or creating it once.
func (k *keyring) get(ctx context.Context) (*signingKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.key != nil {
		return k.key, nil
	}
	return k.loadLocked(ctx)
}

// byID returns the key with the given ID. An unknown ID reloads the key
// from the KV (another registry may hold a newer key after the record was
// replaced), at most once every few seconds so forged IDs cannot turn
// every request into a KV read.
func (k *keyring) byID(ctx context.Context, id string) (*signingKey, error) {
	key, err := k.get(ctx)
	if err != nil || key.ID == id {
		return key, err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if time.Since(k.checked) < 5*time.Second {
		return nil, fmt.Errorf("%w: unknown key %q", ErrTokenInvalid, id)
	}
	k.checked = time.Now()
	key, err = k.loadLocked(ctx)
	if err != nil {
		return nil, err
	}
	if key.ID != id {
		return nil, fmt.Errorf("%w: unknown key %q", ErrTokenInvalid, id)
	}
	return key, nil
}

func (k *keyring) loadLocked(ctx context.Context) (*signingKey, error) {
	for attempt := 0; attempt < 5; attempt++ {
		b, ok, err := k.kv.KVGet(ctx, authBucket, signingKeyKey)
		if err != nil {
			return nil, kvErr(err, "reading the token signing key")
		}
		if ok {
			var sk storedKey
			if err := json.Unmarshal(b, &sk); err != nil || len(sk.Seed) != ed25519.SeedSize {
				return nil, fmt.Errorf("the token signing key record is damaged")
			}
			priv := ed25519.NewKeyFromSeed(sk.Seed)
			k.key = &signingKey{ID: keyID(priv.Public().(ed25519.PublicKey)), Priv: priv}
			return k.key, nil
		}
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return nil, fmt.Errorf("generating the token signing key: %w", err)
		}
		err = k.kv.KVTxn(ctx,
			[]metaserver.KVCond{{Bucket: authBucket, Key: signingKeyKey, Exists: false}},
			[]metaserver.KVOp{{Bucket: authBucket, Key: signingKeyKey, Value: mustJSON(storedKey{Seed: seed, Created: time.Now().Unix()})}})
		if err != nil && !errors.Is(err, metaserver.ErrConflict) {
			return nil, kvErr(err, "storing the token signing key")
		}
		// Created, or another registry was first: read back what won.
	}
	return nil, errors.New("the token signing key could not be created")
}

var b64 = base64.RawURLEncoding

// jwtHeader is fixed: the only algorithm issued or accepted is EdDSA.
type jwtHeader struct {
	Alg string `json:"alg"`
	Typ string `json:"typ"`
	Kid string `json:"kid"`
}

// signToken encodes and signs claims.
func signToken(key *signingKey, c tokenClaims) string {
	h := b64.EncodeToString(mustJSON(jwtHeader{Alg: "EdDSA", Typ: "JWT", Kid: key.ID}))
	p := b64.EncodeToString(mustJSON(c))
	signed := h + "." + p
	return signed + "." + b64.EncodeToString(ed25519.Sign(key.Priv, []byte(signed)))
}

// maxTokenLen bounds what is parsed at all.
const maxTokenLen = 16 << 10

// verifyToken checks a token's signature, issuer, audience and times and
// returns its claims. leeway tolerates clocks of registries a little apart
// on nbf only; an expired token is refused at once.
func verifyToken(ctx context.Context, keys *keyring, tok, service string, now time.Time) (*tokenClaims, error) {
	if len(tok) > maxTokenLen {
		return nil, fmt.Errorf("%w: too long", ErrTokenInvalid)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: not a JWT", ErrTokenInvalid)
	}
	hb, err := b64.DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrTokenInvalid, err)
	}
	var h jwtHeader
	if err := json.Unmarshal(hb, &h); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrTokenInvalid, err)
	}
	if h.Alg != "EdDSA" {
		return nil, fmt.Errorf("%w: algorithm %q is not accepted", ErrTokenInvalid, h.Alg)
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return nil, fmt.Errorf("%w: malformed signature", ErrTokenInvalid)
	}
	key, err := keys.byID(ctx, h.Kid)
	if err != nil {
		return nil, err
	}
	if !ed25519.Verify(key.Priv.Public().(ed25519.PublicKey), []byte(parts[0]+"."+parts[1]), sig) {
		return nil, fmt.Errorf("%w: bad signature", ErrTokenInvalid)
	}
	pb, err := b64.DecodeString(parts[1])
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrTokenInvalid, err)
	}
	var c tokenClaims
	dec := json.NewDecoder(bytes.NewReader(pb))
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrTokenInvalid, err)
	}
	const leeway = 30 * time.Second
	switch {
	case c.Issuer != tokenIssuer:
		return nil, fmt.Errorf("%w: issuer %q", ErrTokenInvalid, c.Issuer)
	case c.Audience != service:
		return nil, fmt.Errorf("%w: for service %q, not %q", ErrTokenInvalid, c.Audience, service)
	case now.Unix() >= c.Expires:
		return nil, fmt.Errorf("%w: expired", ErrTokenInvalid)
	case now.Add(leeway).Unix() < c.NotBefore:
		return nil, fmt.Errorf("%w: not valid yet", ErrTokenInvalid)
	}
	return &c, nil
}

// scope is one parsed scope parameter entry: TYPE:NAME:ACTIONS.
type scope struct {
	Type    string
	Name    string
	Actions []string
}

// ErrScopeInvalid reports a scope parameter that does not parse.
var ErrScopeInvalid = errors.New("invalid scope")

// parseScopes parses the scope parameters of a token request. Each value
// may hold several scopes separated by spaces (OAuth2 style); docker sends
// one parameter per scope. The type may carry a class in parentheses
// ("repository(plugin)"), which is dropped. Names of repository scopes
// must be valid repository names; actions are split on commas, empty ones
// dropped. Unknown types are kept and granted nothing.
func parseScopes(values []string) ([]scope, error) {
	var out []scope
	for _, v := range values {
		for _, s := range strings.Fields(v) {
			typ, rest, ok := strings.Cut(s, ":")
			i := strings.LastIndexByte(rest, ':')
			if !ok || i < 0 || typ == "" || i == 0 {
				return nil, fmt.Errorf("%w: %q is not TYPE:NAME:ACTIONS", ErrScopeInvalid, s)
			}
			name, acts := rest[:i], rest[i+1:]
			if j := strings.IndexByte(typ, '('); j > 0 && strings.HasSuffix(typ, ")") {
				typ = typ[:j]
			}
			if typ == "repository" && !ValidName(name) {
				return nil, fmt.Errorf("%w: %q is not a repository name", ErrScopeInvalid, name)
			}
			sc := scope{Type: typ, Name: name}
			for _, a := range strings.Split(acts, ",") {
				if a = strings.TrimSpace(a); a != "" {
					sc.Actions = append(sc.Actions, a)
				}
			}
			out = append(out, sc)
		}
	}
	return out, nil
}
