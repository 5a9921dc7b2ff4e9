package e2e

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// loginDir writes a docker config directory whose config.json holds user's
// login to registry, as `docker login` leaves it, and returns the
// environment that points docker's and podman's clients at it alone.
func loginDir(t *testing.T, registry, user, password string) []string {
	t.Helper()
	dir := t.TempDir()
	if user != "" {
		cfg := map[string]any{"auths": map[string]any{
			registry: map[string]string{"auth": base64.StdEncoding.EncodeToString([]byte(user + ":" + password))},
		}}
		b, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return []string{"DOCKER_CONFIG=" + dir, "REGISTRY_AUTH_FILE=" + filepath.Join(dir, "podman-auth.json")}
}

// TestAuthCLI: against serve --auth, dockyard's own commands use the login
// in docker's config file, as crane and skopeo do: commit pushes into the
// user's namespace on top of an image crane pushed, sign and verify work,
// run starts the committed image; without a login, with a wrong password or
// in another user's namespace each fails with a line saying what to do.
func TestAuthCLI(t *testing.T) {
	RequireTool(t, "crane")
	s := startAuthServe(t)
	pw := authUsers(t, s)
	bin := Binary(t)
	alice := loginDir(t, s.Registry, "alice", pw["alice"])
	bob := loginDir(t, s.Registry, "bob", pw["bob"])
	wrong := loginDir(t, s.Registry, "alice", "not alice's password")
	nobody := loginDir(t, s.Registry, "", "")
	base := s.Registry + "/alice/base:v1"
	committed := s.Registry + "/alice/committed:v1"

	layer := busyboxLayer(t)
	if out, err := runWith(time.Minute, alice, "", "crane", "append", "--insecure", "-f", layer, "-t", base); err != nil {
		t.Fatalf("crane append as alice: %v\n%s", err, out)
	}

	// commit: a directory on top of alice's image, into her namespace.
	src := t.TempDir()
	if err := os.WriteFile(filepath.Join(src, "hello.txt"), []byte("committed with a login\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runWith(2*time.Minute, alice, "", bin, "commit", "--from", base, src, committed)
	if err != nil || !strings.HasPrefix(out, committed+"@sha256:") {
		t.Fatalf("commit as alice: %v\n%s", err, out)
	}
	if out, err := runWith(time.Minute, alice, "", "crane", "manifest", "--insecure", committed); err != nil || !strings.Contains(out, "layers") {
		t.Errorf("crane cannot read the committed image: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		name string
		env  []string
		ref  string
		want string
	}{
		{"no login", nobody, committed, "docker login " + s.Registry},
		{"wrong password", wrong, committed, "refused user alice (credentials from " + strings.TrimPrefix(wrong[0], "DOCKER_CONFIG=")},
		{"another user's namespace", bob, s.Registry + "/alice/bobs:v1", "user bob"},
	} {
		out, err := runWith(2*time.Minute, tc.env, "", bin, "commit", src, tc.ref)
		t.Logf("commit, %s: %s", tc.name, strings.TrimSpace(out))
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("commit, %s: %v, output %q, want %q", tc.name, err, out, tc.want)
		}
		if strings.Contains(out, pw["alice"]) || strings.Contains(out, "not alice's password") {
			t.Errorf("commit, %s: the output shows a password: %q", tc.name, out)
		}
	}

	// sign and verify.
	priv, pub := keyPair(t, t.TempDir(), "alice")
	if out, err := runWith(time.Minute, alice, "", bin, "sign", "--key", priv, committed); err != nil || !strings.Contains(out, "signed") {
		t.Fatalf("sign as alice: %v\n%s", err, out)
	}
	if out, err := runWith(time.Minute, alice, "", bin, "verify", "--key", pub, committed); err != nil || !strings.Contains(out, "verified") {
		t.Errorf("verify as alice: %v\n%s", err, out)
	}
	for _, args := range [][]string{{"sign", "--key", priv, committed}, {"verify", "--key", pub, committed}} {
		out, err := runWith(time.Minute, nobody, "", bin, args...)
		t.Logf("%s without a login: %s", args[0], strings.TrimSpace(out))
		if err == nil || !strings.Contains(out, "docker login "+s.Registry) {
			t.Errorf("%s without a login: %v, output %q", args[0], err, out)
		}
	}
	if out, err := runWith(time.Minute, bob, "", bin, "sign", "--key", priv, committed); err == nil || !strings.Contains(out, "user bob") {
		t.Errorf("sign as bob in alice's namespace: %v, output %q", err, out)
	}

	t.Run("run", func(t *testing.T) {
		requireRoot(t)
		RequireTool(t, "runc")
		needFUSE(t)
		state := t.TempDir()
		out, err := runWith(2*time.Minute, alice, "", bin, "run", "--meta", s.Meta, "--state-dir", state, "--verify-key", pub, committed,
			"--", "/bin/sh", "-c", "cat /hello.txt")
		if err != nil || !strings.Contains(out, "committed with a login") {
			t.Fatalf("run as alice: %v\n%s", err, out)
		}
		out, err = runWith(2*time.Minute, nobody, "", bin, "run", "--meta", s.Meta, "--state-dir", state, committed, "--", "/bin/true")
		t.Logf("run without a login: %s", strings.TrimSpace(out))
		if err == nil || !strings.Contains(out, "docker login "+s.Registry) {
			t.Errorf("run without a login: %v, output %q", err, out)
		}
		if mounts, _ := os.ReadFile("/proc/mounts"); strings.Contains(string(mounts), state) {
			t.Errorf("mounts left behind:\n%s", mounts)
		}
	})
}
