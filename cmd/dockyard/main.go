// Command dockyard is the one Dockyard binary: every server role, the file-system
// client and the admin tools. It parses flags and config and calls library code;
// each subcommand lives in a file of its own.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/dockyard/dockyard/container"
)

func main() {
	root := &cobra.Command{
		Use:           "dockyard",
		Short:         "Dockyard: a distributed file system and container image registry in one binary",
		SilenceUsage:  true,
		SilenceErrors: true,
		// Flags not given on the command line come from DOCKYARD_* variables
		// or the config file (config.go).
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			if err := applyConfig(cmd); err != nil {
				return err
			}
			addr, _ := cmd.Flags().GetString(debugFlag)
			return startDebug(addr)
		},
	}
	root.PersistentFlags().String("config", "", "YAML config file (default $"+configEnv+"); flags and DOCKYARD_* variables override it")
	root.PersistentFlags().String(debugFlag, "", "serve Go profiling endpoints (/debug/pprof/) on this address, e.g. 127.0.0.1:6060; unauthenticated, keep it on loopback")
	root.AddCommand(versionCmd())
	for _, add := range subcommands {
		root.AddCommand(add())
	}
	// Servers and mounts shut down cleanly on SIGINT/SIGTERM through the
	// command's context.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := root.ExecuteContext(ctx)
	stop()
	// A container's exit status passes through `dockyard run` unchanged.
	var exit *container.ExitError
	if errors.As(err, &exit) {
		os.Exit(exit.Code)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "dockyard:", err)
		os.Exit(1)
	}
}

// subcommands is filled by the init functions of the per-command files, so
// adding a command touches only its own file.
var subcommands []func() *cobra.Command
