package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/dockyard/dockyard/metaserver"
)

// Organisations give a team one namespace without a grant per member: an
// organisation ORG owns ORG and ORG/..., its members with the pull role may
// pull there and those with the push role may push and delete too. They
// live in the auth bucket beside the users, one record per organisation:
//
//	org/<name>    Org: its members and their roles
//
// A user and an organisation never share a name, since both would own the
// namespace of that name: adding either is refused while the other exists,
// and both checks are conditions of the same transaction as the write.
//
// Only admins change organisations (through `dockyard admin org`, like
// users); there is no organisation admin role, because nothing but the
// admin commands changes them.

func orgKey(name string) string { return "org/" + name }

// Errors of organisations, for callers to tell apart with errors.Is.
var (
	ErrOrgExists   = errors.New("organisation already exists")
	ErrOrgNotFound = errors.New("no such organisation")
	ErrOrgNotEmpty = errors.New("organisation still has members")
	ErrOrgInvalid  = errors.New("invalid organisation")
	// ErrNameTaken is a user name asked for an organisation, or the
	// other way round.
	ErrNameTaken = errors.New("name taken")
)

// OrgMember is a user's role in an organisation: ActionPull or ActionPush
// (which includes pull and delete), on the whole namespace.
type OrgMember struct {
	User string `json:"user"`
	Role Action `json:"role"`
}

// Org is an organisation and its members, sorted by user name.
type Org struct {
	Name    string      `json:"name"`
	Members []OrgMember `json:"members,omitempty"`
	Created int64       `json:"created"` // unix seconds
}

// Actions returns what user may do on repo as a member of o: nothing
// outside ORG and ORG/... (whole name components, as for grants) or for a
// user who is not a member.
func (o *Org) Actions(user, repo string) actionSet {
	if !underPrefix(repo, o.Name) {
		return 0
	}
	for _, m := range o.Members {
		if m.User != user {
			continue
		}
		switch m.Role {
		case ActionPull:
			return canPull
		case ActionPush:
			return allActions
		}
	}
	return 0
}

// GetOrg returns an organisation or ErrOrgNotFound.
func (s *UserStore) GetOrg(ctx context.Context, name string) (*Org, error) {
	o, _, err := s.getOrg(ctx, name)
	return o, err
}

func (s *UserStore) getOrg(ctx context.Context, name string) (*Org, []byte, error) {
	if !ValidUserName(name) {
		return nil, nil, fmt.Errorf("%w: %q", ErrOrgNotFound, name)
	}
	b, ok, err := s.kv.KVGet(ctx, authBucket, orgKey(name))
	if err != nil {
		return nil, nil, kvErr(err, "reading organisation "+name)
	}
	if !ok {
		return nil, nil, fmt.Errorf("%w: %q", ErrOrgNotFound, name)
	}
	var o Org
	if err := json.Unmarshal(b, &o); err != nil {
		return nil, nil, fmt.Errorf("decoding organisation %s: %w", name, err)
	}
	return &o, b, nil
}

// AddOrg creates an organisation without members. Its name follows the
// grammar of user names and must not be a user's.
func (s *UserStore) AddOrg(ctx context.Context, name string) error {
	if !ValidUserName(name) {
		return fmt.Errorf("%w: %q: an organisation name is lower-case letters and digits, optionally separated by '.', '_' or '-' (it names the organisation's namespace)", ErrOrgInvalid, name)
	}
	o := Org{Name: name, Created: s.now().Unix()}
	err := s.kv.KVTxn(ctx,
		[]metaserver.KVCond{
			{Bucket: authBucket, Key: orgKey(name), Exists: false},
			{Bucket: authBucket, Key: userKey(name), Exists: false},
		},
		[]metaserver.KVOp{{Bucket: authBucket, Key: orgKey(name), Value: mustJSON(o)}})
	if errors.Is(err, metaserver.ErrConflict) {
		_, userErr := s.Get(ctx, name)
		switch {
		case userErr == nil:
			return fmt.Errorf("%w: a user named %s exists and owns %s/...", ErrNameTaken, name, name)
		case !errors.Is(userErr, ErrUserNotFound):
			return userErr
		}
		return fmt.Errorf("%w: %s", ErrOrgExists, name)
	}
	return kvErr(err, "adding organisation "+name)
}

// nameTakenByOrg explains a conflict of adding the user name: an
// organisation of that name, or nil when there is none.
func (s *UserStore) nameTakenByOrg(ctx context.Context, name string) error {
	_, err := s.GetOrg(ctx, name)
	switch {
	case err == nil:
		return fmt.Errorf("%w: an organisation named %s exists and owns %s/...", ErrNameTaken, name, name)
	case errors.Is(err, ErrOrgNotFound):
		return nil
	}
	return err
}

// RemoveOrg deletes an organisation. One with members is refused with
// ErrOrgNotEmpty unless force is set. Its images stay, reachable by admins
// and by grants on its namespace.
func (s *UserStore) RemoveOrg(ctx context.Context, name string, force bool) error {
	return s.updateOrg(ctx, name, nil, func(o *Org) (bool, error) {
		if len(o.Members) > 0 && !force {
			return false, fmt.Errorf("%w (%d)", ErrOrgNotEmpty, len(o.Members))
		}
		return false, nil
	})
}

// ListOrgs returns every organisation, sorted by name.
func (s *UserStore) ListOrgs(ctx context.Context) ([]Org, error) {
	orgs, _, err := s.listOrgs(ctx)
	return orgs, err
}

// listOrgs returns the organisations and their records as stored.
func (s *UserStore) listOrgs(ctx context.Context) ([]Org, [][]byte, error) {
	pairs, err := s.kv.KVList(ctx, authBucket, "org/", "", 0)
	if err != nil {
		return nil, nil, kvErr(err, "listing organisations")
	}
	orgs := make([]Org, 0, len(pairs))
	raw := make([][]byte, 0, len(pairs))
	for _, p := range pairs {
		var o Org
		if err := json.Unmarshal(p.Value, &o); err != nil {
			return nil, nil, fmt.Errorf("decoding %s: %w", p.Key, err)
		}
		orgs, raw = append(orgs, o), append(raw, p.Value)
	}
	return orgs, raw, nil
}

// SetOrgMember makes user a member of org with role pull or push,
// replacing an earlier role. The user must exist: the write is conditional
// on it, so a membership never outlives its user (see removeUser).
func (s *UserStore) SetOrgMember(ctx context.Context, org, user string, role Action) error {
	if role != ActionPull && role != ActionPush {
		return fmt.Errorf("%w: a member's role is pull or push, not %q", ErrOrgInvalid, role)
	}
	userExists := func() ([]metaserver.KVCond, error) {
		if _, err := s.Get(ctx, user); err != nil {
			return nil, err
		}
		return []metaserver.KVCond{{Bucket: authBucket, Key: userKey(user), Exists: true}}, nil
	}
	return s.updateOrg(ctx, org, userExists, func(o *Org) (bool, error) {
		kept := o.Members[:0]
		for _, m := range o.Members {
			if m.User != user {
				kept = append(kept, m)
			}
		}
		o.Members = append(kept, OrgMember{User: user, Role: role})
		sort.Slice(o.Members, func(i, j int) bool { return o.Members[i].User < o.Members[j].User })
		return true, nil
	})
}

// RemoveOrgMember takes user out of org.
func (s *UserStore) RemoveOrgMember(ctx context.Context, org, user string) error {
	return s.updateOrg(ctx, org, nil, func(o *Org) (bool, error) {
		for i, m := range o.Members {
			if m.User == user {
				o.Members = append(o.Members[:i], o.Members[i+1:]...)
				return true, nil
			}
		}
		return false, fmt.Errorf("%w: %s is not a member of %s", ErrUserNotFound, user, org)
	})
}

// updateOrg applies change to an organisation conditionally on its record
// being unchanged since it was read (and on the conditions conds returns,
// asked afresh at every attempt), retrying on a conflict; change returns
// false to delete the organisation.
func (s *UserStore) updateOrg(ctx context.Context, name string, conds func() ([]metaserver.KVCond, error), change func(*Org) (keep bool, err error)) error {
	for attempt := 0; ; attempt++ {
		var extra []metaserver.KVCond
		if conds != nil {
			var err error
			if extra, err = conds(); err != nil {
				return err
			}
		}
		o, old, err := s.getOrg(ctx, name)
		if err != nil {
			return err
		}
		keep, err := change(o)
		if err != nil {
			return err
		}
		op := metaserver.KVOp{Bucket: authBucket, Key: orgKey(name), Delete: true}
		if keep {
			op = metaserver.KVOp{Bucket: authBucket, Key: orgKey(name), Value: mustJSON(o)}
		}
		cs := append([]metaserver.KVCond{{Bucket: authBucket, Key: orgKey(name), Exists: true, Value: old}}, extra...)
		err = s.kv.KVTxn(ctx, cs, []metaserver.KVOp{op})
		if err == nil {
			return nil
		}
		if !errors.Is(err, metaserver.ErrConflict) || attempt >= 20 {
			return kvErr(err, "updating organisation "+name)
		}
		if err := sleepCtx(ctx, time.Duration(attempt+1)*5*time.Millisecond); err != nil {
			return err
		}
	}
}

// removeUser deletes a user and its memberships in one transaction,
// conditional on the user and every organisation being as read, so a
// membership added meanwhile makes it start over rather than survive: a
// user of the same name added later starts with no memberships.
func (s *UserStore) removeUser(ctx context.Context, name string) error {
	for attempt := 0; ; attempt++ {
		_, old, err := s.get(ctx, name)
		if err != nil {
			return err
		}
		orgs, raw, err := s.listOrgs(ctx)
		if err != nil {
			return err
		}
		conds := []metaserver.KVCond{{Bucket: authBucket, Key: userKey(name), Exists: true, Value: old}}
		ops := []metaserver.KVOp{{Bucket: authBucket, Key: userKey(name), Delete: true}}
		for i, o := range orgs {
			conds = append(conds, metaserver.KVCond{Bucket: authBucket, Key: orgKey(o.Name), Exists: true, Value: raw[i]})
			kept := o.Members[:0]
			for _, m := range o.Members {
				if m.User != name {
					kept = append(kept, m)
				}
			}
			if len(kept) != len(o.Members) {
				o.Members = kept
				ops = append(ops, metaserver.KVOp{Bucket: authBucket, Key: orgKey(o.Name), Value: mustJSON(o)})
			}
		}
		err = s.kv.KVTxn(ctx, conds, ops)
		if err == nil {
			return nil
		}
		if !errors.Is(err, metaserver.ErrConflict) || attempt >= 20 {
			return kvErr(err, "removing user "+name)
		}
		if err := sleepCtx(ctx, time.Duration(attempt+1)*5*time.Millisecond); err != nil {
			return err
		}
	}
}

// orgRights is what the identity's user holds on repo as a member of the
// organisation named by repo's first component. The record is read once per
// request (a listing asks for many repositories) and afresh on the next, so
// a changed membership counts at once.
func (a *auth) orgRights(ctx context.Context, id *identity, repo string) (actionSet, error) {
	first, _, _ := strings.Cut(repo, "/")
	if !ValidUserName(first) {
		return 0, nil
	}
	o, seen := id.orgs[first]
	if !seen {
		var err error
		o, err = a.cfg.Users.GetOrg(ctx, first)
		if errors.Is(err, ErrOrgNotFound) {
			o, err = nil, nil
		}
		if err != nil {
			return 0, err
		}
		if id.orgs == nil {
			id.orgs = map[string]*Org{}
		}
		id.orgs[first] = o
	}
	if o == nil {
		return 0, nil
	}
	return o.Actions(id.name, repo), nil
}
