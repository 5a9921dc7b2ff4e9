package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dockyard/dockyard/metaserver"
	"github.com/spf13/cobra"
)

func init() { subcommands = append(subcommands, adminCmd) }

// adminSubcommands lets other files (admin_members.go, ...) hang commands
// under `dockyard admin`.
var adminSubcommands []func() *cobra.Command

func adminCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "admin",
		Short: "Operate a cluster: status, chunkservers, members, repair, fsck",
	}
	c.PersistentFlags().String("meta", defaultMeta, "metaserver API addresses, comma-separated")
	addClusterSecretFlag(c.PersistentFlags())
	c.PersistentFlags().Bool("json", false, "print JSON for scripts instead of tables")
	c.AddCommand(adminStatusCmd(), adminChunkserversCmd(), adminRepairCmd(), adminFsckCmd())
	for _, add := range adminSubcommands {
		c.AddCommand(add())
	}
	return c
}

func jsonFlag(cmd *cobra.Command) bool {
	v, _ := cmd.Flags().GetBool("json")
	return v
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func adminStatusCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Leader, members, chunkservers and redundancy at a glance",
		Args:  cobra.NoArgs,
		RunE: withMeta(func(cmd *cobra.Command, _ []string, mc *metaserver.Client) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Second)
			defer cancel()
			st, err := mc.Status(ctx)
			if err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd.OutOrStdout(), st)
			}
			w := cmd.OutOrStdout()
			health := "healthy"
			switch {
			case st.Lost > 0:
				health = fmt.Sprintf("DATA LOSS: %d chunks have fewer than k readable shards", st.Lost)
			case st.Degraded > 0:
				health = fmt.Sprintf("degraded: %d chunks below full redundancy, %d repairs queued", st.Degraded, st.RepairsQueued)
			}
			fmt.Fprintf(w, "leader      %s\nredundancy  %s\ninodes      %d\nchunks      %d\nrebalance   %d moves queued\napplied     %d\n\n",
				orDash(st.Leader), health, st.Inodes, st.Chunks, st.MovesQueued, st.AppliedIndex)
			printMembers(w, st.Members)
			fmt.Fprintln(w)
			printChunkservers(w, st.Chunkservers, false)
			return nil
		}),
	}
}

func printMembers(w io.Writer, ms []metaserver.Member) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tRAFT\tAPI\tROLE")
	for _, m := range ms {
		role := "follower"
		if m.Leader {
			role = "leader"
		}
		if !m.Voter {
			role += " (non-voter)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", m.ID, m.RaftAddr, orDash(m.APIAddr), role)
	}
	tw.Flush()
}

// printChunkservers lists chunkservers as a table. Removed ones are kept by
// the metaserver for good (so a removed server that comes back is refused);
// they are left out unless all is set, and counted below the table.
func printChunkservers(w io.Writer, cs []metaserver.ChunkserverInfo, all bool) {
	sort.Slice(cs, func(i, j int) bool { return cs[i].ID < cs[j].ID })
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CHUNKSERVER\tADDRESS\tSTATE\tUSED\tCAPACITY\tSHARDS\tLABELS\tLAST HEARTBEAT")
	removed := 0
	for _, c := range cs {
		if c.State == metaserver.StateRemoved && !all {
			removed++
			continue
		}
		var labels []string
		for k, v := range c.Labels {
			labels = append(labels, k+"="+v)
		}
		sort.Strings(labels)
		hb := "never"
		if c.LastHeartbeat > 0 {
			hb = time.Since(time.Unix(0, c.LastHeartbeat)).Round(time.Second).String() + " ago"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", c.ID, c.Addr, c.State, humanBytes(c.Used),
			humanBytes(c.Capacity), c.Shards, orDash(strings.Join(labels, ",")), hb)
	}
	tw.Flush()
	if removed > 0 {
		fmt.Fprintf(w, "(%d removed not shown; `dockyard admin chunkservers ls --all` lists them)\n", removed)
	}
}

func adminChunkserversCmd() *cobra.Command {
	c := &cobra.Command{
		Use:     "chunkservers",
		Aliases: []string{"cs"},
		Short:   "List, drain and remove chunkservers",
	}
	var all bool
	ls := &cobra.Command{
		Use:   "ls",
		Short: "List chunkservers with state, capacity and shard counts",
		Args:  cobra.NoArgs,
		RunE: withMeta(func(cmd *cobra.Command, _ []string, mc *metaserver.Client) error {
			cs, err := mc.Chunkservers(cmd.Context())
			if err != nil {
				return err
			}
			if jsonFlag(cmd) {
				return printJSON(cmd.OutOrStdout(), cs)
			}
			printChunkservers(cmd.OutOrStdout(), cs, all)
			return nil
		}),
	}
	ls.Flags().BoolVar(&all, "all", false, "list removed chunkservers too")
	var wait bool
	drain := &cobra.Command{
		Use:   "drain ID",
		Short: "Stop placing shards on a chunkserver and move its shards elsewhere",
		Args:  cobra.ExactArgs(1),
		RunE: withMeta(func(cmd *cobra.Command, args []string, mc *metaserver.Client) error {
			id := metaserver.ServerID(args[0])
			if err := mc.SetChunkserverState(cmd.Context(), id, metaserver.StateDraining); err != nil {
				return fmt.Errorf("drain %s: %w", id, err)
			}
			if !wait {
				fmt.Fprintf(cmd.OutOrStdout(), "%s is draining; `dockyard admin chunkservers ls` shows its shard count fall\n", id)
				return nil
			}
			return waitUntil(cmd, fmt.Sprintf("draining %s", id), func(ctx context.Context) (int64, bool, error) {
				cs, err := mc.Chunkservers(ctx)
				if err != nil {
					return 0, false, err
				}
				for _, c := range cs {
					if c.ID == id {
						return int64(c.Shards), c.Shards == 0, nil
					}
				}
				return 0, false, fmt.Errorf("chunkserver %s is no longer known", id)
			})
		}),
	}
	drain.Flags().BoolVar(&wait, "wait", true, "wait until every shard has moved off, showing progress")
	var force bool
	remove := &cobra.Command{
		Use:   "remove ID",
		Short: "Forget a chunkserver (drain it first; --force rebuilds its shards from parity instead)",
		Args:  cobra.ExactArgs(1),
		RunE: withMeta(func(cmd *cobra.Command, args []string, mc *metaserver.Client) error {
			id := metaserver.ServerID(args[0])
			cs, err := mc.Chunkservers(cmd.Context())
			if err != nil {
				return err
			}
			for _, c := range cs {
				if c.ID == id && c.Shards > 0 && !force {
					return fmt.Errorf("%s still holds %d shards: drain it first, or --force to rebuild them from the other shards", id, c.Shards)
				}
			}
			if err := mc.SetChunkserverState(cmd.Context(), id, metaserver.StateRemoved); err != nil {
				return fmt.Errorf("remove %s: %w", id, err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", id)
			return nil
		}),
	}
	remove.Flags().BoolVar(&force, "force", false, "remove even though it still holds shards (they are rebuilt elsewhere)")
	c.AddCommand(ls, drain, remove)
	return c
}

func adminRepairCmd() *cobra.Command {
	var wait bool
	c := &cobra.Command{
		Use:   "repair",
		Short: "Show repairs in flight and wait until every chunk has full redundancy",
		Args:  cobra.NoArgs,
		RunE: withMeta(func(cmd *cobra.Command, _ []string, mc *metaserver.Client) error {
			st, err := mc.Status(cmd.Context())
			if err != nil {
				return err
			}
			if jsonFlag(cmd) && !wait {
				return printJSON(cmd.OutOrStdout(), map[string]uint64{"degraded": st.Degraded, "lost": st.Lost, "repairsQueued": st.RepairsQueued})
			}
			if st.Lost > 0 {
				return fmt.Errorf("%d chunks have fewer than k readable shards and cannot be repaired until their chunkservers return", st.Lost)
			}
			if !wait || st.Degraded == 0 {
				fmt.Fprintf(cmd.OutOrStdout(), "%d chunks degraded, %d repairs queued\n", st.Degraded, st.RepairsQueued)
				return nil
			}
			return waitUntil(cmd, "repairing", func(ctx context.Context) (int64, bool, error) {
				st, err := mc.Status(ctx)
				if err != nil {
					return 0, false, err
				}
				if st.Lost > 0 {
					return 0, false, fmt.Errorf("%d chunks lost", st.Lost)
				}
				return int64(st.Degraded), st.Degraded == 0, nil
			})
		}),
	}
	c.Flags().BoolVar(&wait, "wait", true, "wait until nothing is degraded, showing progress")
	return c
}

// waitUntil polls check every second, drawing a progress bar from the first
// remaining count down to zero, until it reports done or the command's
// context ends.
func waitUntil(cmd *cobra.Command, what string, check func(context.Context) (remaining int64, done bool, err error)) error {
	out := cmd.ErrOrStderr()
	tty := isTerminal(out)
	var first int64 = -1
	start := time.Now()
	for {
		remaining, done, err := check(cmd.Context())
		if err != nil {
			return err
		}
		if first < 0 || remaining > first {
			first = remaining
		}
		if tty {
			fmt.Fprintf(out, "\r%s %s %d left, %s", what, progressBar(first-remaining, first, 30), remaining, time.Since(start).Round(time.Second))
		}
		if done {
			if tty {
				fmt.Fprintln(out)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: done in %s\n", what, time.Since(start).Round(time.Second))
			return nil
		}
		select {
		case <-cmd.Context().Done():
			return cmd.Context().Err()
		case <-time.After(time.Second):
		}
	}
}

func progressBar(done, total int64, width int) string {
	if total <= 0 {
		return "[" + strings.Repeat("=", width) + "]"
	}
	n := int(done * int64(width) / total)
	return "[" + strings.Repeat("=", n) + strings.Repeat(" ", width-n) + "]"
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
