package server

import (
	"fmt"

	ms "github.com/dockyard/dockyard/metaserver"
)

func decodeArgs[T any](op string, b []byte) (T, error) {
	var v T
	if len(b) == 0 {
		return v, nil
	}
	if err := ms.Unmarshal(b, &v); err != nil {
		return v, fmt.Errorf("%w: decoding %s arguments: %v", ms.ErrBadRequest, op, err)
	}
	return v, nil
}

// queryReply answers a read in wire form: in binary when the arguments came
// in binary (see metaserver.IsBinary), else JSON.
func (f *FSM) queryReply(op string, args []byte) ([]byte, error) {
	v, err := f.query(op, args)
	if err != nil {
		return nil, ms.ToWire(err).Err()
	}
	return ms.MarshalReply(v, ms.IsBinary(args))
}

// isQuery reports whether op is a read the FSM answers itself.
func isQuery(op string) bool { return ms.IsRead(op) }

// query answers a read from the local state. The caller has made sure the
// state is current enough (see Node.ensureReadable).
func (f *FSM) query(op string, args []byte) (any, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	switch op {
	case ms.OpLookup:
		a, err := decodeArgs[ms.NameArgs](op, args)
		if err != nil {
			return nil, err
		}
		return f.lookup(a.Parent, a.Name)
	case ms.OpGetAttr:
		a, err := decodeArgs[ms.InoArgs](op, args)
		if err != nil {
			return nil, err
		}
		return f.getAttr(a.Ino)
	case ms.OpGetInode:
		a, err := decodeArgs[ms.InoArgs](op, args)
		if err != nil {
			return nil, err
		}
		return f.getFullInode(a.Ino)
	case ms.OpReadDir:
		a, err := decodeArgs[ms.ReadDirArgs](op, args)
		if err != nil {
			return nil, err
		}
		return f.readDir(a)
	case ms.OpGetXattr:
		a, err := decodeArgs[ms.XattrArgs](op, args)
		if err != nil {
			return nil, err
		}
		return f.getXattr(a)
	case ms.OpListXattr:
		a, err := decodeArgs[ms.InoArgs](op, args)
		if err != nil {
			return nil, err
		}
		return f.listXattr(a.Ino)
	case ms.OpStatFS:
		return f.statFS(), nil
	case ms.OpResolvePath:
		a, err := decodeArgs[ms.PathArgs](op, args)
		if err != nil {
			return nil, err
		}
		return f.resolvePath(a.Path)
	case ms.OpGetChunk:
		a, err := decodeArgs[ms.ChunkArgs](op, args)
		if err != nil {
			return nil, err
		}
		return f.getChunk(a.ID)
	case ms.OpChunkservers:
		return f.chunkservers(), nil
	case ms.OpStrayShards:
		a, err := decodeArgs[ms.StrayShardsArgs](op, args)
		if err != nil {
			return nil, err
		}
		return f.strayShards(a), nil
	case ms.OpKVGet:
		a, err := decodeArgs[ms.KVGetArgs](op, args)
		if err != nil {
			return nil, err
		}
		return f.kvGet(a.Bucket, a.Key), nil
	case ms.OpKVList:
		a, err := decodeArgs[ms.KVListArgs](op, args)
		if err != nil {
			return nil, err
		}
		return f.kvList(a), nil
	}
	return nil, fmt.Errorf("%w: unknown operation %q", ms.ErrBadRequest, op)
}

// status fills the FSM's part of Status.
func (f *FSM) status() ms.Status {
	f.mu.RLock()
	defer f.mu.RUnlock()
	st := ms.Status{
		Chunkservers: f.chunkservers(),
		Inodes:       uint64(len(f.inodes)),
		Chunks:       uint64(len(f.chunks)),
		AppliedIndex: f.applied.Load(),
	}
	st.RepairsQueued, st.MovesQueued = f.jobCounts()
	st.Degraded, st.Lost = f.health()
	return st
}

func (f *FSM) memberRecords() map[string]ms.Member {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string]ms.Member, len(f.members))
	for k, v := range f.members {
		out[k] = v
	}
	return out
}
