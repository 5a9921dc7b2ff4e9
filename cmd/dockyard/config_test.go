package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// testRoot builds a root like main's with one command carrying a few flags,
// and records the values the command saw.
func testRoot(seen map[string]any) *cobra.Command {
	root := &cobra.Command{Use: "dockyard", SilenceUsage: true, SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return applyConfig(cmd) }}
	root.PersistentFlags().String("config", "", "")
	var meta, listen string
	var labels []string
	var fsync bool
	cs := &cobra.Command{Use: "chunkserver", RunE: func(*cobra.Command, []string) error {
		seen["meta"], seen["listen"], seen["label"], seen["fsync"] = meta, listen, labels, fsync
		return nil
	}}
	cs.Flags().StringVar(&meta, "meta", "default-meta", "")
	cs.Flags().StringVar(&listen, "listen", "default-listen", "")
	cs.Flags().StringArrayVar(&labels, "label", nil, "")
	cs.Flags().BoolVar(&fsync, "fsync", true, "")
	other := &cobra.Command{Use: "registry", RunE: func(*cobra.Command, []string) error { return nil }}
	other.Flags().String("listen", "", "")
	var asJSON bool
	admin := &cobra.Command{Use: "admin"}
	admin.PersistentFlags().BoolVar(&asJSON, "json", false, "")
	admin.AddCommand(&cobra.Command{Use: "ls", RunE: func(*cobra.Command, []string) error { seen["json"] = asJSON; return nil }})
	root.AddCommand(cs, other, admin)
	return root
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dockyard.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigPrecedence(t *testing.T) {
	cfg := writeConfig(t, `
meta: top-meta
listen: top-listen
chunkserver:
  listen: section-listen
  label: [zone=a, rack=7]
  fsync: false
registry:
  listen: 0.0.0.0:5000
`)
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		want map[string]any
	}{
		{"file only", []string{"chunkserver", "--config", cfg}, nil,
			map[string]any{"meta": "top-meta", "listen": "section-listen", "label": []string{"zone=a", "rack=7"}, "fsync": false}},
		{"env over file", []string{"chunkserver", "--config", cfg}, map[string]string{"DOCKYARD_META": "env-meta", "DOCKYARD_LABEL": "zone=b,rack=1"},
			map[string]any{"meta": "env-meta", "listen": "section-listen", "label": []string{"zone=b", "rack=1"}, "fsync": false}},
		{"flag over env", []string{"chunkserver", "--config", cfg, "--meta", "flag-meta", "--fsync=true"}, map[string]string{"DOCKYARD_META": "env-meta"},
			map[string]any{"meta": "flag-meta", "listen": "section-listen", "label": []string{"zone=a", "rack=7"}, "fsync": true}},
		{"config from the environment", []string{"chunkserver"}, map[string]string{configEnv: cfg},
			map[string]any{"meta": "top-meta", "listen": "section-listen", "label": []string{"zone=a", "rack=7"}, "fsync": false}},
		{"no config", []string{"chunkserver"}, nil,
			map[string]any{"meta": "default-meta", "listen": "default-listen", "label": []string(nil), "fsync": true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			seen := map[string]any{}
			root := testRoot(seen)
			root.SetArgs(tc.args)
			if err := root.Execute(); err != nil {
				t.Fatal(err)
			}
			for k, want := range tc.want {
				if got := seen[k]; !equalAny(got, want) {
					t.Errorf("%s = %#v, want %#v", k, got, want)
				}
			}
		})
	}
}

func equalAny(a, b any) bool {
	as, aok := a.([]string)
	bs, bok := b.([]string)
	if aok && bok {
		return strings.Join(as, "\x00") == strings.Join(bs, "\x00") && (as == nil) == (bs == nil)
	}
	return a == b
}

func TestConfigSectionCoversSubcommands(t *testing.T) {
	seen := map[string]any{}
	root := testRoot(seen)
	root.SetArgs([]string{"admin", "ls", "--config", writeConfig(t, "admin:\n  json: true\n")})
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if seen["json"] != true {
		t.Fatalf("admin section did not reach admin ls: %v", seen)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ body, env, want string }{
		{body: "chunkserver:\n  lisen: x\n", want: "unknown settings: chunkserver.lisen"},
		{body: "metta: x\n", want: "unknown settings: metta"},
		{body: "nosuchcommand:\n  listen: x\n", want: "nosuchcommand (no such command)"},
		{body: "chunkserver:\n  meta: [a, b]\n", want: "meta: takes one value, not a list"},
		{body: "chunkserver: [\n", want: "config file"},
		{body: "", env: "DOCKYARD_FSYNC=maybe", want: "fsync"},
	} {
		if tc.env != "" {
			k, v, _ := strings.Cut(tc.env, "=")
			t.Setenv(k, v)
		}
		root := testRoot(map[string]any{})
		root.SetArgs([]string{"chunkserver", "--config", writeConfig(t, tc.body)})
		err := root.Execute()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %q", tc.body, err, tc.want)
		}
	}
	root := testRoot(map[string]any{})
	root.SetArgs([]string{"chunkserver", "--config", "/nonexistent/dockyard.yaml"})
	if err := root.Execute(); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}
