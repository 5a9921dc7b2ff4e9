package main

import (
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// Configuration comes from three places, highest first:
//
//  1. command-line flags;
//  2. environment variables DOCKYARD_<FLAG> (upper case, '-' as '_'),
//     e.g. DOCKYARD_META=10.0.0.1:9500 or DOCKYARD_SCRUB_RATE=8MiB;
//  3. a YAML file named by --config or DOCKYARD_CONFIG: top-level keys apply
//     to every command that has a flag of that name, and a section named after
//     a command (metaserver:, chunkserver:, registry:, serve:, mount:, admin:,
//     ...) applies to that command and its subcommands and wins over the top
//     level.
//
// Keys are flag names; list flags (--label) take YAML lists, or
// comma-separated values in the environment. An unknown key is an error, so a
// typo never silently falls back to a default. docs/configuration.md has an
// example.
const configEnv = "DOCKYARD_CONFIG"

// applyConfig fills the flags of cmd that were not given on the command line
// from the environment and the config file.
func applyConfig(cmd *cobra.Command) error {
	path, _ := cmd.Flags().GetString("config")
	if path == "" {
		path = os.Getenv(configEnv)
	}
	var top, section map[string]any
	if path != "" {
		doc, err := loadConfig(path)
		if err != nil {
			return err
		}
		if err := checkConfigKeys(cmd.Root(), doc, path); err != nil {
			return err
		}
		top = doc
		if s, ok := doc[topCommand(cmd).Name()].(map[string]any); ok {
			section = s
		}
	}
	var errs []string
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "config" || f.Name == "help" {
			return
		}
		var err error
		if v, ok := os.LookupEnv("DOCKYARD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))); ok {
			err = setFlag(f, v, true)
		} else if v, ok := section[f.Name]; ok {
			err = setFlag(f, v, false)
		} else if v, ok := top[f.Name]; ok && !isSection(v) {
			err = setFlag(f, v, false)
		}
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", f.Name, err))
		}
	})
	if len(errs) > 0 {
		return fmt.Errorf("configuration: %s", strings.Join(errs, "; "))
	}
	return nil
}

func loadConfig(path string) (map[string]any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	doc := map[string]any{}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	return doc, nil
}

func isSection(v any) bool { _, ok := v.(map[string]any); return ok }

// topCommand is the child of the root that cmd is, or is under: the
// command a config section is named after.
func topCommand(cmd *cobra.Command) *cobra.Command {
	for cmd.HasParent() && cmd.Parent().HasParent() {
		cmd = cmd.Parent()
	}
	return cmd
}

// checkConfigKeys rejects keys that no command knows: a top-level key must be
// a flag of some command or a command's name, a section key a flag of that
// command or one of its subcommands.
func checkConfigKeys(root *cobra.Command, doc map[string]any, path string) error {
	flagsUnder := map[string]map[string]bool{} // top-level command -> flags in its subtree
	all := map[string]bool{}
	var walk func(c *cobra.Command, into map[string]bool)
	walk = func(c *cobra.Command, into map[string]bool) {
		add := func(f *pflag.Flag) { into[f.Name] = true; all[f.Name] = true }
		c.LocalFlags().VisitAll(add)
		c.InheritedFlags().VisitAll(add)
		for _, sub := range c.Commands() {
			walk(sub, into)
		}
	}
	for _, c := range root.Commands() {
		flagsUnder[c.Name()] = map[string]bool{}
		walk(c, flagsUnder[c.Name()])
	}
	var bad []string
	for k, v := range doc {
		if s, ok := v.(map[string]any); ok {
			flags, known := flagsUnder[k]
			if !known {
				bad = append(bad, k+" (no such command)")
				continue
			}
			for sk := range s {
				if !flags[sk] {
					bad = append(bad, k+"."+sk)
				}
			}
			continue
		}
		if !all[k] {
			bad = append(bad, k)
		}
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		return fmt.Errorf("config file %s: unknown settings: %s", path, strings.Join(bad, ", "))
	}
	return nil
}

// setFlag sets f from a YAML value or an environment string.
func setFlag(f *pflag.Flag, v any, fromEnv bool) error {
	isList := strings.HasSuffix(f.Value.Type(), "Slice") || strings.HasSuffix(f.Value.Type(), "Array")
	var items []string
	switch x := v.(type) {
	case []any:
		if !isList {
			return fmt.Errorf("takes one value, not a list")
		}
		for _, it := range x {
			items = append(items, fmt.Sprint(it))
		}
	case string:
		if isList && fromEnv {
			items = strings.Split(x, ",")
		} else {
			items = []string{x}
		}
	case nil:
		return fmt.Errorf("no value")
	default:
		items = []string{fmt.Sprint(x)}
	}
	for _, it := range items {
		if err := f.Value.Set(strings.TrimSpace(it)); err != nil {
			return err
		}
	}
	f.Changed = true
	return nil
}
