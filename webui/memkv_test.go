package webui

import (
	"bytes"
	"context"
	"sort"
	"strings"
	"sync"

	"github.com/dockyard/dockyard/metaserver"
)

// memKV is an in-memory metaserver.KV with the same transaction semantics as
// the metaserver's: all conditions are checked, then all ops applied, under
// one lock.
type memKV struct {
	mu   sync.Mutex
	data map[string]map[string][]byte
	txns int
}

var _ metaserver.KV = (*memKV)(nil)

func newMemKV() *memKV { return &memKV{data: map[string]map[string][]byte{}} }

func (m *memKV) KVGet(_ context.Context, bucket, key string) ([]byte, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.data[bucket][key]
	return bytes.Clone(v), ok, nil
}

func (m *memKV) KVList(_ context.Context, bucket, prefix, after string, limit int) ([]metaserver.KVPair, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []metaserver.KVPair
	for k, v := range m.data[bucket] {
		if strings.HasPrefix(k, prefix) && k > after {
			out = append(out, metaserver.KVPair{Key: k, Value: bytes.Clone(v)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

func (m *memKV) KVTxn(_ context.Context, conds []metaserver.KVCond, ops []metaserver.KVOp) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, c := range conds {
		v, ok := m.data[c.Bucket][c.Key]
		if ok != c.Exists || (ok && c.Value != nil && !bytes.Equal(v, c.Value)) {
			return metaserver.ErrConflict
		}
	}
	for _, op := range ops {
		b := m.data[op.Bucket]
		if b == nil {
			b = map[string][]byte{}
			m.data[op.Bucket] = b
		}
		if op.Delete {
			delete(b, op.Key)
		} else {
			b[op.Key] = bytes.Clone(op.Value)
		}
	}
	m.txns++
	return nil
}
