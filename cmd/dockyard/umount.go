package main

import (
	"github.com/spf13/cobra"

	"github.com/dockyard/dockyard/fs/fuse"
)

func init() { subcommands = append(subcommands, umountCmd) }

func umountCmd() *cobra.Command {
	var lazy bool
	cmd := &cobra.Command{
		Use:   "umount DIR",
		Short: "Unmount a Dockyard mount",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return fuse.Unmount(args[0], lazy)
		},
	}
	cmd.Flags().BoolVarP(&lazy, "lazy", "l", false, "detach now even if files are open; they stay usable until closed")
	return cmd
}
