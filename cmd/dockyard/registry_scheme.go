package main

import (
	"fmt"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// addRegistrySchemeFlag gives a command that talks to registries its
// --registry-scheme flag; registryScheme reads it.
func addRegistrySchemeFlag(f *pflag.FlagSet, scheme *string) {
	f.StringVar(scheme, "registry-scheme", "http", "scheme to reach registries with: http or https (http set explicitly "+
		"also lets logins go unencrypted to a registry that is not on loopback)")
}

// registryScheme is the image.Resolver Scheme for a command's
// --registry-scheme: empty when the user left the flag alone (plain HTTP,
// with credentials sent only to loopback registries), else what they chose.
// Choosing "http" explicitly is what lets credentials cross a network in
// clear, to a registry the user named.
func registryScheme(cmd *cobra.Command, scheme string) (string, error) {
	if scheme != "http" && scheme != "https" {
		return "", fmt.Errorf("--registry-scheme %q: want http or https", scheme)
	}
	if !cmd.Flags().Changed("registry-scheme") {
		return "", nil
	}
	return scheme, nil
}
