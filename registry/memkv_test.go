package registry

import (
	"github.com/dockyard/dockyard/metaserver"
	msserver "github.com/dockyard/dockyard/metaserver/server"
)

// newMemKV is the metaserver's own in-memory FSM, without Raft: the real
// transaction semantics, not a second copy of them.
func newMemKV() metaserver.KV { return msserver.NewMemory().API() }
