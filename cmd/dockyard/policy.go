package main

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dockyard/dockyard/image"
)

func init() { subcommands = append(subcommands, policyCmd) }

// defaultPolicyPath is the host's verification policy, applied by run and
// mount --image when it exists and --policy names no other. A variable so
// tests can point it elsewhere.
var defaultPolicyPath = "/etc/dockyard/policy.yaml"

// addPolicyFlag gives a command that starts images the --policy flag.
func addPolicyFlag(f *pflag.FlagSet, path *string) {
	f.StringVar(path, "policy", "", "verification policy `FILE`: which registries and repositories must be signed by which keys, "+
		"may run unsigned, or are refused (default "+defaultPolicyPath+" when it exists; see docs/signing.md)")
}

// loadPolicy reads the policy named by --policy, or else the host's default
// one if it exists. No file means no policy (nil), as before policies.
func loadPolicy(path string) (*image.Policy, error) {
	if path == "" {
		_, err := os.Stat(defaultPolicyPath)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		if err != nil {
			return nil, fmt.Errorf("policy: %w", err)
		}
		path = defaultPolicyPath
	}
	return image.LoadPolicy(path)
}

// imageGate is what an image must pass before run or mount --image read a
// byte of it: the policy (if any), then the --verify-key key (if any), which
// adds to the policy for one invocation and never replaces it.
type imageGate struct {
	policy  *image.Policy
	key     crypto.PublicKey
	keyPath string
}

// newImageGate loads the policy and the --verify-key key.
func newImageGate(policyPath, verifyKey string) (imageGate, error) {
	var g imageGate
	var err error
	if g.policy, err = loadPolicy(policyPath); err != nil {
		return g, err
	}
	if verifyKey != "" {
		if g.key, err = loadVerifyKey(verifyKey); err != nil {
			return g, err
		}
		g.keyPath = verifyKey
	}
	return g, nil
}

func (g imageGate) check(ctx context.Context, r *image.Resolver, res *image.Resolved) error {
	if g.policy != nil {
		if err := g.policy.Check(ctx, r, res); err != nil {
			return err
		}
	}
	if g.key != nil {
		if err := r.Verify(ctx, res, g.key); err != nil {
			return fmt.Errorf("--verify-key %s: %w", g.keyPath, err)
		}
	}
	return nil
}

func policyCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "Inspect the image verification policy run and mount --image apply",
	}
	cmd.AddCommand(policyCheckCmd())
	return cmd
}

func policyCheckCmd() *cobra.Command {
	var path, scheme, platform string
	cmd := &cobra.Command{
		Use:   "check [--policy FILE] REF",
		Short: "Say which policy rule applies to an image and whether the image passes it",
		Long: `check reads the policy (--policy, or ` + defaultPolicyPath + `), prints the rule that applies to REF
(the most specific scope that contains its repository, or the default) and checks REF against it as
"dockyard run" would: a signedBy rule fetches the image's signatures from its registry. It exits 0 when the
image passes and 1, with the reason, when the policy refuses it.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			scheme, err := registryScheme(cmd, scheme)
			if err != nil {
				return err
			}
			plat, err := parsePlatform(platform)
			if err != nil {
				return err
			}
			ref, err := image.ParseRef(args[0])
			if err != nil {
				return err
			}
			p, err := loadPolicy(path)
			if err != nil {
				return err
			}
			if p == nil {
				return fmt.Errorf("no policy: %s does not exist; name one with --policy FILE", defaultPolicyPath)
			}
			out := cmd.OutOrStdout()
			fmt.Fprintf(out, "policy: %s\nimage:  %s\nrule:   %s\n", p.Source, ref, p.Match(ref))
			r := &image.Resolver{Scheme: scheme, Platform: plat}
			var res *image.Resolved
			if p.Match(ref).Rule.Kind == image.SignedBy {
				if res, err = r.Resolve(cmd.Context(), ref); err != nil {
					return err
				}
			} else {
				// Accept and reject decide by name alone; the image need
				// not exist for an admin to see what its scope says.
				res = &image.Resolved{Ref: ref}
			}
			v, err := p.Evaluate(cmd.Context(), r, res)
			if err != nil {
				fmt.Fprintln(out, "result: refused")
				return err
			}
			if v.SignedBy != "" {
				fmt.Fprintf(out, "result: passes (signed by %s)\n", v.SignedBy)
			} else {
				fmt.Fprintln(out, "result: passes")
			}
			return nil
		},
	}
	addPolicyFlag(cmd.Flags(), &path)
	cmd.Flags().StringVar(&platform, "platform", "linux/amd64", "platform to pick from a multi-platform image, as run does")
	addRegistrySchemeFlag(cmd.Flags(), &scheme)
	return cmd
}
