package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockyard/dockyard/metaserver"
)

func init() { adminSubcommands = append(adminSubcommands, adminMembersCmd) }

func adminMembersCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "members",
		Short: "List, add and remove metaservers of the Raft cluster",
	}
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List the metaservers with their addresses and roles",
		Args:  cobra.NoArgs,
		RunE: withMeta(func(cmd *cobra.Command, _ []string, mc *metaserver.Client) error {
			ms, err := mc.Members(cmd.Context())
			if err != nil {
				return fmt.Errorf("members: %w", err)
			}
			if jsonFlag(cmd) {
				return printJSON(cmd.OutOrStdout(), ms)
			}
			printMembers(cmd.OutOrStdout(), ms)
			return nil
		}),
	}
	add := &cobra.Command{
		Use:   "add ID RAFT_ADDR API_ADDR",
		Short: "Add a running, empty metaserver as a voter (what --join does)",
		Args:  cobra.ExactArgs(3),
		RunE: withMeta(func(cmd *cobra.Command, args []string, mc *metaserver.Client) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if err := mc.AddMember(ctx, args[0], args[1], args[2]); err != nil {
				return fmt.Errorf("adding member %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added %s (raft %s, api %s)\n", args[0], args[1], args[2])
			return nil
		}),
	}
	rm := &cobra.Command{
		Use:   "remove ID",
		Short: "Remove a metaserver from the Raft configuration",
		Args:  cobra.ExactArgs(1),
		RunE: withMeta(func(cmd *cobra.Command, args []string, mc *metaserver.Client) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			if err := mc.RemoveMember(ctx, args[0]); err != nil {
				return fmt.Errorf("removing member %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", args[0])
			return nil
		}),
	}
	c.AddCommand(ls, add, rm)
	return c
}
