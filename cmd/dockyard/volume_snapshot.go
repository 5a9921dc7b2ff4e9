package main

import (
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockyard/dockyard/volume"
)

// `dockyard volume ...` manages volumes from the command line, beside the
// plugin server (`dockyard volume-plugin`), which dockerd talks to.

func init() { subcommands = append(subcommands, volumeCmd) }

func volumeCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "volume ls|create|rm|snapshot|snapshots|restore|rm-snapshot",
		Short: "Volumes stored in the Dockyard file system, and their snapshots",
		Long: `The volumes that dockyard volume-plugin serves to Docker and dockyard run -v
mounts: ls, create and rm manage them from any host. A snapshot is an
instant copy of dfs:/volumes/NAME at dfs:/volumes/.snapshots/NAME/SNAPSHOT that
shares every byte with the volume; later writes to either never reach the other.
It holds what the metaserver has committed when it is taken: data a container
wrote that its mount still buffers (not yet fsynced or closed) is not in it.
Snapshots are not volumes (docker volume ls does not show them) and outlive
their volume. docker volume create -d dockyard --opt from=NAME@SNAPSHOT NEW
makes a volume from one, as restore does.`,
	}
	c.AddCommand(volumeLsCmd(), volumeCreateCmd(), volumeRmCmd(),
		volumeSnapshotCmd(), volumeSnapshotsCmd(), volumeRestoreCmd(), volumeRmSnapshotCmd())
	return c
}

func volumeSnapshotCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "snapshot NAME SNAPSHOT",
		Short: "Take a snapshot of volume NAME",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			fc, err := newFSClient(cmd)
			if err != nil {
				return fmt.Errorf("volume snapshot: %w", err)
			}
			s, err := volume.CreateSnapshot(cmd.Context(), fc, args[0], args[1])
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s@%s %s%s\n", s.Volume, s.Name, dfsPrefix, s.Path())
			return nil
		},
	}
	addMetaFlag(c)
	return c
}

func volumeSnapshotsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "snapshots NAME",
		Short: "List the snapshots of volume NAME",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fc, err := newFSClient(cmd)
			if err != nil {
				return fmt.Errorf("volume snapshots: %w", err)
			}
			snaps, err := volume.ListSnapshots(cmd.Context(), fc, args[0])
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "SNAPSHOT\tCREATED\tPATH")
			for _, s := range snaps {
				fmt.Fprintf(tw, "%s\t%s\t%s%s\n", s.Name, s.CreatedAt.Format(time.RFC3339), dfsPrefix, s.Path())
			}
			return tw.Flush()
		},
	}
	addMetaFlag(c)
	return c
}

func volumeRestoreCmd() *cobra.Command {
	var to string
	c := &cobra.Command{
		Use:   "restore NAME SNAPSHOT --to NEWNAME",
		Short: "Make a new volume from a snapshot of volume NAME",
		Long: `Make volume NEWNAME from snapshot SNAPSHOT of volume NAME. NAME itself is left
as it is; to go back to the snapshot, stop its containers, remove it and restore
under its own name.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if to == "" {
				return errors.New("volume restore: --to NEWNAME is required: a snapshot becomes a new volume, never overwrites one")
			}
			fc, err := newFSClient(cmd)
			if err != nil {
				return fmt.Errorf("volume restore: %w", err)
			}
			return volume.Restore(cmd.Context(), fc, args[0], args[1], to)
		},
	}
	c.Flags().StringVar(&to, "to", "", "name of the new volume")
	addMetaFlag(c)
	return c
}

func volumeRmSnapshotCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "rm-snapshot NAME SNAPSHOT...",
		Short: "Remove snapshots of volume NAME",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			fc, err := newFSClient(cmd)
			if err != nil {
				return fmt.Errorf("volume rm-snapshot: %w", err)
			}
			for _, snap := range args[1:] {
				if err := volume.RemoveSnapshot(cmd.Context(), fc, args[0], snap); err != nil {
					return err
				}
			}
			return nil
		},
	}
	addMetaFlag(c)
	return c
}
