package image

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// A verification policy says, per registry and repository, whether an
// image may be run: whatever it is (accept), never (reject), or only when
// one of some keys signed it (signedBy). It is the host's rule, so a user
// who forgets --verify-key still cannot run an unsigned image from a scope
// that must be signed. The file is YAML, as the config file is (JSON, being
// YAML, parses too):
//
//	default: reject
//	scopes:
//	  registry.example.com: accept
//	  registry.example.com/prod:
//	    signedBy: [keys/release.pub, keys/hotfix.pub]
//
// The most specific scope that contains an image's repository decides, by
// whole path segments; default decides for everything else. The parser is
// strict: an unknown field, rule or scope syntax, or a key that cannot be
// read stops it with the line, so a typo never loosens the policy.

// RuleKind is what a rule does.
type RuleKind string

const (
	// Accept lets any image through, signed or not.
	Accept RuleKind = "accept"
	// Reject refuses every image.
	Reject RuleKind = "reject"
	// SignedBy lets an image through when any one of the rule's keys made
	// a signature covering it (as Resolver.Verify checks one key).
	SignedBy RuleKind = "signedBy"
)

// PolicyKey is a public key of a signedBy rule.
type PolicyKey struct {
	// Name is the key's path as the file gives it, or "inline key (line
	// N)" for PEM written in the file.
	Name string
	Pub  crypto.PublicKey
}

// Rule is one rule of a policy.
type Rule struct {
	Kind RuleKind
	Keys []PolicyKey // SignedBy only
	Line int         // where the file states it
}

func (r Rule) String() string {
	if r.Kind != SignedBy {
		return string(r.Kind)
	}
	names := make([]string, len(r.Keys))
	for i, k := range r.Keys {
		names[i] = k.Name
	}
	return "signedBy " + strings.Join(names, ", ")
}

// Policy is a parsed policy file.
type Policy struct {
	Source  string // the file, for messages
	Default Rule
	// Scopes maps "host[:port]", "host[:port]/namespace" or
	// "host[:port]/repo" (host in lower case) to its rule.
	Scopes map[string]Rule
}

// Match is the rule that applies to one image, and the scope it is for.
type Match struct {
	Scope string // "" when the default rule applies
	Rule  Rule
}

func (m Match) String() string {
	if m.Scope == "" {
		return fmt.Sprintf("default rule (line %d): %s", m.Rule.Line, m.Rule)
	}
	return fmt.Sprintf("scope %s (line %d): %s", m.Scope, m.Rule.Line, m.Rule)
}

// Match returns the rule for ref: that of the longest scope equal to ref's
// registry, or a whole-segment prefix of its registry/repository, or else
// the default rule.
func (p *Policy) Match(ref Ref) Match {
	full := strings.ToLower(ref.Registry) + "/" + ref.Repo
	best := ""
	for s := range p.Scopes {
		// All candidates are prefixes of full, so the longest is the
		// most specific.
		if (full == s || strings.HasPrefix(full, s+"/")) && len(s) > len(best) {
			best = s
		}
	}
	if best == "" {
		return Match{Rule: p.Default}
	}
	return Match{Scope: best, Rule: p.Scopes[best]}
}

// ErrRejected is the reason a reject rule gives.
var ErrRejected = errors.New("images from this scope are rejected")

// PolicyError is a refusal: which rule refused which image, and why (Err
// is ErrRejected, wraps ErrNotSigned, or is a failure to read the
// signatures).
type PolicyError struct {
	Source string
	Ref    Ref
	Match  Match
	Err    error
}

func (e *PolicyError) Error() string {
	return fmt.Sprintf("policy %s refuses %s: %s: %v", e.Source, e.Ref, e.Match, e.Err)
}

func (e *PolicyError) Unwrap() error { return e.Err }

// Verdict is what Evaluate found: the rule that applied and, for a signedBy
// rule, the key whose signature let the image through.
type Verdict struct {
	Match    Match
	SignedBy string
}

// Check returns nil when the policy lets the resolved image run, and a
// *PolicyError otherwise. It reads signatures only, never the image's
// layers, so it belongs before anything is mounted.
func (p *Policy) Check(ctx context.Context, r *Resolver, res *Resolved) error {
	_, err := p.Evaluate(ctx, r, res)
	return err
}

// Evaluate is Check that also says which rule decided and, for signedBy,
// which key verified.
func (p *Policy) Evaluate(ctx context.Context, r *Resolver, res *Resolved) (Verdict, error) {
	m := p.Match(res.Ref)
	v := Verdict{Match: m}
	refuse := func(err error) (Verdict, error) {
		return v, &PolicyError{Source: p.Source, Ref: res.Ref, Match: m, Err: err}
	}
	switch m.Rule.Kind {
	case Accept:
		return v, nil
	case SignedBy:
		pubs := make([]crypto.PublicKey, len(m.Rule.Keys))
		for i, k := range m.Rule.Keys {
			pubs[i] = k.Pub
		}
		key, checked, lastBad, err := r.signedBy(ctx, res, pubs)
		switch {
		case err != nil:
			return refuse(fmt.Errorf("reading its signatures: %w", err))
		case key >= 0:
			v.SignedBy = m.Rule.Keys[key].Name
			return v, nil
		case checked == 0:
			return refuse(fmt.Errorf("%w: the image has no signatures (%s)", ErrNotSigned, SignatureTag(res.TopDigest)))
		}
		return refuse(fmt.Errorf("%w: none of its %d signatures is by a key of the rule; signed by another key (last: %v)", ErrNotSigned, checked, lastBad))
	}
	// Reject, and anything a hand-built Policy left empty: refusing is
	// the safe reading of a rule that says nothing.
	return refuse(ErrRejected)
}

// LoadPolicy reads and parses a policy file. Relative key paths in it are
// relative to the file's directory.
func LoadPolicy(path string) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	return ParsePolicy(b, path, filepath.Dir(path))
}

// ParsePolicy parses a policy document; source names it in errors, and
// relative key paths are taken under dir.
func ParsePolicy(b []byte, source, dir string) (*Policy, error) {
	pp := policyParser{source: source, dir: dir}
	return pp.parse(b)
}

type policyParser struct{ source, dir string }

func (pp *policyParser) errorf(n *yaml.Node, format string, args ...any) error {
	line := 0
	if n != nil {
		line = n.Line
	}
	return fmt.Errorf("policy %s: line %d: %s", pp.source, line, fmt.Sprintf(format, args...))
}

func (pp *policyParser) parse(b []byte) (*Policy, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("policy %s: %w", pp.source, err)
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, fmt.Errorf("policy %s: empty; it needs at least \"default: reject\" (or accept, or signedBy)", pp.source)
	}
	root := deref(doc.Content[0])
	if root.Kind != yaml.MappingNode {
		return nil, pp.errorf(root, "want a mapping with default: and scopes:")
	}
	p := &Policy{Source: pp.source, Scopes: map[string]Rule{}}
	seen := map[string]int{} // field -> line
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], deref(root.Content[i+1])
		// The node tree keeps both copies of a repeated key; decoding
		// into a map would have refused, and so do we.
		if line, dup := seen[k.Value]; dup {
			return nil, pp.errorf(k, "%s is already given on line %d", k.Value, line)
		}
		seen[k.Value] = k.Line
		switch k.Value {
		case "default":
			r, err := pp.rule(v, "default")
			if err != nil {
				return nil, err
			}
			p.Default = r
		case "scopes":
			if v.Kind != yaml.MappingNode {
				return nil, pp.errorf(v, "scopes: want a mapping of scope to rule")
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				sk, sv := v.Content[j], deref(v.Content[j+1])
				scope, err := parseScope(sk.Value)
				if err != nil {
					return nil, pp.errorf(sk, "%v", err)
				}
				if prev, dup := p.Scopes[scope]; dup {
					return nil, pp.errorf(sk, "scope %s is already given on line %d", scope, prev.Line)
				}
				r, err := pp.rule(sv, "scope "+scope)
				if err != nil {
					return nil, err
				}
				r.Line = sk.Line
				p.Scopes[scope] = r
			}
		default:
			return nil, pp.errorf(k, "unknown field %q (want default or scopes)", k.Value)
		}
	}
	if _, ok := seen["default"]; !ok {
		return nil, pp.errorf(root, "no default rule; add \"default: reject\" (or accept, or signedBy)")
	}
	return p, nil
}

// rule parses "accept", "reject" or "{signedBy: KEY | [KEYS]}".
func (pp *policyParser) rule(n *yaml.Node, what string) (Rule, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		switch RuleKind(n.Value) {
		case Accept, Reject:
			return Rule{Kind: RuleKind(n.Value), Line: n.Line}, nil
		case SignedBy:
			return Rule{}, pp.errorf(n, "%s: signedBy needs keys: \"signedBy: [KEY.pub, ...]\"", what)
		}
		return Rule{}, pp.errorf(n, "%s: unknown rule %q (want accept, reject or signedBy: [KEYS])", what, n.Value)
	case yaml.MappingNode:
		r := Rule{Line: n.Line}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], deref(n.Content[i+1])
			if k.Value != string(SignedBy) {
				return Rule{}, pp.errorf(k, "%s: unknown field %q (a rule is accept, reject or signedBy: [KEYS])", what, k.Value)
			}
			if r.Kind != "" {
				return Rule{}, pp.errorf(k, "%s: signedBy is given twice; list every key under one", what)
			}
			keys, err := pp.keys(v, what)
			if err != nil {
				return Rule{}, err
			}
			r.Kind, r.Keys = SignedBy, keys
		}
		if r.Kind == "" {
			return Rule{}, pp.errorf(n, "%s: empty rule (want accept, reject or signedBy: [KEYS])", what)
		}
		return r, nil
	}
	return Rule{}, pp.errorf(n, "%s: a rule is accept, reject or signedBy: [KEYS], not a %s", what, kindName(n.Kind))
}

func (pp *policyParser) keys(n *yaml.Node, what string) ([]PolicyKey, error) {
	items := []*yaml.Node{n}
	if n.Kind == yaml.SequenceNode {
		items = n.Content
	}
	if len(items) == 0 {
		return nil, pp.errorf(n, "%s: signedBy lists no keys", what)
	}
	var out []PolicyKey
	for _, it := range items {
		it = deref(it)
		if it.Kind != yaml.ScalarNode || strings.TrimSpace(it.Value) == "" {
			return nil, pp.errorf(it, "%s: a signedBy key is a PEM file's path or inline PEM", what)
		}
		k, err := pp.key(it)
		if err != nil {
			return nil, pp.errorf(it, "%s: signedBy key %s", what, err)
		}
		out = append(out, k)
	}
	return out, nil
}

func (pp *policyParser) key(n *yaml.Node) (PolicyKey, error) {
	v := strings.TrimSpace(n.Value)
	if strings.HasPrefix(v, "-----BEGIN") {
		name := fmt.Sprintf("inline key (line %d)", n.Line)
		pub, err := LoadPublicKey([]byte(v))
		if err != nil {
			return PolicyKey{}, fmt.Errorf("%s: %w", name, err)
		}
		return PolicyKey{Name: name, Pub: pub}, nil
	}
	path := v
	if !filepath.IsAbs(path) {
		path = filepath.Join(pp.dir, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return PolicyKey{}, fmt.Errorf("%s: %w", v, err)
	}
	pub, err := LoadPublicKey(b)
	if err != nil {
		return PolicyKey{}, fmt.Errorf("%s: %w", v, err)
	}
	return PolicyKey{Name: v, Pub: pub}, nil
}

var hostRE = regexp.MustCompile(`^(\[[0-9a-fA-F:]+\]|[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?)(:[0-9]+)?$`)

// parseScope checks a scope, "host[:port][/namespace.../repo]", and
// returns it with the host in lower case. The first segment is always the
// host, so it must look like one, as ParseRef would take it: a scope "app"
// would otherwise name a registry called app and never match.
func parseScope(s string) (string, error) {
	if s == "" {
		return "", errors.New("empty scope")
	}
	if strings.Contains(s, "@") {
		return "", fmt.Errorf("scope %q: a scope is a registry, namespace or repository, not a digest", s)
	}
	host, path, hasPath := strings.Cut(s, "/")
	if !hostRE.MatchString(host) || !(strings.ContainsAny(host, ".:") || host == "localhost") {
		return "", fmt.Errorf("scope %q: %q is not a registry host (it needs a '.' or a port, or is localhost; a repository on the default registry is %s/NAME)", s, host, DefaultRegistry)
	}
	out := strings.ToLower(host)
	if !hasPath {
		return out, nil
	}
	for _, c := range strings.Split(path, "/") {
		if strings.Contains(c, ":") {
			return "", fmt.Errorf("scope %q: a scope is a registry, namespace or repository, not a tag", s)
		}
		if !componentRE.MatchString(c) {
			return "", fmt.Errorf("scope %q: invalid repository path segment %q", s, c)
		}
	}
	return out + "/" + path, nil
}

func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func kindName(k yaml.Kind) string {
	switch k {
	case yaml.SequenceNode:
		return "list"
	case yaml.MappingNode:
		return "mapping"
	}
	return "scalar"
}
