package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

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
