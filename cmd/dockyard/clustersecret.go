package main

import (
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync/atomic"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/internal/clusterauth"
)

// clusterSecretFlag names the file holding the cluster secret (see
// docs/security.md). Like every flag it may come from
// DOCKYARD_CLUSTER_SECRET_FILE or the config file.
const clusterSecretFlag = "cluster-secret-file"

// addClusterSecretFlag gives a command that sends or serves cluster traffic
// the --cluster-secret-file flag.
func addClusterSecretFlag(f *pflag.FlagSet) {
	f.String(clusterSecretFlag, "", "`FILE` holding the cluster secret (hex or base64 of 32+ random bytes, "+
		"e.g. from openssl rand -hex 32); servers then refuse cluster peers without it, clients sign with it")
}

// loadedSecret is the secret the command loaded, for the shard clients it
// builds after connecting to the metaservers. One command runs per process.
var loadedSecret atomic.Pointer[clusterauth.Secret]

// clusterSecret loads the file named by cmd's --cluster-secret-file; nil
// when it is not set (or the command has no such flag).
func clusterSecret(cmd *cobra.Command) (*clusterauth.Secret, error) {
	f := cmd.Flags().Lookup(clusterSecretFlag)
	if f == nil || f.Value.String() == "" {
		return nil, nil
	}
	s, err := clusterauth.LoadSecret(f.Value.String())
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", clusterSecretFlag, err)
	}
	loadedSecret.Store(s)
	return s, nil
}

// serverClusterSecret is clusterSecret for a server listening on addrs: with
// no secret and an address other hosts can reach, it warns once that cluster
// traffic is open to anyone who can connect.
func serverClusterSecret(cmd *cobra.Command, log *slog.Logger, addrs ...string) (*clusterauth.Secret, error) {
	s, err := clusterSecret(cmd)
	if err != nil || s != nil {
		return s, err
	}
	for _, a := range addrs {
		if !loopback(a) {
			log.Warn("no --"+clusterSecretFlag+": any host that can reach this server may read and change cluster state; see docs/security.md",
				"listen", a)
			break
		}
	}
	return nil, nil
}

// serveClusterSecret is the secret of `dockyard serve`: the flag's file,
// created on first start when missing; otherwise, when the metaserver
// listens beyond loopback, DATA/cluster-secret, likewise created. A
// loopback-only serve stays open, so every command on the machine reaches
// it with no flag, as the default --meta promises.
func serveClusterSecret(cmd *cobra.Command, log *slog.Logger, data, metaListen string) (*clusterauth.Secret, error) {
	path := cmd.Flags().Lookup(clusterSecretFlag).Value.String()
	if path == "" {
		if loopback(metaListen) {
			return nil, nil
		}
		path = filepath.Join(data, "cluster-secret")
	}
	s, err := clusterauth.LoadOrCreateSecret(path)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", clusterSecretFlag, err)
	}
	log.Info("cluster traffic requires the secret; give clients --"+clusterSecretFlag, "file", path)
	loadedSecret.Store(s)
	return s, nil
}

// shardClient is a chunkserver client signing with the secret the command
// loaded (through metaClient or clusterSecret, which every command calls
// first).
func shardClient() *chunkserver.Client {
	return chunkserver.NewClusterClient(loadedSecret.Load())
}

// loopback reports whether addr (host:port) only accepts connections from
// this machine. An empty host or a name other than localhost does not.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
