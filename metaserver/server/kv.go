package server

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	ms "github.com/dockyard/dockyard/metaserver"
	"github.com/google/btree"
)

func (f *FSM) kvGet(bucket, key string) ms.KVGetReply {
	t, ok := f.kv[bucket]
	if !ok {
		return ms.KVGetReply{}
	}
	it, ok := t.Get(kvItem{Key: key})
	if !ok {
		return ms.KVGetReply{}
	}
	return ms.KVGetReply{Value: slices.Clone(it.Value), Found: true}
}

func (f *FSM) kvList(a ms.KVListArgs) []ms.KVPair {
	out := []ms.KVPair{}
	t, ok := f.kv[a.Bucket]
	if !ok {
		return out
	}
	start := a.Prefix
	if a.After >= start {
		start = a.After
	}
	t.AscendGreaterOrEqual(kvItem{Key: start}, func(it kvItem) bool {
		if !strings.HasPrefix(it.Key, a.Prefix) {
			return false
		}
		if it.Key == a.After {
			return true
		}
		out = append(out, ms.KVPair{Key: it.Key, Value: slices.Clone(it.Value)})
		return a.Limit <= 0 || len(out) < a.Limit
	})
	return out
}

// applyKVTxn checks every condition first, then applies every op, so a failed
// transaction changes nothing.
func (f *FSM) applyKVTxn(a ms.KVTxnArgs) error {
	for _, op := range a.Ops {
		if op.Bucket == "" {
			return fmt.Errorf("%w: kv op on key %q without a bucket", ms.ErrBadRequest, op.Key)
		}
	}
	for _, c := range a.Conds {
		got := f.kvGet(c.Bucket, c.Key)
		if got.Found != c.Exists || (c.Exists && c.Value != nil && !bytes.Equal(got.Value, c.Value)) {
			return fmt.Errorf("%w: %s/%s", ms.ErrConflict, c.Bucket, c.Key)
		}
	}
	for _, op := range a.Ops {
		t, ok := f.kv[op.Bucket]
		if op.Delete {
			if ok {
				t.Delete(kvItem{Key: op.Key})
				if t.Len() == 0 {
					delete(f.kv, op.Bucket)
				}
			}
			continue
		}
		if !ok {
			t = btree.NewG(32, kvLess)
			f.kv[op.Bucket] = t
		}
		// A put of an empty value arrives as no value at all (the wire form
		// omits empty values). Values are never modified in place, so
		// snapshots may share them.
		v := slices.Clone(op.Value)
		if v == nil {
			v = []byte{}
		}
		t.ReplaceOrInsert(kvItem{Key: op.Key, Value: v})
	}
	return nil
}
