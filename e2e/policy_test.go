package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestVerificationPolicy: a policy file makes a repository namespace require
// alice's signature, lets another run unsigned and rejects the rest. policy
// check reports the rule and the verdict; mount --image and run refuse an
// unsigned image in the signed namespace before mounting anything, without
// --verify-key; an image in the accept scope runs unsigned; --verify-key
// adds to the policy rather than replacing it.
func TestVerificationPolicy(t *testing.T) {
	RequireTool(t, "crane")
	c := SharedCluster(t)
	bin := Binary(t)
	ns := uniqueRepo("policy")
	prod, sandbox := c.Registry+"/"+ns+"/prod", c.Registry+"/"+ns+"/sandbox"
	signed, unsigned, open, elsewhere := prod+"/app:v1", prod+"/unsigned:v1", sandbox+"/app:v1", c.Registry+"/"+ns+"-other/app:v1"
	layer := busyboxLayer(t)
	for _, ref := range []string{signed, unsigned, open, elsewhere} {
		Run(t, time.Minute, "crane", "append", "--insecure", "-f", layer, "-t", ref)
	}
	dir := t.TempDir()
	priv, _ := keyPair(t, dir, "alice")
	_, malloryPub := keyPair(t, dir, "mallory")
	Run(t, time.Minute, bin, "sign", "--key", priv, signed)

	policy := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policy, []byte(`# relative key paths are under this file's directory
default: reject
scopes:
  `+prod+`:
    signedBy: [alice.pub]
  `+sandbox+`: accept
`), 0o644); err != nil {
		t.Fatal(err)
	}
	prodRule := "scope " + prod + " (line 4): signedBy alice.pub"

	out := Run(t, time.Minute, bin, "policy", "check", "--policy", policy, signed)
	if !strings.Contains(out, "rule:   "+prodRule) || !strings.Contains(out, "result: passes (signed by alice.pub)") {
		t.Errorf("policy check of the signed image:\n%s", out)
	}
	out, err := RunErr(time.Minute, bin, "policy", "check", "--policy", policy, unsigned)
	if err == nil || !strings.Contains(out, "result: refused") || !strings.Contains(out, prodRule+": no valid signature: the image has no signatures") {
		t.Errorf("policy check of the unsigned image: %v\n%s", err, out)
	}
	if out := Run(t, time.Minute, bin, "policy", "check", "--policy", policy, open); !strings.Contains(out, "scope "+sandbox+" (line 6): accept") || !strings.Contains(out, "result: passes") {
		t.Errorf("policy check in the accept scope:\n%s", out)
	}
	out, err = RunErr(time.Minute, bin, "policy", "check", "--policy", policy, elsewhere)
	if err == nil || !strings.Contains(out, "default rule (line 2): reject: images from this scope are rejected") {
		t.Errorf("policy check outside every scope: %v\n%s", err, out)
	}

	// mount --image refuses on the policy alone, named by DOCKYARD_POLICY,
	// and mounts nothing.
	mnt := t.TempDir()
	cmd := exec.Command(bin, "mount", "--meta", c.Meta, "--image", unsigned, mnt)
	cmd.Env = append(os.Environ(), "DOCKYARD_POLICY="+policy)
	b, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(b), "dockyard: policy "+policy+" refuses "+unsigned+": "+prodRule) ||
		strings.Count(strings.TrimSpace(string(b)), "\n") != 0 {
		t.Errorf("mount --image of the unsigned image: %v\n%s", err, b)
	}
	if mounts, _ := os.ReadFile("/proc/mounts"); strings.Contains(string(mounts), mnt) {
		t.Errorf("a refused image was mounted on %s", mnt)
	}

	t.Run("run", func(t *testing.T) {
		if os.Geteuid() != 0 {
			Missing(t, "dockyard run needs root (FUSE mount, overlay, runc)")
		}
		RequireTool(t, "runc")
		state := t.TempDir()
		run := func(args ...string) (string, error) {
			return RunErr(2*time.Minute, bin, append([]string{"run", "--meta", c.Meta, "--state-dir", state, "--policy", policy}, args...)...)
		}
		if out, err := run(signed, "--", "/bin/sh", "-c", "echo trusted"); err != nil || !strings.Contains(out, "trusted") {
			t.Errorf("run of the signed image: %v\n%s", err, out)
		}
		out, err := run(unsigned, "--", "/bin/sh", "-c", "echo started")
		if err == nil || strings.Contains(out, "started") || !strings.Contains(out, prodRule+": no valid signature: the image has no signatures") {
			t.Errorf("run of the unsigned image: %v\n%s", err, out)
		}
		if out, err := run(open, "--", "/bin/sh", "-c", "echo unsigned but allowed"); err != nil || !strings.Contains(out, "unsigned but allowed") {
			t.Errorf("run in the accept scope: %v\n%s", err, out)
		}
		// --verify-key is one more requirement: alice's signature passes
		// the policy, but not the key given on the line.
		out, err = run("--verify-key", malloryPub, signed, "--", "/bin/sh", "-c", "echo started")
		if err == nil || strings.Contains(out, "started") || !strings.Contains(out, "--verify-key "+malloryPub) {
			t.Errorf("run with --verify-key of another key: %v\n%s", err, out)
		}
		if entries, _ := os.ReadDir(state); len(entries) != 0 {
			t.Errorf("state dir not cleaned: %v", entries)
		}
	})
}
