package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestOrgCrane: an organisation acme made with `dockyard admin org`, where
// alice may push and bob pull; alice pushes acme/app with crane, bob pulls
// it and may not push, carol (no member) may not pull; then memberships and
// the organisation go, and the rights with them.
func TestOrgCrane(t *testing.T) {
	RequireTool(t, "crane")
	c := startAuthServe(t)
	pw := authUsers(t, c)
	bin := Binary(t)
	pw["carol"] = "carol's password"
	if out, err := runWith(time.Minute, nil, pw["carol"]+"\n", bin, "admin", "--meta", c.Meta, "user", "add", "carol", "--password-stdin"); err != nil {
		t.Fatalf("user add carol: %v\n%s", err, out)
	}
	admin := func(args ...string) (string, error) {
		return runWith(time.Minute, nil, "", bin, append([]string{"admin", "--meta", c.Meta}, args...)...)
	}
	mustAdmin := func(args ...string) string {
		t.Helper()
		out, err := admin(args...)
		if err != nil {
			t.Fatalf("dockyard admin %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	mustRefuse := func(want string, args ...string) {
		t.Helper()
		out, err := admin(args...)
		if err == nil || !strings.Contains(out, want) {
			t.Errorf("dockyard admin %s: %v, want a refusal saying %q:\n%s", strings.Join(args, " "), err, want, out)
		}
	}

	mustAdmin("org", "add", "acme")
	mustRefuse("already exists", "org", "add", "acme")
	mustRefuse("a user named alice exists", "org", "add", "alice")
	if out, err := runWith(time.Minute, nil, "a password\n", bin, "admin", "--meta", c.Meta, "user", "add", "acme", "--password-stdin"); err == nil ||
		!strings.Contains(out, "an organisation named acme exists") {
		t.Errorf("user add acme beside the organisation: %v\n%s", err, out)
	}
	mustAdmin("org", "member", "add", "acme", "alice", "push")
	mustAdmin("org", "member", "add", "acme", "bob", "pull")
	mustRefuse("no such user", "org", "member", "add", "acme", "mallory", "pull")
	mustRefuse("pull or push", "org", "member", "add", "acme", "carol", "admin")
	mustRefuse("no such organisation", "org", "member", "add", "nope", "carol", "pull")
	if out := mustAdmin("org", "ls"); !strings.Contains(out, "acme") || !strings.Contains(out, "alice:push,bob:pull") {
		t.Errorf("org ls:\n%s", out)
	}

	reg := c.Registry
	id := strings.TrimPrefix(uniqueRepo("org"), "e2e/org-")
	repo := reg + "/acme/app-" + id
	layer := filepath.Join(t.TempDir(), "layer.tar")
	if err := os.WriteFile(layer, buildTar(t, []entry{file("hello.txt", "pushed into acme\n")}), 0o644); err != nil {
		t.Fatal(err)
	}
	// crane as each user, each with a docker config of its own.
	crane := map[string]func(args ...string) (string, error){}
	for _, u := range []string{"alice", "bob", "carol"} {
		env := []string{"DOCKER_CONFIG=" + t.TempDir()}
		if out, err := runWith(time.Minute, env, pw[u]+"\n", "crane", "auth", "login", reg, "-u", u, "--password-stdin"); err != nil {
			t.Fatalf("crane auth login as %s: %v\n%s", u, err, out)
		}
		crane[u] = func(args ...string) (string, error) {
			return runWith(2*time.Minute, env, "", "crane", append(args, "--insecure")...)
		}
	}
	if out, err := crane["alice"]("append", "--oci-empty-base", "-f", layer, "-t", repo+":v1"); err != nil {
		t.Fatalf("crane append into acme/ as a push member: %v\n%s\nserver log:\n%s", err, out, c.Log())
	}
	if out, err := crane["bob"]("ls", repo); err != nil || strings.TrimSpace(out) != "v1" {
		t.Errorf("crane ls as a pull member: %v\n%s", err, out)
	}
	if out, err := crane["bob"]("append", "--oci-empty-base", "-f", layer, "-t", repo+":v2"); err == nil ||
		!strings.Contains(out, "DENIED") && !strings.Contains(out, "403 Forbidden") {
		t.Errorf("crane append into acme/ as a pull member: %v\n%s", err, out)
	}
	if out, err := crane["carol"]("ls", repo); err == nil || !strings.Contains(out, "DENIED") {
		t.Errorf("crane ls of acme/ as a non-member: %v\n%s", err, out)
	}
	if out, err := crane["carol"]("catalog", reg); err != nil || strings.Contains(out, "acme/") {
		t.Errorf("catalog of a non-member shows acme/: %v\n%s", err, out)
	}

	// A member taken out loses the pull on the next request.
	mustAdmin("org", "member", "rm", "acme", "bob")
	if out, err := crane["bob"]("ls", repo); err == nil || !strings.Contains(out, "DENIED") {
		t.Errorf("crane ls after org member rm: %v\n%s", err, out)
	}
	mustRefuse("--force", "org", "rm", "acme")
	// Removing a user removes its memberships.
	mustAdmin("user", "rm", "alice")
	var orgs []struct {
		Name    string
		Members []struct{ User, Role string }
	}
	if err := json.Unmarshal([]byte(mustAdmin("org", "ls", "--json")), &orgs); err != nil || len(orgs) != 1 || len(orgs[0].Members) != 0 {
		t.Errorf("org ls --json after user rm alice: %+v, %v", orgs, err)
	}
	mustAdmin("org", "member", "add", "acme", "bob", "pull")
	mustAdmin("org", "rm", "acme", "--force")
	if out, err := crane["bob"]("ls", repo); err == nil || !strings.Contains(out, "DENIED") {
		t.Errorf("crane ls after org rm: %v\n%s", err, out)
	}
	if out := mustAdmin("org", "ls"); strings.Contains(out, "acme") {
		t.Errorf("org ls after org rm:\n%s", out)
	}
}
