package image

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// pubPEM is the PKIX PEM of k's public half, as a .pub file holds it.
func pubPEM(t *testing.T, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// keyDir writes the public halves of keys as NAME.pub files in a fresh
// directory.
func keyDir(t *testing.T, keys map[string]crypto.Signer) string {
	t.Helper()
	dir := t.TempDir()
	for name, k := range keys {
		if err := os.WriteFile(filepath.Join(dir, name+".pub"), pubPEM(t, k), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func indent(b []byte, n int) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(strings.TrimSpace(string(b)), "\n", "\n"+pad)
}

func TestParsePolicy(t *testing.T) {
	alice := ecKey(t)
	dir := keyDir(t, map[string]crypto.Signer{"alice": alice, "bob": ecKey(t)})
	if err := os.WriteFile(filepath.Join(dir, "garbage.pub"), []byte("not a key"), 0o644); err != nil {
		t.Fatal(err)
	}
	inline := indent(pubPEM(t, alice), 8)

	good := []struct {
		name, doc string
		dflt      string            // the default rule, as Rule.String gives it
		scopes    map[string]string // scope -> rule
	}{
		{"default only", "default: reject\n", "reject", map[string]string{}},
		{"default accept, empty scopes", "default: accept\nscopes: {}\n", "accept", map[string]string{}},
		{"every rule kind", `
default: reject
scopes:
  registry.example.com: accept
  Registry.Example.com:5000/prod:
    signedBy: [alice.pub, bob.pub]
  localhost/team/app:
    signedBy: alice.pub
  10.0.0.1:5000: reject
`, "reject", map[string]string{
			"registry.example.com":           "accept",
			"registry.example.com:5000/prod": "signedBy alice.pub, bob.pub",
			"localhost/team/app":             "signedBy alice.pub",
			"10.0.0.1:5000":                  "reject",
		}},
		{"absolute key path", "default:\n  signedBy:\n    - " + filepath.Join(dir, "alice.pub") + "\n",
			"signedBy " + filepath.Join(dir, "alice.pub"), map[string]string{}},
		{"inline PEM", "default: reject\nscopes:\n  r.example.com:\n    signedBy:\n      - |\n" + inline + "\n",
			"reject", map[string]string{"r.example.com": "signedBy inline key (line 5)"}},
		{"JSON", `{"default": "reject", "scopes": {"r.example.com/app": {"signedBy": ["alice.pub"]}, "[::1]:5000": "accept"}}`,
			"reject", map[string]string{"r.example.com/app": "signedBy alice.pub", "[::1]:5000": "accept"}},
		{"YAML anchors", "default: &keys {signedBy: [alice.pub]}\nscopes:\n  r.example.com: *keys\n",
			"signedBy alice.pub", map[string]string{"r.example.com": "signedBy alice.pub"}},
	}
	for _, c := range good {
		p, err := ParsePolicy([]byte(c.doc), "test.yaml", dir)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if p.Default.String() != c.dflt {
			t.Errorf("%s: default %q, want %q", c.name, p.Default, c.dflt)
		}
		if len(p.Scopes) != len(c.scopes) {
			t.Errorf("%s: scopes %v, want %v", c.name, p.Scopes, c.scopes)
		}
		for s, want := range c.scopes {
			if got := p.Scopes[s]; got.String() != want {
				t.Errorf("%s: scope %s = %q, want %q", c.name, s, got, want)
			}
		}
	}

	bad := []struct{ name, doc, want string }{
		{"empty", "", "empty"},
		{"not YAML", "default: [reject\n", "policy test.yaml: yaml"},
		{"a list", "- reject\n", "line 1: want a mapping"},
		{"no default", "scopes:\n  r.example.com: accept\n", "line 1: no default rule"},
		{"unknown top field", "default: reject\nscope:\n  r.example.com: accept\n", `line 2: unknown field "scope"`},
		{"unknown rule", "default: reject\nscopes:\n  r.example.com: insecureAcceptAnything\n", `line 3: scope r.example.com: unknown rule "insecureAcceptAnything"`},
		{"signedBy without keys", "default: signedBy\n", "line 1: default: signedBy needs keys"},
		{"empty key list", "default:\n  signedBy: []\n", "line 2: default: signedBy lists no keys"},
		{"unknown rule field", "default:\n  signedBy: [alice.pub]\n  keyPath: alice.pub\n", `line 3: default: unknown field "keyPath"`},
		{"empty rule", "default: {}\n", "line 1: default: empty rule"},
		{"rule as list", "default: [accept]\n", "line 1: default: a rule is accept, reject or signedBy: [KEYS], not a list"},
		{"scopes as list", "default: reject\nscopes: [r.example.com]\n", "line 2: scopes: want a mapping"},
		{"missing key file", "default: reject\nscopes:\n  r.example.com:\n    signedBy: [alice.pub, nobody.pub]\n", "line 4: scope r.example.com: signedBy key nobody.pub: open"},
		{"bad key file", "default:\n  signedBy:\n    - garbage.pub\n", "line 3: default: signedBy key garbage.pub: public key: no PEM block"},
		{"bad inline key", "default:\n  signedBy:\n    - |\n      -----BEGIN PUBLIC KEY-----\n      AAAA\n      -----END PUBLIC KEY-----\n", "line 3: default: signedBy key inline key (line 3): public key"},
		{"key as mapping", "default:\n  signedBy:\n    - {path: alice.pub}\n", "line 3: default: a signedBy key is a PEM file's path"},
		{"empty key", "default:\n  signedBy: ['']\n", "line 2: default: a signedBy key is"},
		{"host without dot or port", "default: reject\nscopes:\n  app: accept\n", `line 3: scope "app": "app" is not a registry host`},
		{"tag in scope", "default: reject\nscopes:\n  r.example.com/app:v1: accept\n", `line 3: scope "r.example.com/app:v1": a scope is a registry, namespace or repository, not a tag`},
		{"digest in scope", "default: reject\nscopes:\n  r.example.com/app@sha256:abc: accept\n", "not a digest"},
		{"bad path segment", "default: reject\nscopes:\n  r.example.com/App: accept\n", `line 3: scope "r.example.com/App": invalid repository path segment "App"`},
		{"trailing slash", "default: reject\nscopes:\n  r.example.com/: accept\n", `invalid repository path segment ""`},
		{"bad host", "default: reject\nscopes:\n  r_x.example.com: accept\n", "is not a registry host"},
		{"duplicate after case folding", "default: reject\nscopes:\n  r.example.com: accept\n  R.example.com: reject\n", "line 4: scope r.example.com is already given on line 3"},
		{"duplicate field", "default: reject\ndefault: accept\n", "line 2: default is already given on line 1"},
		{"duplicate signedBy", "default:\n  signedBy: [alice.pub]\n  signedBy: [bob.pub]\n", "line 3: default: signedBy is given twice"},
		{"duplicate scope", "default: reject\nscopes:\n  r.example.com: accept\n  r.example.com: reject\n", "line 4: scope r.example.com is already given on line 3"},
	}
	for _, c := range bad {
		_, err := ParsePolicy([]byte(c.doc), "test.yaml", dir)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.name, err, c.want)
		}
	}

	if _, err := LoadPolicy(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("a missing policy file: %v", err)
	}
	// Key paths are relative to the policy file, not the working directory.
	pf := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pf, []byte("default:\n  signedBy: [alice.pub]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := LoadPolicy(pf); err != nil || p.Source != pf {
		t.Errorf("LoadPolicy: %v, %+v", err, p)
	}
}

func TestPolicyMatch(t *testing.T) {
	p, err := ParsePolicy([]byte(`
default: reject
scopes:
  r.example.com: accept
  r.example.com:5000: reject
  r.example.com/team: reject
  r.example.com/team/app:
    signedBy: [a.pub]
  localhost/lib/base: accept
`), "test.yaml", keyDir(t, map[string]crypto.Signer{"a": ecKey(t)}))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ ref, scope string }{
		{"r.example.com/other", "r.example.com"},           // host
		{"R.Example.Com/other", "r.example.com"},           // hosts ignore case
		{"r.example.com:5000/other", "r.example.com:5000"}, // the port is part of the host
		{"r.example.com/team/x", "r.example.com/team"},     // namespace prefix
		{"r.example.com/team/y/z", "r.example.com/team"},   // deeper under it
		{"r.example.com/teamx/app", "r.example.com"},       // a similar name is not under the namespace
		{"r.example.com/team", "r.example.com/team"},       // the namespace is also a repository
		{"r.example.com/team/app", "r.example.com/team/app"},
		{"r.example.com/team/app:v2", "r.example.com/team/app"},  // tags do not matter
		{"r.example.com/team/app2", "r.example.com/team"},        // repository exact
		{"r.example.com/team/app/sub", "r.example.com/team/app"}, // most specific wins
		{"localhost/lib/base", "localhost/lib/base"},
		{"localhost/lib/basement", ""}, // default
		{"other.example.com/team/app", ""},
		{"r.example.com:5001/team/app", ""},
		{"app", ""}, // the default registry, named by no scope
	} {
		ref, err := ParseRef(c.ref)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Match(ref); got.Scope != c.scope {
			t.Errorf("%s: matched %q (%s), want %q", c.ref, got.Scope, got, c.scope)
		}
	}
	if m := p.Match(Ref{Registry: "x.example.com", Repo: "a"}); m.Rule.Kind != Reject || !strings.HasPrefix(m.String(), "default rule (line 2): reject") {
		t.Errorf("default match %q", m)
	}
	if m := p.Match(Ref{Registry: "r.example.com", Repo: "team/app"}); m.String() != "scope r.example.com/team/app (line 7): signedBy a.pub" {
		t.Errorf("scope match %q", m)
	}
}

func TestPolicyCheck(t *testing.T) {
	ctx := context.Background()
	f, addr := newFakeRegistry(t)
	r := &Resolver{}
	alice, bob, mallory := ecKey(t), ecKey(t), ecKey(t)
	dir := keyDir(t, map[string]crypto.Signer{"alice": alice, "bob": bob})
	p, err := ParsePolicy([]byte(`
default: reject
scopes:
  `+addr+`/signed:
    signedBy: [alice.pub]
  `+addr+`/either:
    signedBy: [alice.pub, bob.pub]
  `+addr+`/open: accept
`), "test.yaml", dir)
	if err != nil {
		t.Fatal(err)
	}
	// One image per repository; sign signs its manifest.
	resolve := func(repo string) *Resolved {
		t.Helper()
		f.mu.Lock()
		if _, ok := f.manifests[repo+"@single"]; !ok {
			f.image(t, repo)
		}
		f.mu.Unlock()
		res, err := r.Resolve(ctx, Ref{Registry: addr, Repo: repo, Tag: "single"})
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	sign := func(repo string, k crypto.Signer) {
		t.Helper()
		res := resolve(repo)
		if err := r.Sign(ctx, res.Ref, res.ManifestDigest, k); err != nil {
			t.Fatal(err)
		}
	}
	sign("signed/good", alice)
	sign("signed/other", mallory)
	sign("either/bob", bob)
	sign("either/mallory", mallory)
	sign("other", alice)

	for _, c := range []struct {
		repo     string
		signedBy string // the key that passed it; "" and want "" for accept
		want     error  // the reason of a refusal
		msg      string
	}{
		{repo: "signed/good", signedBy: "alice.pub"},
		{repo: "signed/other", want: ErrNotSigned, msg: "scope " + addr + "/signed (line 4): signedBy alice.pub: no valid signature: none of its 1 signatures is by a key of the rule; signed by another key"},
		{repo: "signed/unsigned", want: ErrNotSigned, msg: "no valid signature: the image has no signatures (sha256-"},
		{repo: "either/bob", signedBy: "bob.pub"},
		{repo: "either/mallory", want: ErrNotSigned, msg: "signedBy alice.pub, bob.pub: no valid signature: none of its 1"},
		{repo: "open/unsigned"},
		{repo: "other", want: ErrRejected, msg: "default rule (line 2): reject: images from this scope are rejected"}, // signed, but the default rejects
	} {
		res := resolve(c.repo)
		v, err := p.Evaluate(ctx, r, res)
		if c.want == nil {
			if err != nil || v.SignedBy != c.signedBy {
				t.Errorf("%s: %v, passed by %q, want %q", c.repo, err, v.SignedBy, c.signedBy)
			}
			continue
		}
		var pe *PolicyError
		if !errors.As(err, &pe) || !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v, want %v with %q", c.repo, err, c.want, c.msg)
			continue
		}
		if !strings.HasPrefix(err.Error(), "policy test.yaml refuses "+res.Ref.String()+": ") {
			t.Errorf("%s: refusal %q does not start with the policy and the image", c.repo, err)
		}
		if err := p.Check(ctx, r, res); err == nil {
			t.Errorf("%s: Evaluate refused, Check passed", c.repo)
		}
	}

	// A second signature, by an allowed key, joins one by another key.
	sign("signed/other", alice)
	if err := p.Check(ctx, r, resolve("signed/other")); err != nil {
		t.Errorf("signed by mallory and alice: %v", err)
	}
	// An unreachable registry is a refusal too, not a pass.
	res := resolve("signed/good")
	res.Ref.Registry = "127.0.0.1:1"
	p.Scopes["127.0.0.1:1"] = p.Scopes[addr+"/signed"]
	if err := p.Check(ctx, r, res); err == nil || !strings.Contains(err.Error(), "reading its signatures") {
		t.Errorf("unreachable registry: %v", err)
	}
}
