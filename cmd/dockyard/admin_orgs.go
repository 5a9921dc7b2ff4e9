package main

import (
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockyard/dockyard/metaserver"
	"github.com/dockyard/dockyard/registry"
)

// Organisations are records in the metaserver KV beside the users, so
// these commands work as `admin user` does: through --meta, no registry
// needed. Only admins run them; there is no organisation admin role.

func init() {
	adminSubcommands = append(adminSubcommands, adminOrgCmd)
}

func adminOrgCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "org",
		Short: "Add, list, remove registry organisations and their members (for registries run with --auth)",
	}
	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Add an organisation; it owns NAME/... (members are added with org member add)",
		Args:  cobra.ExactArgs(1),
		RunE: withMeta(func(cmd *cobra.Command, args []string, mc *metaserver.Client) error {
			if err := registry.NewUserStore(mc).AddOrg(cmd.Context(), args[0]); err != nil {
				return fmt.Errorf("adding organisation %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added organisation %s\n", args[0])
			return nil
		}),
	}
	var force bool
	rm := &cobra.Command{
		Use:   "rm NAME [--force]",
		Short: "Remove an organisation (its images stay, for admins); refused while it has members unless --force",
		Args:  cobra.ExactArgs(1),
		RunE: withMeta(func(cmd *cobra.Command, args []string, mc *metaserver.Client) error {
			err := registry.NewUserStore(mc).RemoveOrg(cmd.Context(), args[0], force)
			if errors.Is(err, registry.ErrOrgNotEmpty) {
				return fmt.Errorf("removing organisation %s: %w; remove them with org member rm, or give --force", args[0], err)
			} else if err != nil {
				return fmt.Errorf("removing organisation %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed organisation %s\n", args[0])
			return nil
		}),
	}
	rm.Flags().BoolVar(&force, "force", false, "remove the organisation with its members")
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List organisations with their members and roles",
		Args:  cobra.NoArgs,
		RunE: withMeta(func(cmd *cobra.Command, _ []string, mc *metaserver.Client) error {
			orgs, err := registry.NewUserStore(mc).ListOrgs(cmd.Context())
			if err != nil {
				return fmt.Errorf("listing organisations: %w", err)
			}
			if jsonFlag(cmd) {
				return printJSON(cmd.OutOrStdout(), orgs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ORG\tMEMBERS\tCREATED")
			for _, o := range orgs {
				var ms []string
				for _, m := range o.Members {
					ms = append(ms, m.User+":"+string(m.Role))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\n", o.Name, orDash(strings.Join(ms, ",")),
					time.Unix(o.Created, 0).UTC().Format(time.DateTime))
			}
			return tw.Flush()
		}),
	}
	c.AddCommand(add, rm, ls, adminOrgMemberCmd())
	return c
}

func adminOrgMemberCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "member",
		Short: "Add members to an organisation, change their role, remove them",
	}
	add := &cobra.Command{
		Use:   "add ORG USER pull|push",
		Short: "Let USER pull, or push (and pull and delete), ORG/...; replaces an earlier role",
		Args:  cobra.ExactArgs(3),
		RunE: withMeta(func(cmd *cobra.Command, args []string, mc *metaserver.Client) error {
			org, user, role := args[0], args[1], args[2]
			if err := registry.NewUserStore(mc).SetOrgMember(cmd.Context(), org, user, registry.Action(role)); err != nil {
				return fmt.Errorf("adding %s to %s as %s: %w", user, org, role, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s may %s %s and %s/...\n", user, role, org, org)
			return nil
		}),
	}
	rm := &cobra.Command{
		Use:   "rm ORG USER",
		Short: "Take USER out of ORG",
		Args:  cobra.ExactArgs(2),
		RunE: withMeta(func(cmd *cobra.Command, args []string, mc *metaserver.Client) error {
			if err := registry.NewUserStore(mc).RemoveOrgMember(cmd.Context(), args[0], args[1]); err != nil {
				return fmt.Errorf("removing %s from %s: %w", args[1], args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s from %s\n", args[1], args[0])
			return nil
		}),
	}
	c.AddCommand(add, rm)
	return c
}
