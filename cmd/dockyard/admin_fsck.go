package main

import (
	"fmt"

	"github.com/dockyard/dockyard/fs/fsck"
	"github.com/dockyard/dockyard/metaserver"
	"github.com/spf13/cobra"
)

func adminFsckCmd() *cobra.Command {
	var o fsck.Options
	c := &cobra.Command{
		Use:   "fsck",
		Short: "Check that every referenced chunk has all its shards; --fix schedules repairs",
		Long: `fsck walks the whole namespace, asks the chunkservers for every shard of every chunk a file uses and
reports chunks that are degraded (readable, some shard missing or corrupt) or lost (fewer than k shards).
--deep reads every shard so each block checksum is verified; --fix reports the bad shards to the metaserver,
which rebuilds them. It exits non-zero when anything is degraded, lost or dangling.`,
		Args: cobra.NoArgs,
		RunE: withMeta(func(cmd *cobra.Command, _ []string, mc *metaserver.Client) error {
			tty := isTerminal(cmd.ErrOrStderr())
			if tty {
				o.Progress = func(n int) {
					if n%64 == 0 {
						fmt.Fprintf(cmd.ErrOrStderr(), "\rchecked %d chunks", n)
					}
				}
			}
			r, err := fsck.Check(cmd.Context(), mc, shardClient(), o)
			if tty {
				fmt.Fprint(cmd.ErrOrStderr(), "\r\033[K")
			}
			if err != nil {
				return fmt.Errorf("fsck: %w", err)
			}
			w := cmd.OutOrStdout()
			if jsonFlag(cmd) {
				if err := printJSON(w, r); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(w, "%d dirs, %d files, %s in %d chunks (%d shards)\n", r.Dirs, r.Files, humanBytes(int64(r.Bytes)), r.Chunks, r.Shards)
				fmt.Fprintf(w, "healthy %d, degraded %d, lost %d\n", r.Healthy, r.Degraded, r.Lost)
				for _, p := range r.Problems {
					fmt.Fprintf(w, "chunk %d shard %d on %s (%s): %s  used by %v\n", p.Chunk, p.Index, p.Server, p.Addr, p.Reason, p.Paths)
				}
				for _, d := range r.Dangling {
					fmt.Fprintln(w, "dangling:", d)
				}
				if o.Fix && r.Reported > 0 {
					fmt.Fprintf(w, "reported %d bad shards for repair; `dockyard admin repair` waits for them\n", r.Reported)
				}
			}
			if !r.Clean() {
				return fmt.Errorf("fsck found %d degraded and %d lost chunks, %d dangling references", r.Degraded, r.Lost, len(r.Dangling))
			}
			return nil
		}),
	}
	c.Flags().BoolVar(&o.Deep, "deep", false, "read every shard so the chunkservers verify each block checksum")
	c.Flags().BoolVar(&o.Fix, "fix", false, "report bad shards to the metaserver so they are rebuilt")
	c.Flags().IntVar(&o.Parallel, "parallel", 16, "chunks checked at once")
	return c
}
