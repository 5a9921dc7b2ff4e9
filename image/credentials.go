package image

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// Credential is what a registry's user logged in with: a user name and a
// password, or an identity token (a refresh token docker stores for
// registries whose token service issues one).
type Credential struct {
	Username      string
	Password      string
	IdentityToken string
	// Source says where the credential came from, for error messages:
	// a file, a credential helper, or what the caller set. Never a secret.
	Source string
}

// Keychain finds the credential for a registry host (host[:port]). It
// reports ok=false, with no error, when it has none for that host.
type Keychain interface {
	Lookup(host string) (c Credential, ok bool, err error)
}

// Static is a keychain with one credential for every registry it is asked
// about: the credentials a user gave a command explicitly.
type Static Credential

// Lookup returns the credential for any host.
func (s Static) Lookup(string) (Credential, bool, error) { return Credential(s), true, nil }

// Chain is a keychain that asks its keychains in order and returns the
// first credential found. A keychain's error ends the search: a broken
// helper must not silently fall through to other, older credentials.
type Chain []Keychain

// Lookup asks each keychain in turn.
func (ch Chain) Lookup(host string) (Credential, bool, error) {
	for _, k := range ch {
		c, ok, err := k.Lookup(host)
		if err != nil || ok {
			return c, ok, err
		}
	}
	return Credential{}, false, nil
}

// DefaultKeychain is where docker and podman keep logins: docker's
// config.json ($DOCKER_CONFIG, else ~/.docker), then podman's auth.json
// ($REGISTRY_AUTH_FILE, else $XDG_RUNTIME_DIR/containers). Files are read
// at each lookup, so a login made meanwhile is seen.
func DefaultKeychain() Keychain {
	var ch Chain
	if dir := os.Getenv("DOCKER_CONFIG"); dir != "" {
		ch = append(ch, ConfigFile(filepath.Join(dir, "config.json")))
	} else if home, err := os.UserHomeDir(); err == nil {
		ch = append(ch, ConfigFile(filepath.Join(home, ".docker", "config.json")))
	}
	if f := os.Getenv("REGISTRY_AUTH_FILE"); f != "" {
		ch = append(ch, ConfigFile(f))
	} else if dir := os.Getenv("XDG_RUNTIME_DIR"); dir != "" {
		ch = append(ch, ConfigFile(filepath.Join(dir, "containers", "auth.json")))
	}
	return ch
}

// ConfigFile is a keychain reading one file in docker's config.json format
// (podman's auth.json is the same): auths, credHelpers and credsStore. A
// missing file holds no credentials.
type ConfigFile string

type configJSON struct {
	Auths       map[string]authEntry `json:"auths"`
	CredHelpers map[string]string    `json:"credHelpers"`
	CredsStore  string               `json:"credsStore"`
}

type authEntry struct {
	Auth          string `json:"auth"`
	Username      string `json:"username"`
	Password      string `json:"password"`
	IdentityToken string `json:"identitytoken"`
}

// Lookup finds host's credential in the file: its credential helper
// (credHelpers), else the credsStore helper, else the auths entry. An
// auths entry is also used when a helper has nothing for the host, since
// docker leaves the entries of logins made before a store was configured.
func (f ConfigFile) Lookup(host string) (Credential, bool, error) {
	b, err := os.ReadFile(string(f))
	if errors.Is(err, os.ErrNotExist) {
		return Credential{}, false, nil
	}
	if err != nil {
		return Credential{}, false, err
	}
	var cfg configJSON
	if err := json.Unmarshal(b, &cfg); err != nil {
		return Credential{}, false, fmt.Errorf("%s: not a docker config file: %v", f, err)
	}
	helper := cfg.CredsStore
	if key, ok := matchHost(keysOf(cfg.CredHelpers), host); ok {
		helper = cfg.CredHelpers[key]
	}
	if helper != "" {
		c, ok, err := helperLookup(helper, host)
		if err != nil || ok {
			return c, ok, err
		}
	}
	key, ok := matchHost(keysOf(cfg.Auths), host)
	if !ok {
		return Credential{}, false, nil
	}
	e := cfg.Auths[key]
	c := Credential{Username: e.Username, Password: e.Password, IdentityToken: e.IdentityToken, Source: string(f)}
	if e.Auth != "" {
		raw, err := base64.StdEncoding.DecodeString(e.Auth)
		if err != nil {
			return Credential{}, false, fmt.Errorf("%s: auths[%q].auth is not base64", f, key)
		}
		user, pass, found := strings.Cut(string(raw), ":")
		if !found {
			return Credential{}, false, fmt.Errorf("%s: auths[%q].auth is not USER:PASSWORD", f, key)
		}
		c.Username, c.Password = user, pass
	}
	if c.Username == "" && c.IdentityToken == "" {
		return Credential{}, false, nil // an empty entry: the login lives in a helper
	}
	return c, true, nil
}

func keysOf[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Docker Hub's names: docker stores its login under the v1 index URL.
var dockerHub = map[string]bool{"docker.io": true, "index.docker.io": true, "registry-1.docker.io": true}

// normalizeHost reduces a config key to host[:port] as docker does: keys may
// carry a scheme and a path ("https://index.docker.io/v1/"); podman's may
// carry a namespace ("quay.io/org"), matched here by host alone.
func normalizeHost(key string) string {
	if i := strings.Index(key, "://"); i >= 0 {
		key = key[i+3:]
	}
	key, _, _ = strings.Cut(key, "/")
	key = strings.ToLower(key)
	if dockerHub[key] {
		return "docker.io"
	}
	return key
}

// matchHost returns the key naming host: an exact key first, then one that
// names it with a scheme or a path.
func matchHost(keys []string, host string) (string, bool) {
	for _, k := range keys {
		if k == host {
			return k, true
		}
	}
	want := normalizeHost(host)
	for _, k := range keys {
		if normalizeHost(k) == want {
			return k, true
		}
	}
	return "", false
}

// helperLookup runs docker-credential-NAME get with the host on stdin, as
// docker does. The helper's "not found" is no credential; a helper that is
// not installed is an error naming it.
func helperLookup(name, host string) (Credential, bool, error) {
	bin := "docker-credential-" + name
	server := host
	if normalizeHost(host) == "docker.io" {
		server = "https://index.docker.io/v1/"
	}
	path, err := exec.LookPath(bin)
	if err != nil {
		return Credential{}, false, fmt.Errorf("credential helper %s for %s is not installed (or not on PATH)", bin, host)
	}
	cmd := exec.Command(path, "get")
	cmd.Stdin = strings.NewReader(server)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String() + " " + errOut.String())
		if strings.Contains(strings.ToLower(msg), "credentials not found") {
			return Credential{}, false, nil
		}
		return Credential{}, false, fmt.Errorf("credential helper %s for %s: %v: %s", bin, host, err, firstLine(msg))
	}
	var r struct{ Username, Secret string }
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		return Credential{}, false, fmt.Errorf("credential helper %s for %s: unreadable answer: %v", bin, host, err)
	}
	c := Credential{Username: r.Username, Password: r.Secret, Source: "credential helper " + bin}
	if r.Username == "<token>" { // docker's marker for an identity token
		c = Credential{IdentityToken: r.Secret, Source: c.Source}
	}
	if c.Username == "" && c.IdentityToken == "" {
		return Credential{}, false, nil
	}
	return c, true, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	if len(s) > 200 {
		s = s[:200]
	}
	return s
}
