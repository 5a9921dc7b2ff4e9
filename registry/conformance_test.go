package registry

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestConformance runs the OCI distribution conformance suite against the
// registry over in-memory records with local blobs, and over an in-process
// Dockyard cluster. The suite is a separate binary (built from
// github.com/opencontainers/distribution-spec/conformance); its path comes
// from DOCKYARD_CONFORMANCE_BIN.
func TestConformance(t *testing.T) {
	bin := os.Getenv("DOCKYARD_CONFORMANCE_BIN")
	if bin == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal("DOCKYARD_CONFORMANCE_BIN is not set")
		}
		t.Skip("DOCKYARD_CONFORMANCE_BIN is not set; build the OCI conformance suite to run this test")
	}
	forEachStore(t, Config{}, func(t *testing.T, env *testEnv) { runConformance(t, bin, env) })
}

func runConformance(t *testing.T, bin string, env *testEnv) {
	results := t.TempDir()
	if d := os.Getenv("DOCKYARD_CONFORMANCE_RESULTS"); d != "" {
		results = filepath.Join(d, filepath.Base(t.Name()))
		if err := os.MkdirAll(results, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin)
	cmd.Dir = results
	cmd.Env = append(os.Environ(),
		"OCI_REGISTRY="+strings.TrimPrefix(env.srv.URL, "http://"),
		"OCI_TLS=disabled",
		"OCI_REPO1=conformance/repo1",
		"OCI_REPO2=conformance/repo2",
		"OCI_VERSION="+envOr("DOCKYARD_CONFORMANCE_VERSION", "1.1"),
		"OCI_RESULTS_DIR="+results,
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("conformance suite failed: %v\n%s", err, tail(string(out), 20000))
		if b, rerr := os.ReadFile(filepath.Join(results, "results.yaml")); rerr == nil {
			t.Logf("results.yaml:\n%s", tail(string(b), 20000))
		}
		return
	}
	t.Logf("%s", tail(string(out), 2000))
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
