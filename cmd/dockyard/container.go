package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockyard/dockyard/container"
)

func init() { subcommands = append(subcommands, containerCmd) }

// containerCmd manages the containers `dockyard run --name` keeps after
// they exit. (`dockyard rm` removes dfs:/paths, hence a subcommand group.)
func containerCmd() *cobra.Command {
	var stateDir string
	c := &cobra.Command{
		Use:   "container ls | rm NAME...",
		Short: "List or remove the containers dockyard run --name kept after they exited",
	}
	c.PersistentFlags().StringVar(&stateDir, "state-dir", "/run/dockyard", "the state dir dockyard run keeps named containers in")
	c.AddCommand(&cobra.Command{
		Use:   "ls",
		Short: "List kept containers",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			recs, err := container.List(stateDir)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tIMAGE\tCREATED\tSTATUS")
			for _, r := range recs {
				status := "exited"
				if busy, err := container.InUse(stateDir, r.Name); err != nil {
					return err
				} else if busy {
					status = "running"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.Name, r.Image, r.Created.Format(time.RFC3339), status)
			}
			return tw.Flush()
		},
	})
	c.AddCommand(&cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove kept containers and what they wrote",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			for _, n := range args {
				if err := container.Remove(stateDir, n); err != nil {
					return err
				}
			}
			return nil
		},
	})
	return c
}
