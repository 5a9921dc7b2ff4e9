package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// policyRoot is a root like main's (config applied before each command)
// with only the policy command.
func policyRoot() *cobra.Command {
	root := &cobra.Command{Use: "dockyard", SilenceUsage: true, SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return applyConfig(cmd) }}
	root.PersistentFlags().String("config", "", "")
	root.AddCommand(policyCmd())
	return root
}

func runPolicy(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := policyRoot()
	var out bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&out)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), err
}

func TestLoadPolicyDefault(t *testing.T) {
	dir := t.TempDir()
	old := defaultPolicyPath
	defaultPolicyPath = filepath.Join(dir, "policy.yaml")
	t.Cleanup(func() { defaultPolicyPath = old })

	// No file: no policy, so run and mount behave as they did before.
	if p, err := loadPolicy(""); p != nil || err != nil {
		t.Fatalf("no default file: %v, %v", p, err)
	}
	if err := os.WriteFile(defaultPolicyPath, []byte("default: reject\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := loadPolicy(""); err != nil || p == nil || p.Source != defaultPolicyPath {
		t.Fatalf("default file: %+v, %v", p, err)
	}
	// A broken default file stops the command rather than being skipped.
	if err := os.WriteFile(defaultPolicyPath, []byte("default: maybe\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := loadPolicy(""); err == nil || !strings.Contains(err.Error(), `unknown rule "maybe"`) {
		t.Fatalf("broken default file: %v", err)
	}
	// --policy names a file that must exist.
	if _, err := loadPolicy(filepath.Join(dir, "nope.yaml")); err == nil || !strings.Contains(err.Error(), "nope.yaml") {
		t.Fatalf("missing --policy file: %v", err)
	}
	os.Remove(defaultPolicyPath)
	if _, err := newImageGate("", filepath.Join(dir, "nope.pub")); err == nil || !strings.Contains(err.Error(), "nope.pub") {
		t.Fatalf("missing --verify-key file: %v", err)
	}
}

// TestPolicyCheckByName: accept and reject rules decide by the image's name,
// so policy check answers without a registry; the policy comes from
// --policy, DOCKYARD_POLICY or the config file.
func TestPolicyCheckByName(t *testing.T) {
	dir := t.TempDir()
	old := defaultPolicyPath
	defaultPolicyPath = filepath.Join(dir, "absent.yaml")
	t.Cleanup(func() { defaultPolicyPath = old })
	pf := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(pf, []byte("default: reject\nscopes:\n  r.example.com/open: accept\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	out, err := runPolicy(t, "policy", "check", "--policy", pf, "r.example.com/open/app:v1")
	if err != nil || !strings.Contains(out, "rule:   scope r.example.com/open (line 3): accept") || !strings.Contains(out, "result: passes") {
		t.Errorf("accepted image: %v\n%s", err, out)
	}
	out, err = runPolicy(t, "policy", "check", "--policy", pf, "r.example.com/openly/app")
	if err == nil || !strings.Contains(out, "rule:   default rule (line 1): reject") || !strings.Contains(out, "result: refused") ||
		!strings.Contains(err.Error(), "images from this scope are rejected") {
		t.Errorf("rejected image: %v\n%s", err, out)
	}

	t.Setenv("DOCKYARD_POLICY", pf)
	if out, err := runPolicy(t, "policy", "check", "r.example.com/open/app"); err != nil || !strings.Contains(out, "policy: "+pf) {
		t.Errorf("DOCKYARD_POLICY: %v\n%s", err, out)
	}
	os.Unsetenv("DOCKYARD_POLICY")
	cfg := filepath.Join(dir, "dockyard.yaml")
	if err := os.WriteFile(cfg, []byte("policy: "+pf+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := runPolicy(t, "--config", cfg, "policy", "check", "r.example.com/open/app"); err != nil || !strings.Contains(out, "policy: "+pf) {
		t.Errorf("policy: in the config file: %v\n%s", err, out)
	}

	if _, err := runPolicy(t, "policy", "check", "r.example.com/open/app"); err == nil || !strings.Contains(err.Error(), "no policy") {
		t.Errorf("no policy anywhere: %v", err)
	}
}
