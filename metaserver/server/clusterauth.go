package server

import (
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"

	"github.com/dockyard/dockyard/internal/clusterauth"
)

// authStream adapts clusterauth.Listener to raft.StreamLayer; only Dial's
// address type differs.
type authStream struct{ *clusterauth.Listener }

func (a authStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return a.Listener.Dial(string(addr), timeout)
}

// newTransport is Raft's TCP transport, behind the cluster handshake when
// the node has a secret: a peer without it never reaches the Raft RPCs.
func newTransport(cfg Config) (*raft.NetworkTransport, error) {
	if cfg.Auth == nil {
		return raft.NewTCPTransport(cfg.RaftAddr, nil, 5, 10*time.Second, cfg.LogOutput)
	}
	ln, err := net.Listen("tcp", cfg.RaftAddr)
	if err != nil {
		return nil, err
	}
	// As raft.NewTCPTransport does: peers dial the address we record.
	if a, ok := ln.Addr().(*net.TCPAddr); !ok || a.IP.IsUnspecified() {
		_ = ln.Close()
		return nil, fmt.Errorf("raft address %s is not one peers can dial; name the interface", ln.Addr())
	}
	logf := func(remote net.Addr, err error) {
		fmt.Fprintf(cfg.LogOutput, "[WARN]  raft-%s: refused a Raft connection from %s: %v\n", cfg.ID, remote, err)
	}
	return raft.NewNetworkTransport(authStream{cfg.Auth.NewListener(ln, clusterauth.WithRejectHook(logf))}, 5, 10*time.Second, cfg.LogOutput), nil
}
