package main

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/metaserver"
)

func init() { subcommands = append(subcommands, chunkserverCmd) }

func chunkserverCmd() *cobra.Command {
	var (
		data, listen, advertise, meta    string
		keyFile                          string
		labels                           []string
		capacity, scrubRate              string
		fsync, groupCommit, shortCircuit bool
		flushInterval, strayInterval     time.Duration
	)
	cmd := &cobra.Command{
		Use:   "chunkserver --data DIR --listen ADDR --meta ADDR[,ADDR...] [--label k=v ...]",
		Short: "Run a chunkserver: store shards in DIR and serve them to the cluster",
		Long: `Run a chunkserver. It keeps shards in DIR (one file each, every 64 KiB block
checksummed), registers with the metaservers and heartbeats every second, deletes
and rebuilds shards when the metaserver asks, and scrubs every stored block in the
background. It runs until SIGINT or SIGTERM.

Sizes accept a unit: 500M, 20GiB, 1T (powers of 1024).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if data == "" {
				return fmt.Errorf("--data is required")
			}
			// Peers and the metaserver dial the advertised address; a
			// wildcard one would send them nowhere.
			if host, _, err := net.SplitHostPort(listen); err != nil {
				return fmt.Errorf("--listen %q: %w", listen, err)
			} else if ip := net.ParseIP(host); advertise == "" && (host == "" || ip != nil && ip.IsUnspecified()) {
				return fmt.Errorf("--listen %s has no specific host: give --advertise HOST:PORT", listen)
			}
			lbls, err := chunkserverLabels(labels)
			if err != nil {
				return err
			}
			capBytes, err := chunkserverSize(capacity)
			if err != nil {
				return fmt.Errorf("--capacity: %w", err)
			}
			rate, err := chunkserverSize(scrubRate)
			if err != nil {
				return fmt.Errorf("--scrub-rate: %w", err)
			}
			if rate == 0 {
				rate = -1 // the flag's 0 means off; the config's 0 means default
			}
			keys, err := loadEncryptionKeys(keyFile)
			if err != nil {
				return err
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			secret, err := serverClusterSecret(cmd, log, listen)
			if err != nil {
				return err
			}
			mc, err := metaserver.NewClient(metaAddrs(meta), metaserver.WithClusterSecret(secret))
			if err != nil {
				return err
			}
			defer mc.Close()
			s, err := server.New(server.Config{
				DataDir:     data,
				Listen:      listen,
				Advertise:   advertise,
				Labels:      lbls,
				Capacity:    capBytes,
				ScrubRate:   rate,
				NoSync:      !fsync,
				GroupCommit: groupCommit,
				Encryption:  keys,
				// Mounts on this host read shard files themselves.
				ShortCircuit: shortCircuit,
				// The flag's 0 means off; the config's 0 means default.
				FlushInterval: flushIntervalConfig(flushInterval),
				// Likewise: the flag's 0 means off.
				StrayInterval: cmp.Or(strayInterval, -1),
				Cluster:       mc,
				Chunks:        mc,
				Auth:          secret,
				Logger:        log,
			})
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if err := s.Start(ctx); err != nil {
				_ = s.Close()
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "dockyard: chunkserver %s serving %s on %s\n", s.ID(), data, s.Addr())
			<-ctx.Done()
			return s.Close()
		},
	}
	f := cmd.Flags()
	f.StringVar(&data, "data", "", "directory holding the shards and the server's ID (required)")
	f.StringVar(&listen, "listen", "127.0.0.1:9600", "address of the shard API")
	f.StringVar(&advertise, "advertise", "", "address peers and the metaserver use to reach this server (default: --listen)")
	f.StringVar(&meta, "meta", defaultMeta, "metaserver API addresses, comma-separated")
	addClusterSecretFlag(f)
	f.StringArrayVar(&labels, "label", nil, "failure-domain label k=v, e.g. zone=a (repeatable)")
	f.StringVar(&capacity, "capacity", "0", "most bytes to store; 0 = the disk's free space (the smaller of the two applies)")
	f.StringVar(&scrubRate, "scrub-rate", "16MiB", "bytes per second the background scrub reads; 0 turns scrubbing off")
	f.DurationVar(&strayInterval, "stray-interval", server.DefaultStrayInterval, "how often to ask the metaserver which shards "+
		"here no chunk places here any more; one reported in two passes in a row is deleted (0 = never)")
	f.BoolVar(&fsync, "fsync", true, "make shards durable: a durable write before it is acknowledged, a buffered one at the "+
		"client's fsync or within --flush-interval; false never syncs them (a power loss can lose the last seconds of writes)")
	addFlushIntervalFlag(f, &flushInterval)
	addShortCircuitServerFlag(f, &shortCircuit)
	addGroupCommitFlag(f, &groupCommit)
	addEncryptionKeyFlag(f, &keyFile)
	cmd.AddCommand(keygenCmd())
	return cmd
}

// addEncryptionKeyFlag adds --encryption-key-file, shared by chunkserver
// and serve; pass its value through loadEncryptionKeys.
func addEncryptionKeyFlag(f *pflag.FlagSet, path *string) {
	f.StringVar(path, "encryption-key-file", "", "encrypt shards at rest with the keys in `FILE` (made by "+
		"dockyard chunkserver keygen; the first key encrypts new shards, the others read older ones); a data "+
		"directory once started with it never starts without it")
}

// loadEncryptionKeys reads --encryption-key-file; "" means no encryption.
func loadEncryptionKeys(path string) (*store.Keys, error) {
	if path == "" {
		return nil, nil
	}
	keys, err := store.LoadKeys(path)
	if err != nil {
		return nil, fmt.Errorf("--encryption-key-file: %w", err)
	}
	return keys, nil
}

func keygenCmd() *cobra.Command {
	var (
		id     string
		rotate bool
	)
	cmd := &cobra.Command{
		Use:   "keygen FILE [--id ID] [--rotate]",
		Short: "Make a key file for encrypting shards at rest (--encryption-key-file)",
		Long: `keygen writes a new random 256-bit key to FILE, readable by its owner only. Give the file to
every chunkserver (or to serve) with --encryption-key-file. Keep a copy apart from the disks: without
it the shards cannot be read.

With --rotate it adds a new key in front of those already in FILE: restarted with it, chunkservers
encrypt new shards with the new key and still read the ones written under the older keys. A key can
leave the file once no shard uses it; a chunkserver refuses to start without a key its shards need.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			key, err := store.GenerateKey(id)
			if err != nil {
				return fmt.Errorf("--id: %w", err)
			}
			var keys *store.Keys
			if rotate {
				old, err := store.LoadKeys(path)
				if err != nil {
					return err
				}
				if keys, err = old.AddPrimary(key); err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
			} else {
				if _, err := os.Lstat(path); err == nil {
					return fmt.Errorf("%s exists: give --rotate to add a new primary key to it", path)
				}
				if keys, err = store.NewKeys(key); err != nil {
					return err
				}
			}
			if err := store.WriteKeyFile(path, keys); err != nil {
				return fmt.Errorf("writing %s: %w", path, err)
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "dockyard: key %s is now the primary key in %s (keys: %s)\n",
				key.ID, path, strings.Join(keys.IDs(), ", "))
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "the new key's ID (default: today's date and random digits)")
	cmd.Flags().BoolVar(&rotate, "rotate", false, "add the new key in front of the keys already in FILE")
	return cmd
}

// addShortCircuitServerFlag adds --short-circuit, shared by chunkserver and
// serve.
func addShortCircuitServerFlag(f *pflag.FlagSet, on *bool) {
	f.BoolVar(on, "short-circuit", true, "let clients on this host (dockyard mount) read shard files themselves: "+
		"an owner-only Unix socket in the data directory hands them read-only descriptors, and they check every block")
}

// addFlushIntervalFlag adds --flush-interval, shared by chunkserver and
// serve; pass its value through flushIntervalConfig.
// addGroupCommitFlag adds --group-commit, shared by chunkserver and serve.
func addGroupCommitFlag(f *pflag.FlagSet, on *bool) {
	f.BoolVar(on, "group-commit", false, "shard writes and fsyncs share file-system flushes (syncfs) instead of an fsync "+
		"per shard file and directory: same durability, fewer device flushes, but it also flushes everything else "+
		"written to that file system; for a disk the chunkservers have to themselves")
}

func addFlushIntervalFlag(f *pflag.FlagSet, every *time.Duration) {
	f.DurationVar(every, "flush-interval", store.DefaultFlushInterval, "how often shards written buffered "+
		"(acknowledged before they are durable; made durable by a client's fsync) are flushed without one: "+
		"the most a power loss can take from writers that never fsync; 0 leaves it to fsync and shutdown")
}

// flushIntervalConfig turns --flush-interval into the servers' setting: on
// the command line 0 turns the background flush off, in the configuration
// 0 means the default and a negative value turns it off.
func flushIntervalConfig(every time.Duration) time.Duration { return cmp.Or(every, -1) }

// chunkserverLabels parses repeated k=v flags.
func chunkserverLabels(kvs []string) (map[string]string, error) {
	if len(kvs) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: want key=value", kv)
		}
		out[k] = v
	}
	return out, nil
}

// chunkserverSize parses a byte count with an optional binary unit:
// 123, 64K, 500M, 20GiB, 1T, 2TB.
func chunkserverSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	num := strings.TrimRightFunc(t, func(r rune) bool { return r < '0' || r > '9' })
	unit := strings.ToUpper(strings.TrimSpace(t[len(num):]))
	unit = strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I")
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50}
	sh, ok := shift[unit]
	if num == "" || !ok {
		return 0, fmt.Errorf("%q is not a size (e.g. 500M, 20GiB)", s)
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n > (1<<63-1)>>sh {
		return 0, fmt.Errorf("%q is not a size (e.g. 500M, 20GiB)", s)
	}
	return n << sh, nil
}
