package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/dockyard/dockyard/metaserver"
	"github.com/spf13/cobra"
)

// defaultMeta is the metaserver address `dockyard serve` listens on, so on
// one machine no --meta flag is needed.
const defaultMeta = "127.0.0.1:9500"

// metaAddrs splits a --meta value into addresses.
func metaAddrs(v string) []string {
	var out []string
	for _, a := range strings.Split(v, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// metaClient connects to the metaservers named by the command's --meta flag
// (its own or an inherited persistent one).
func metaClient(cmd *cobra.Command) (*metaserver.Client, error) {
	v, err := cmd.Flags().GetString("meta")
	if err != nil {
		return nil, fmt.Errorf("--meta: %w", err)
	}
	secret, err := clusterSecret(cmd)
	if err != nil {
		return nil, err
	}
	// A command line should not hang for long on a cluster that is down.
	return metaserver.NewClient(metaAddrs(v), metaserver.WithRetryTimeout(10*time.Second), metaserver.WithClusterSecret(secret))
}

// dialMeta connects a long-running command (a mount, a registry, the volume
// plugin) to the metaservers at addrs with the cluster secret: unlike
// metaClient, it keeps retrying an unreachable cluster.
func dialMeta(cmd *cobra.Command, addrs string) (*metaserver.Client, error) {
	secret, err := clusterSecret(cmd)
	if err != nil {
		return nil, err
	}
	return metaserver.NewClient(metaAddrs(addrs), metaserver.WithClusterSecret(secret))
}

// withMeta wraps a command body that talks to the metaservers: it connects
// through --meta and closes the client when the body returns.
func withMeta(body func(cmd *cobra.Command, args []string, mc *metaserver.Client) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		mc, err := metaClient(cmd)
		if err != nil {
			return err
		}
		defer mc.Close()
		return body(cmd, args, mc)
	}
}
