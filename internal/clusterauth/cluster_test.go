package clusterauth_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	csserver "github.com/dockyard/dockyard/chunkserver/server"
	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/internal/clusterauth"
	ms "github.com/dockyard/dockyard/metaserver"
	msserver "github.com/dockyard/dockyard/metaserver/server"
)

func newSecret(t *testing.T) *clusterauth.Secret {
	t.Helper()
	text, err := clusterauth.GenerateSecret()
	if err != nil {
		t.Fatal(err)
	}
	s, err := clusterauth.ParseSecret([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func nodeConfig(t *testing.T, id string, auth *clusterauth.Secret) msserver.Config {
	return msserver.Config{
		ID: id, DataDir: t.TempDir(), APIAddr: "127.0.0.1:0", RaftAddr: "127.0.0.1:0",
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
		MaintainInterval: 50 * time.Millisecond, NoSync: true, Auth: auth,
	}
}

func startNode(t *testing.T, cfg msserver.Config) *msserver.Node {
	t.Helper()
	n, err := msserver.Start(cfg)
	if err != nil {
		t.Fatalf("starting %s: %v", cfg.ID, err)
	}
	t.Cleanup(func() { _ = n.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.WaitLeader(ctx); err != nil {
		t.Fatalf("%s: no leader: %v", cfg.ID, err)
	}
	return n
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s (last error: %v)", what, last)
}

func TestClusterWithSecret(t *testing.T) {
	secret := newSecret(t)
	node := startNode(t, nodeConfig(t, "m1", secret))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	signed, err := ms.NewClient([]string{node.APIAddr()}, ms.WithClusterSecret(secret))
	if err != nil {
		t.Fatal(err)
	}
	defer signed.Close()
	cs, err := csserver.New(csserver.Config{
		Store: store.NewMemory(64 << 20), ID: "cs1", Cluster: signed, Chunks: signed, Auth: secret,
		HeartbeatInterval: 50 * time.Millisecond, ScrubRate: -1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	// The chunkserver's signed heartbeats get through.
	waitFor(t, "the chunkserver to register", func() (bool, error) {
		list, err := signed.Chunkservers(ctx)
		return len(list) == 1 && list[0].Addr == cs.Addr(), err
	})

	t.Run("metaserver refuses a client without the secret", func(t *testing.T) {
		for name, opt := range map[string]ms.ClientOption{
			"none":  ms.WithRetryTimeout(5 * time.Second),
			"wrong": ms.WithClusterSecret(newSecret(t)),
		} {
			c, err := ms.NewClient([]string{node.APIAddr()}, opt)
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_, err = c.Chunkservers(ctx)
			c.Close()
			if !errors.Is(err, clusterauth.ErrRefused) {
				t.Fatalf("%s: %v, want ErrRefused", name, err)
			}
			want := fmt.Sprintf("metaserver %s refused the request: cluster secret missing or wrong", node.APIAddr())
			if !strings.Contains(err.Error(), want) {
				t.Fatalf("%s: message %q does not say %q", name, err, want)
			}
			// A refusal is final, not retried until the deadline.
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("%s: refusal took %v", name, d)
			}
		}
	})

	t.Run("chunkserver refuses a client without the secret", func(t *testing.T) {
		for name, c := range map[string]*chunkserver.Client{
			"none":  chunkserver.NewClient(nil),
			"wrong": chunkserver.NewClusterClient(newSecret(t)),
		} {
			_, err := c.Put(ctx, cs.Addr(), ms.ShardName(1, 0), []byte("data"))
			if !errors.Is(err, clusterauth.ErrRefused) {
				t.Fatalf("%s: %v, want ErrRefused", name, err)
			}
			if want := "chunkserver " + cs.Addr() + " refused the request"; !strings.Contains(err.Error(), want) {
				t.Fatalf("%s: message %q does not say %q", name, err, want)
			}
		}
	})

	t.Run("works with the secret", func(t *testing.T) {
		c := chunkserver.NewClusterClient(secret)
		if _, err := c.Put(ctx, cs.Addr(), ms.ShardName(2, 0), []byte("data")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 4)
		if n, err := c.ReadAt(ctx, cs.Addr(), ms.ShardName(2, 0), buf, 0); err != nil || string(buf[:n]) != "data" {
			t.Fatalf("read back %q, %v", buf[:n], err)
		}
		if _, err := signed.StatFS(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("raft transport refuses the wrong secret", func(t *testing.T) {
		if _, err := newSecret(t).Dial(node.RaftAddr(), time.Second, time.Second); !errors.Is(err, clusterauth.ErrRefused) {
			t.Fatalf("dial with the wrong secret: %v, want ErrRefused", err)
		}
		c, err := secret.Dial(node.RaftAddr(), time.Second, time.Second)
		if err != nil {
			t.Fatalf("dial with the secret: %v", err)
		}
		c.Close()
	})

	t.Run("a node with the wrong secret cannot join", func(t *testing.T) {
		cfg := nodeConfig(t, "m2", newSecret(t))
		cfg.Join = node.APIAddr()
		n, err := msserver.Start(cfg)
		if err == nil {
			n.Close()
			t.Fatal("a node with the wrong secret joined")
		}
		if !errors.Is(err, clusterauth.ErrRefused) {
			t.Fatalf("join: %v, want ErrRefused", err)
		}
		members, err := signed.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(members.Members) != 1 {
			t.Fatalf("members after the refused join: %+v", members.Members)
		}
	})

	// Last: it leaves the cluster with a member it can never reach.
	t.Run("raft refuses a member with the wrong secret", func(t *testing.T) {
		log := &syncBuffer{}
		cfg := nodeConfig(t, "m3", newSecret(t))
		cfg.LogOutput = log
		m3 := startNode(t, cfg) // a cluster of its own, with another secret
		actx, acancel := context.WithTimeout(ctx, 3*time.Second)
		err := signed.AddMember(actx, "m3", m3.RaftAddr(), m3.APIAddr())
		acancel()
		if err == nil {
			t.Fatal("the leader added a member it cannot authenticate to")
		}
		waitFor(t, "m3 to refuse the leader's Raft connection", func() (bool, error) {
			return strings.Contains(log.String(), "refused a Raft connection"), nil
		})
	})
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestClusterJoinWithSecret: a second metaserver with the secret joins, which
// needs the leader's Raft traffic to reach it through the handshake (a
// two-voter configuration commits only once both have it).
func TestClusterJoinWithSecret(t *testing.T) {
	secret := newSecret(t)
	m1 := startNode(t, nodeConfig(t, "m1", secret))
	cfg := nodeConfig(t, "m2", secret)
	cfg.Join = m1.APIAddr()
	m2 := startNode(t, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := ms.NewClient([]string{m2.APIAddr()}, ms.WithClusterSecret(secret))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, "two voters", func() (bool, error) {
		members, err := c.Members(ctx)
		voters := 0
		for _, m := range members {
			if m.Voter {
				voters++
			}
		}
		return voters == 2, err
	})
}
