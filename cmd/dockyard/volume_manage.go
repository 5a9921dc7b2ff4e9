package main

import (
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockyard/dockyard/volume"
)

// `dockyard volume ls|create|rm` manage the same volumes Docker gets through
// the plugin, from any host that reaches the cluster: a volume is made ready
// before a container needs it, or removed once none does. Unlike the plugin,
// rm cannot know whether another host mounts the volume.

func volumeLsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "ls",
		Short: "List the volumes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fc, err := newFSClient(cmd)
			if err != nil {
				return fmt.Errorf("volume ls: %w", err)
			}
			vols, err := volume.List(cmd.Context(), fc)
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "VOLUME\tCREATED\tPATH")
			for _, v := range vols {
				fmt.Fprintf(tw, "%s\t%s\t%s%s/%s\n", v.Name, v.CreatedAt.Format(time.RFC3339), dfsPrefix, volume.Dir, v.Name)
			}
			return tw.Flush()
		},
	}
	addMetaFlag(c)
	return c
}

func volumeCreateCmd() *cobra.Command {
	var opts []string
	c := &cobra.Command{
		Use:   "create NAME [-o mode=0775] [-o uid=N] [-o gid=N] [-o from=VOLUME[@SNAPSHOT]]",
		Short: "Create a volume (the options docker volume create --opt takes)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := parseVolumeOpts(opts)
			if err != nil {
				return err
			}
			fc, err := newFSClient(cmd)
			if err != nil {
				return fmt.Errorf("volume create: %w", err)
			}
			created, err := volume.Create(cmd.Context(), fc, args[0], o)
			if err != nil {
				return err
			}
			if !created {
				fmt.Fprintf(cmd.OutOrStdout(), "%s exists already; left as it is\n", args[0])
				return nil
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s %s%s/%s\n", args[0], dfsPrefix, volume.Dir, args[0])
			return nil
		},
	}
	c.Flags().StringArrayVarP(&opts, "opt", "o", nil, "volume option KEY=VALUE (mode, uid, gid, from); repeatable")
	addMetaFlag(c)
	return c
}

// parseVolumeOpts turns -o KEY=VALUE flags into the options volume.Create
// takes, which checks the keys and values themselves.
func parseVolumeOpts(opts []string) (map[string]string, error) {
	o := map[string]string{}
	for _, kv := range opts {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("volume create: option %q: want KEY=VALUE", kv)
		}
		if _, dup := o[k]; dup {
			return nil, fmt.Errorf("volume create: option %s given twice", k)
		}
		o[k] = v
	}
	return o, nil
}

func volumeRmCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "rm NAME...",
		Short: "Remove volumes and everything in them (their snapshots stay)",
		Long: `rm removes each volume and everything in it. Make sure no container on any host
still uses it: unlike the plugin, which refuses a volume mounted on its own
host, this command cannot see other hosts' mounts. Snapshots of the volume stay
(volume snapshots NAME lists them; volume rm-snapshot removes them).`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fc, err := newFSClient(cmd)
			if err != nil {
				return fmt.Errorf("volume rm: %w", err)
			}
			for _, name := range args {
				if err := volume.Remove(cmd.Context(), fc, name); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", name)
			}
			return nil
		},
	}
	addMetaFlag(c)
	return c
}
