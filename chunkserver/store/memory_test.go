package store_test

import (
	"testing"

	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/chunkserver/store/storetest"
)

func TestMemoryConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, capacity int64) storetest.Harness {
		m := store.NewMemory(capacity)
		return storetest.Harness{Store: m, Corrupt: m.FlipByte}
	})
}
