package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockyard/dockyard/metaserver"
	"github.com/dockyard/dockyard/registry"
)

// The registry's accounts are records in the metaserver KV, so these
// commands reach them the way every admin command reaches the cluster:
// through --meta with the cluster secret. No registry needs to run.

func init() {
	adminSubcommands = append(adminSubcommands, adminUserCmd, adminGrantCmd, adminRevokeCmd)
}

func adminUserCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "user",
		Short: "Add, list, remove registry users and set their passwords (for registries run with --auth)",
	}
	var admin, stdin bool
	add := &cobra.Command{
		Use:   "add NAME [--admin] [--password-stdin]",
		Short: "Add a user; it may push and pull NAME/... (an admin: everything)",
		Args:  cobra.ExactArgs(1),
		RunE: withMeta(func(cmd *cobra.Command, args []string, mc *metaserver.Client) error {
			pw, err := readNewPassword(cmd, stdin)
			if err != nil {
				return err
			}
			if err := registry.NewUserStore(mc).Add(cmd.Context(), args[0], pw, admin); err != nil {
				return fmt.Errorf("adding user %s: %w", args[0], err)
			}
			role := "user"
			if admin {
				role = "admin"
			}
			fmt.Fprintf(cmd.OutOrStdout(), "added %s %s\n", role, args[0])
			return nil
		}),
	}
	add.Flags().BoolVar(&admin, "admin", false, "the user may do everything on every repository")
	add.Flags().BoolVar(&stdin, "password-stdin", false, "read the password from the first line of standard input instead of prompting")

	var pwStdin bool
	passwd := &cobra.Command{
		Use:   "passwd NAME [--password-stdin]",
		Short: "Set a user's password",
		Args:  cobra.ExactArgs(1),
		RunE: withMeta(func(cmd *cobra.Command, args []string, mc *metaserver.Client) error {
			pw, err := readNewPassword(cmd, pwStdin)
			if err != nil {
				return err
			}
			if err := registry.NewUserStore(mc).SetPassword(cmd.Context(), args[0], pw); err != nil {
				return fmt.Errorf("setting the password of %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "password of %s changed\n", args[0])
			return nil
		}),
	}
	passwd.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from the first line of standard input instead of prompting")

	rm := &cobra.Command{
		Use:   "rm NAME",
		Short: "Remove a user (tokens already issued expire within --auth-token-ttl)",
		Args:  cobra.ExactArgs(1),
		RunE: withMeta(func(cmd *cobra.Command, args []string, mc *metaserver.Client) error {
			if err := registry.NewUserStore(mc).Remove(cmd.Context(), args[0]); err != nil {
				return fmt.Errorf("removing user %s: %w", args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", args[0])
			return nil
		}),
	}
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List users with their roles and grants",
		Args:  cobra.NoArgs,
		RunE: withMeta(func(cmd *cobra.Command, _ []string, mc *metaserver.Client) error {
			users, err := registry.NewUserStore(mc).List(cmd.Context())
			if err != nil {
				return fmt.Errorf("listing users: %w", err)
			}
			if jsonFlag(cmd) {
				return printJSON(cmd.OutOrStdout(), users)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "USER\tROLE\tGRANTS\tCREATED")
			for _, u := range users {
				role := "user"
				if u.Admin {
					role = "admin"
				}
				var gs []string
				for _, g := range u.Grants {
					gs = append(gs, g.Prefix+":"+string(g.Action))
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Name, role, orDash(strings.Join(gs, ",")),
					time.Unix(u.Created, 0).UTC().Format(time.DateTime))
			}
			return tw.Flush()
		}),
	}
	c.AddCommand(add, passwd, rm, ls)
	return c
}

func adminGrantCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "grant USER REPO-PREFIX pull|push",
		Short: "Let a user pull, or push (and pull and delete), REPO-PREFIX and the repositories under it",
		Args:  cobra.ExactArgs(3),
		RunE: withMeta(func(cmd *cobra.Command, args []string, mc *metaserver.Client) error {
			if err := registry.NewUserStore(mc).AddGrant(cmd.Context(), args[0], args[1], registry.Action(args[2])); err != nil {
				return fmt.Errorf("granting %s on %s to %s: %w", args[2], args[1], args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s may %s %s and %s/...\n", args[0], args[2], args[1], args[1])
			return nil
		}),
	}
}

func adminRevokeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "revoke USER REPO-PREFIX",
		Short: "Remove a user's grant on REPO-PREFIX",
		Args:  cobra.ExactArgs(2),
		RunE: withMeta(func(cmd *cobra.Command, args []string, mc *metaserver.Client) error {
			if err := registry.NewUserStore(mc).RemoveGrant(cmd.Context(), args[0], args[1]); err != nil {
				return fmt.Errorf("revoking %s's grant on %s: %w", args[0], args[1], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s's grant on %s\n", args[0], args[1])
			return nil
		}),
	}
}

// readNewPassword reads a password from the first line of stdin, or asks
// for it twice on the terminal without echo.
func readNewPassword(cmd *cobra.Command, fromStdin bool) (string, error) {
	in := cmd.InOrStdin()
	if fromStdin {
		line, err := bufio.NewReader(in).ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return "", fmt.Errorf("reading the password from stdin: %w", err)
		}
		return strings.TrimRight(line, "\r\n"), nil
	}
	f, ok := in.(*os.File)
	if !ok || !isTerminal(f) {
		return "", errors.New("standard input is not a terminal: give --password-stdin and pipe the password in")
	}
	errw := cmd.ErrOrStderr()
	fmt.Fprint(errw, "Password: ")
	a, err := readPasswordNoEcho(f)
	fmt.Fprintln(errw)
	if err != nil {
		return "", err
	}
	fmt.Fprint(errw, "Repeat password: ")
	b, err := readPasswordNoEcho(f)
	fmt.Fprintln(errw)
	if err != nil {
		return "", err
	}
	if a != b {
		return "", errors.New("the passwords differ")
	}
	return a, nil
}
