package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, cloneCmd) }

func cloneCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "clone dfs:/SRC dfs:/DST",
		Short: "Copy a file or directory tree within the Dockyard file system instantly, sharing its bytes",
		Long: `Copy the file or directory tree at SRC to DST, which must not exist (its parent
must). Only metadata is copied, in one step: the copy shares every chunk with
SRC, so it takes no space and no time proportional to the bytes, and either side
can then change without the other seeing it.

Modes, owners, times, extended attributes, symlinks and hard links within the
tree are kept. The copy is the point in time the metaserver applies it: data
still buffered in a mount, or written without fsync and not yet committed, is
not in it. At most 1,000,000 inodes are copied at once.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			src, err := mustDFSPath(args[0])
			if err != nil {
				return fmt.Errorf("clone: %w", err)
			}
			dst, err := mustDFSPath(args[1])
			if err != nil {
				return fmt.Errorf("clone: %w", err)
			}
			c, err := newFSClient(cmd)
			if err != nil {
				return fmt.Errorf("clone: %w", err)
			}
			// The error names both paths already.
			_, err = c.Clone(cmd.Context(), src, dst)
			return err
		},
	}
	addMetaFlag(c)
	return c
}
