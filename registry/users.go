package registry

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/dockyard/dockyard/metaserver"
)

// authBucket is the KV namespace of the registry's accounts and its token
// signing key, apart from the image records so that listing or collecting
// images never walks over them.
//
//	user/<name>    User: bcrypt hash, admin flag, grants
//	org/<name>     Org: members and their roles (orgs.go)
//	signing-key    the ed25519 key every registry of the cluster signs tokens with
//
// Anyone holding the cluster secret can read and write these records
// through the metaserver API; that is what `dockyard admin user` does.
const authBucket = "registry-auth"

func userKey(name string) string { return "user/" + name }

// Errors of the user store, for callers to tell apart with errors.Is.
var (
	ErrUserExists   = errors.New("user already exists")
	ErrUserNotFound = errors.New("no such user")
	ErrUserInvalid  = errors.New("invalid user")
	ErrBadPassword  = errors.New("wrong user name or password")
)

// userNameRE is one path component of a repository name: a user's
// namespace is the repositories NAME/..., so the name must be usable as one.
var userNameRE = regexp.MustCompile(`^[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*$`)

// Password bounds: bcrypt uses only the first 72 bytes, so longer
// passwords are refused rather than silently cut.
const (
	minPassword = 8
	maxPassword = 72
)

// ValidUserName reports whether name can be a user (and so a namespace).
func ValidUserName(name string) bool { return len(name) <= 64 && userNameRE.MatchString(name) }

// Action is what a token or grant allows on a repository.
type Action string

const (
	ActionPull   Action = "pull"
	ActionPush   Action = "push"
	ActionDelete Action = "delete"
)

// Grant gives a user pull or push on every repository named Prefix or
// under Prefix/. Push implies pull and delete.
type Grant struct {
	Prefix string `json:"prefix"`
	Action Action `json:"action"`
}

// User is an account of the registry. Hash is a bcrypt hash; the password
// itself is never stored or logged.
type User struct {
	Name    string  `json:"name"`
	Admin   bool    `json:"admin,omitempty"`
	Hash    []byte  `json:"hash,omitempty"`
	Grants  []Grant `json:"grants,omitempty"`
	Created int64   `json:"created"` // unix seconds
}

// Actions returns what u may do on repo: everything for an admin and in
// the user's own namespace (NAME and NAME/...), else what the grants give.
func (u *User) Actions(repo string) actionSet {
	if u.Admin || underPrefix(repo, u.Name) {
		return allActions
	}
	var s actionSet
	for _, g := range u.Grants {
		if !underPrefix(repo, g.Prefix) {
			continue
		}
		switch g.Action {
		case ActionPull:
			s |= canPull
		case ActionPush:
			s |= allActions
		}
	}
	return s
}

// underPrefix matches whole path components: prefix "team" covers "team"
// and "team/app" but not "teams".
func underPrefix(repo, prefix string) bool {
	return repo == prefix || strings.HasPrefix(repo, prefix+"/")
}

// actionSet is a small bit set of actions.
type actionSet uint8

const (
	canPull actionSet = 1 << iota
	canPush
	canDelete
	allActions = canPull | canPush | canDelete
)

func (s actionSet) has(a Action) bool {
	switch a {
	case ActionPull:
		return s&canPull != 0
	case ActionPush:
		return s&canPush != 0
	case ActionDelete:
		return s&canDelete != 0
	}
	return false
}

// list returns the actions in the order clients write them.
func (s actionSet) list() []string {
	var out []string
	for _, a := range []Action{ActionPull, ActionPush, ActionDelete} {
		if s.has(a) {
			out = append(out, string(a))
		}
	}
	return out
}

// UserStore keeps the registry's users in the metaserver KV. The registry
// reads it to check passwords; `dockyard admin user` changes it.
type UserStore struct {
	kv  metaserver.KV
	now func() time.Time
	// cost is the bcrypt cost; tests lower it.
	cost int

	// verified remembers recent successful password checks, keyed by a
	// hash of name and password together with the stored bcrypt hash they
	// matched, so a client sending Basic credentials on every request of a
	// push pays bcrypt once, and a changed password is checked afresh.
	mu       sync.Mutex
	verified map[[32]byte]verifiedEntry
}

type verifiedEntry struct {
	hash  string
	until time.Time
}

// verifiedTTL bounds how long a remembered password check is trusted, and
// verifiedMax how many are remembered.
const (
	verifiedTTL = time.Minute
	verifiedMax = 4096
)

// NewUserStore returns the user store over kv.
func NewUserStore(kv metaserver.KV) *UserStore {
	return &UserStore{kv: kv, now: time.Now, cost: bcrypt.DefaultCost, verified: map[[32]byte]verifiedEntry{}}
}

func checkPassword(pw string) error {
	switch {
	case len(pw) < minPassword:
		return fmt.Errorf("%w: a password needs at least %d characters", ErrUserInvalid, minPassword)
	case len(pw) > maxPassword:
		return fmt.Errorf("%w: a password may have at most %d bytes (bcrypt ignores the rest)", ErrUserInvalid, maxPassword)
	}
	return nil
}

func checkPrefix(prefix string) error {
	if !ValidName(prefix) {
		return fmt.Errorf("%w: %q is not a repository name or namespace", ErrUserInvalid, prefix)
	}
	return nil
}

// Get returns a user or ErrUserNotFound.
func (s *UserStore) Get(ctx context.Context, name string) (*User, error) {
	u, _, err := s.get(ctx, name)
	return u, err
}

func (s *UserStore) get(ctx context.Context, name string) (*User, []byte, error) {
	if !ValidUserName(name) {
		return nil, nil, fmt.Errorf("%w: %q", ErrUserNotFound, name)
	}
	b, ok, err := s.kv.KVGet(ctx, authBucket, userKey(name))
	if err != nil {
		return nil, nil, kvErr(err, "reading user "+name)
	}
	if !ok {
		return nil, nil, fmt.Errorf("%w: %q", ErrUserNotFound, name)
	}
	var u User
	if err := json.Unmarshal(b, &u); err != nil {
		return nil, nil, fmt.Errorf("decoding user %s: %w", name, err)
	}
	return &u, b, nil
}

// Add creates a user with a password.
func (s *UserStore) Add(ctx context.Context, name, password string, admin bool) error {
	if !ValidUserName(name) {
		return fmt.Errorf("%w: %q: a user name is lower-case letters and digits, optionally separated by '.', '_' or '-' (it names the user's namespace)", ErrUserInvalid, name)
	}
	if err := checkPassword(password); err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), s.cost)
	if err != nil {
		return fmt.Errorf("hashing the password: %w", err)
	}
	u := User{Name: name, Admin: admin, Hash: hash, Created: s.now().Unix()}
	err = s.kv.KVTxn(ctx,
		[]metaserver.KVCond{
			{Bucket: authBucket, Key: userKey(name), Exists: false},
			{Bucket: authBucket, Key: orgKey(name), Exists: false},
		},
		[]metaserver.KVOp{{Bucket: authBucket, Key: userKey(name), Value: mustJSON(u)}})
	if errors.Is(err, metaserver.ErrConflict) {
		if err := s.nameTakenByOrg(ctx, name); err != nil {
			return err
		}
		return fmt.Errorf("%w: %s", ErrUserExists, name)
	}
	return kvErr(err, "adding user "+name)
}

// Remove deletes a user and its organisation memberships. Tokens already
// issued to it stay valid until they expire (minutes); Basic credentials
// stop working at once.
func (s *UserStore) Remove(ctx context.Context, name string) error {
	return s.removeUser(ctx, name)
}

// List returns every user, sorted by name, without password hashes.
func (s *UserStore) List(ctx context.Context) ([]User, error) {
	pairs, err := s.kv.KVList(ctx, authBucket, "user/", "", 0)
	if err != nil {
		return nil, kvErr(err, "listing users")
	}
	out := make([]User, 0, len(pairs))
	for _, p := range pairs {
		var u User
		if err := json.Unmarshal(p.Value, &u); err != nil {
			return nil, fmt.Errorf("decoding %s: %w", p.Key, err)
		}
		u.Hash = nil
		out = append(out, u)
	}
	return out, nil
}

// SetPassword replaces a user's password.
func (s *UserStore) SetPassword(ctx context.Context, name, password string) error {
	if err := checkPassword(password); err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), s.cost)
	if err != nil {
		return fmt.Errorf("hashing the password: %w", err)
	}
	return s.update(ctx, name, func(u *User) (bool, error) { u.Hash = hash; return true, nil })
}

// SetAdmin makes a user an admin or takes that away.
func (s *UserStore) SetAdmin(ctx context.Context, name string, admin bool) error {
	return s.update(ctx, name, func(u *User) (bool, error) { u.Admin = admin; return true, nil })
}

// AddGrant gives a user pull or push on prefix and what is under it,
// replacing an earlier grant on the same prefix.
func (s *UserStore) AddGrant(ctx context.Context, name, prefix string, a Action) error {
	if err := checkPrefix(prefix); err != nil {
		return err
	}
	if a != ActionPull && a != ActionPush {
		return fmt.Errorf("%w: a grant is pull or push, not %q", ErrUserInvalid, a)
	}
	return s.update(ctx, name, func(u *User) (bool, error) {
		kept := u.Grants[:0]
		for _, g := range u.Grants {
			if g.Prefix != prefix {
				kept = append(kept, g)
			}
		}
		u.Grants = append(kept, Grant{Prefix: prefix, Action: a})
		sort.Slice(u.Grants, func(i, j int) bool { return u.Grants[i].Prefix < u.Grants[j].Prefix })
		return true, nil
	})
}

// RemoveGrant takes away a user's grant on exactly prefix.
func (s *UserStore) RemoveGrant(ctx context.Context, name, prefix string) error {
	return s.update(ctx, name, func(u *User) (bool, error) {
		for i, g := range u.Grants {
			if g.Prefix == prefix {
				u.Grants = append(u.Grants[:i], u.Grants[i+1:]...)
				return true, nil
			}
		}
		return false, fmt.Errorf("%w: %s has no grant on %q", ErrUserNotFound, name, prefix)
	})
}

// update applies change to a user conditionally on the record being
// unchanged since it was read, retrying on a conflict; change returns
// false to delete the user.
func (s *UserStore) update(ctx context.Context, name string, change func(*User) (keep bool, err error)) error {
	for attempt := 0; ; attempt++ {
		u, old, err := s.get(ctx, name)
		if err != nil {
			return err
		}
		keep, err := change(u)
		if err != nil {
			return err
		}
		op := metaserver.KVOp{Bucket: authBucket, Key: userKey(name), Delete: true}
		if keep {
			op = metaserver.KVOp{Bucket: authBucket, Key: userKey(name), Value: mustJSON(u)}
		}
		err = s.kv.KVTxn(ctx, []metaserver.KVCond{{Bucket: authBucket, Key: userKey(name), Exists: true, Value: old}}, []metaserver.KVOp{op})
		if err == nil {
			return nil
		}
		if !errors.Is(err, metaserver.ErrConflict) || attempt >= 20 {
			return kvErr(err, "updating user "+name)
		}
		if err := sleepCtx(ctx, time.Duration(attempt+1)*5*time.Millisecond); err != nil {
			return err
		}
	}
}

// Authenticate checks a name and password and returns the user. Unknown
// users and wrong passwords give the same ErrBadPassword.
func (s *UserStore) Authenticate(ctx context.Context, name, password string) (*User, error) {
	u, _, err := s.get(ctx, name)
	if errors.Is(err, ErrUserNotFound) {
		// Spend about the time a real check takes, so a stranger cannot
		// tell which names exist by timing.
		_ = bcrypt.CompareHashAndPassword(dummyHash(s.cost), []byte(password))
		return nil, ErrBadPassword
	}
	if err != nil {
		return nil, err
	}
	key := sha256.Sum256([]byte(name + "\x00" + password))
	now := s.now()
	s.mu.Lock()
	e, ok := s.verified[key]
	s.mu.Unlock()
	if ok && now.Before(e.until) && subtle.ConstantTimeCompare([]byte(e.hash), u.Hash) == 1 {
		return u, nil
	}
	if bcrypt.CompareHashAndPassword(u.Hash, []byte(password)) != nil {
		return nil, ErrBadPassword
	}
	s.mu.Lock()
	if len(s.verified) >= verifiedMax {
		clear(s.verified)
	}
	s.verified[key] = verifiedEntry{hash: string(u.Hash), until: now.Add(verifiedTTL)}
	s.mu.Unlock()
	return u, nil
}

var (
	dummyOnce sync.Once
	dummy     []byte
)

func dummyHash(cost int) []byte {
	dummyOnce.Do(func() {
		dummy, _ = bcrypt.GenerateFromPassword([]byte("not a password of anyone"), cost)
	})
	return dummy
}
