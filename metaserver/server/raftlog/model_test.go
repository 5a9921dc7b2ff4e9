package raftlog

import (
	"math/rand/v2"
	"os"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// TestRandomOpsAgainstModel runs random appends, head and tail deletes, full
// deletes, clean reopens and crashes in the middle of an append against a
// plain slice, over tiny segments so every operation meets segment
// boundaries. After each step the store must hold exactly the model.
func TestRandomOpsAgainstModel(t *testing.T) {
	for seed := uint64(1); seed <= 4; seed++ {
		rng := rand.New(rand.NewPCG(seed, 99))
		opts := Options{SegmentSize: int64(1024 + rng.IntN(3072)), NoSync: true,
			SyncDelay: time.Duration(rng.IntN(2)) * time.Millisecond}
		dir := t.TempDir()
		s, err := Open(dir, opts)
		if err != nil {
			t.Fatal(err)
		}
		var model []*raft.Log
		term := uint64(1)
		next := func() uint64 {
			if len(model) == 0 {
				return 1 + rng.Uint64N(1000)
			}
			return model[len(model)-1].Index + 1
		}
		for step := 0; step < 250; step++ {
			switch op := rng.IntN(20); {
			case op < 10: // append
				from := next()
				batch := entries(from, from+uint64(rng.IntN(20)), term)
				if rng.IntN(2) == 0 {
					store(t, s, batch)
				} else {
					// A leader's append: deletes, restarts and rollovers
					// must cope with a sync still owed.
					storeDeferred(t, s, batch)
				}
				model = append(model, batch...)
			case op < 12 && len(model) > 1: // compaction
				k := rng.IntN(len(model) - 1)
				if err := s.DeleteRange(model[0].Index, model[k].Index); err != nil {
					t.Fatalf("seed %d step %d: head delete: %v", seed, step, err)
				}
				model = model[k+1:]
			case op < 14 && len(model) > 1: // conflict with a new leader
				k := 1 + rng.IntN(len(model)-1)
				if err := s.DeleteRange(model[k].Index, model[len(model)-1].Index); err != nil {
					t.Fatalf("seed %d step %d: tail delete: %v", seed, step, err)
				}
				model = model[:k]
				term++
			case op == 14 && len(model) > 0: // snapshot installed
				if err := s.DeleteRange(model[0].Index, model[len(model)-1].Index); err != nil {
					t.Fatalf("seed %d step %d: delete all: %v", seed, step, err)
				}
				model = nil
			case op < 17: // clean restart
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				if s, err = Open(dir, opts); err != nil {
					t.Fatalf("seed %d step %d: reopen: %v", seed, step, err)
				}
			default: // crash in the middle of an append
				from := next()
				batch := entries(from, from+uint64(rng.IntN(20)), term)
				store(t, s, batch)
				tail := s.segs[len(s.segs)-1]
				// Only the part of the batch in the last segment is cut; what
				// went to earlier segments was synced before it.
				firstInTail := max(from, tail.base)
				startOff, _ := tail.span(firstInTail)
				cut := startOff + rng.Int64N(tail.end-startOff+1)
				// A record survives if the cut leaves it as it was: it ends
				// before the cut, or what is cut off was zeros anyway.
				old, err := os.ReadFile(tail.path)
				if err != nil {
					t.Fatal(err)
				}
				survive := firstInTail - 1
				for i := firstInTail; i <= tail.last(); i++ {
					if _, e := tail.span(i); e > cut && !allZero(old[cut:e]) {
						break
					}
					survive = i
				}
				path, end := tail.path, tail.end
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				zeroRange(t, path, cut, end)
				for _, l := range batch {
					if l.Index <= survive {
						model = append(model, l)
					}
				}
				if s, err = Open(dir, opts); err != nil {
					t.Fatalf("seed %d step %d: open after a crash: %v", seed, step, err)
				}
			}
			checkRange(t, s, model)
			if rng.IntN(4) == 0 && len(model) > 0 {
				waitDurable(t, s, model[len(model)-1].Index)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func zeroRange(t testing.TB, path string, from, to int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(make([]byte, to-from), from); err != nil {
		t.Fatal(err)
	}
}
