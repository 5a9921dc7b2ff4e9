package main

import (
	"crypto"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/dockyard/dockyard/image"
)

func init() { subcommands = append(subcommands, signCmd, verifyCmd) }

func signCmd() *cobra.Command {
	var (
		key, scheme string
		referrer    bool
	)
	cmd := &cobra.Command{
		Use:   "sign --key KEY.pem REF",
		Short: "Sign an image in a registry (cosign's key-based signature format)",
		Long: `sign signs what REF names (the index of a multi-platform image, or else its manifest) with
the private key in KEY.pem and stores the signature next to the image, as cosign does: a manifest tagged
sha256-HEX.sig in the same repository. "cosign verify --key" accepts it, and "dockyard verify" and
"dockyard run --verify-key" accept cosign's. The key is an unencrypted PEM key: ECDSA, Ed25519 or RSA,
e.g. from "openssl ecparam -genkey -name prime256v1 -noout -out key.pem" (public half:
"openssl ec -in key.pem -pubout -out key.pub"). With --referrer the signature is attached to the image
through the OCI 1.1 referrers API instead (cosign's --registry-referrers-mode oci-1-1).`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			scheme, err := registryScheme(cmd, scheme)
			if err != nil {
				return err
			}
			b, err := os.ReadFile(key)
			if err != nil {
				return err
			}
			signer, err := image.LoadPrivateKey(b)
			if err != nil {
				return fmt.Errorf("%s: %w", key, err)
			}
			ref, err := image.ParseRef(args[0])
			if err != nil {
				return err
			}
			r := &image.Resolver{Scheme: scheme}
			d, err := r.Digest(cmd.Context(), ref)
			if err != nil {
				return err
			}
			if referrer {
				if err := r.SignReferrer(cmd.Context(), ref, d, signer); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "signed %s/%s@%s (a referrer of it)\n", ref.Registry, ref.Repo, d)
				return nil
			}
			if err := r.Sign(cmd.Context(), ref, d, signer); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "signed %s/%s@%s (%s)\n", ref.Registry, ref.Repo, d, image.SignatureTag(d))
			return nil
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "PEM private key to sign with (required)")
	cmd.Flags().BoolVar(&referrer, "referrer", false, "attach the signature through the referrers API instead of the sha256-HEX.sig tag")
	addRegistrySchemeFlag(cmd.Flags(), &scheme)
	_ = cmd.MarkFlagRequired("key")
	return cmd
}

func verifyCmd() *cobra.Command {
	var key, scheme string
	cmd := &cobra.Command{
		Use:   "verify --key KEY.pub REF",
		Short: "Check that an image carries a signature made with a key (cosign's format)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			scheme, err := registryScheme(cmd, scheme)
			if err != nil {
				return err
			}
			pub, err := loadVerifyKey(key)
			if err != nil {
				return err
			}
			ref, err := image.ParseRef(args[0])
			if err != nil {
				return err
			}
			r := &image.Resolver{Scheme: scheme}
			res, err := r.Resolve(cmd.Context(), ref)
			if err != nil {
				return err
			}
			if err := r.Verify(cmd.Context(), res, pub); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "verified %s (%s)\n", res.Ref, res.TopDigest)
			return nil
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "PEM public key the signature must verify with (required)")
	addRegistrySchemeFlag(cmd.Flags(), &scheme)
	_ = cmd.MarkFlagRequired("key")
	return cmd
}

// loadVerifyKey reads a PEM public key file.
func loadVerifyKey(path string) (crypto.PublicKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pub, err := image.LoadPublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return pub, nil
}
