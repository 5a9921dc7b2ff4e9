package main

import (
	"fmt"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	msserver "github.com/dockyard/dockyard/metaserver/server"
)

func init() { subcommands = append(subcommands, metaserverCmd) }

func metaserverCmd() *cobra.Command {
	var (
		cfg     msserver.Config
		verbose bool
	)
	cmd := &cobra.Command{
		Use:   "metaserver --id ID --data DIR --listen ADDR --raft ADDR [--join LEADER_API_ADDR]",
		Short: "Run a metaserver: one Raft replica of the namespace and cluster state",
		Long: `Run a metaserver. The first node of a cluster starts without --join and
bootstraps a single-node cluster; every further node names any member's API
address with --join and is added as a voter. A node restarted on an existing
--data directory rejoins with its stored state and ignores --join.
It runs until SIGINT or SIGTERM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case cfg.ID == "":
				return fmt.Errorf("--id is required")
			case cfg.DataDir == "":
				return fmt.Errorf("--data is required")
			}
			// Raft's warnings and errors (lost contact, failed elections)
			// always reach stderr; --verbose adds its routine messages.
			cfg.LogOutput, cfg.LogLevel = os.Stderr, "warn"
			if verbose {
				cfg.LogLevel = "info"
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			secret, err := serverClusterSecret(cmd, log, cfg.APIAddr, cfg.RaftAddr)
			if err != nil {
				return err
			}
			cfg.Auth = secret
			n, err := msserver.Start(cfg)
			if err != nil {
				return err
			}
			log.Info("metaserver serving", "id", cfg.ID, "api", n.APIAddr(), "raft", n.RaftAddr(), "data", cfg.DataDir)
			<-cmd.Context().Done()
			log.Info("metaserver shutting down", "id", cfg.ID)
			return n.Stop()
		},
	}
	f := cmd.Flags()
	f.StringVar(&cfg.ID, "id", "", "Raft server id of this node, stable across restarts (required)")
	f.StringVar(&cfg.DataDir, "data", "", "directory for the Raft log and snapshots (required)")
	f.StringVar(&cfg.APIAddr, "listen", defaultMeta, "address of the HTTP API")
	f.StringVar(&cfg.RaftAddr, "raft", "127.0.0.1:9501", "address of the Raft transport")
	f.StringVar(&cfg.Join, "join", "", "API address of a cluster member to join through (new nodes only)")
	addClusterSecretFlag(f)
	f.DurationVar(&cfg.SuspectAfter, "suspect-after", 0, "mark a silent chunkserver suspect after this long (default 3s)")
	f.DurationVar(&cfg.DownAfter, "down-after", 0, "mark a silent chunkserver down and rebuild its shards after this long (default 30s)")
	f.Uint64Var(&cfg.SnapshotThreshold, "snapshot-threshold", 0, "log entries between snapshots (default 16384)")
	f.BoolVar(&verbose, "verbose", false, "log Raft's routine messages too, not only its warnings and errors")
	return cmd
}
