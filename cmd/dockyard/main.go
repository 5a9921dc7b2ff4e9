// Command dockyard is the one Dockyard binary: every server role, the file-system
// client and the admin tools. It parses flags and config and calls library code;
// each subcommand lives in a file of its own.
package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "dockyard",
		Short:         "Dockyard: a distributed file system and container image registry in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(versionCmd())
	for _, add := range subcommands {
		root.AddCommand(add())
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "dockyard:", err)
		os.Exit(1)
	}
}

// subcommands is filled by the init functions of the per-command files, so
// adding a command touches only its own file.
var subcommands []func() *cobra.Command
