package store

import (
	"fmt"
	"sync"
)

// Group commit (WithGroupCommit). A Put that fsyncs its own file and then its
// directory costs two journal commits of its own; `dockyard serve` runs six
// chunkservers on one disk and the fs client has dozens of shard Puts in
// flight, so a third of the write path's CPU went to those commits.
//
// With group commit, Puts whose files are written wait for one flush of the whole file
// system (syncfs), which makes all their data durable at once, then rename
// their files into place and wait for a second flush, which makes the renames
// durable. Each flush covers every Put that was waiting when it started; Puts
// arriving during a flush wait for the next one, because the running flush may
// have begun before their bytes were written. So an acknowledged shard is on
// stable storage with its name, and the data of a file is always durable
// before the name that makes it visible: the promise of the per-file path.
//
// Stores on the same file system share one group, so six chunkservers on one
// disk issue one flush at a time between them instead of six.
//
// It is not the default: a flush of the file system also writes back what
// other programs left dirty there (a client pulling an image onto the same
// disk) and holds up their writes while it runs, which cost more wall time
// than the CPU it saved when the registry shared its disk with its clients.

// fsFlusher makes everything written to one file system durable.
type fsFlusher interface {
	flush() error
	close() error
}

// syncGroup batches callers of wait into rounds of one flush each.
type syncGroup struct {
	f fsFlusher

	mu      sync.Mutex
	next    *syncRound // collecting waiters for the round after the running one
	running bool
	refs    int // stores sharing the group
	key     uint64
}

type syncRound struct {
	done chan struct{}
	err  error
}

// wait returns once a flush that started after the call began has finished,
// with that flush's error.
func (g *syncGroup) wait() error {
	g.mu.Lock()
	if g.next == nil {
		g.next = &syncRound{done: make(chan struct{})}
	}
	r := g.next
	if !g.running {
		g.startLocked()
	}
	g.mu.Unlock()
	<-r.done
	return r.err
}

// startLocked runs the collected round; when it finishes, the round collected
// meanwhile (if any) starts at once.
func (g *syncGroup) startLocked() {
	r := g.next
	g.next = nil
	g.running = true
	go func() {
		err := g.f.flush()
		if err != nil {
			err = fmt.Errorf("flushing the file system: %w", err)
		}
		r.err = err
		close(r.done)
		g.mu.Lock()
		g.running = false
		if g.next != nil {
			g.startLocked()
		}
		g.mu.Unlock()
	}()
}

// groups holds one syncGroup per file system (by device number) while any
// store on it is open.
var groups struct {
	sync.Mutex
	m map[uint64]*syncGroup
}

// joinGroup returns the group of the file system holding dir, creating it
// (with a flusher opened on dir) for the first store there.
func joinGroup(dir string) (*syncGroup, error) {
	dev, err := deviceOf(dir)
	if err != nil {
		return nil, err
	}
	groups.Lock()
	defer groups.Unlock()
	if g := groups.m[dev]; g != nil {
		g.refs++
		return g, nil
	}
	f, err := openFlusher(dir)
	if err != nil {
		return nil, err
	}
	if groups.m == nil {
		groups.m = map[uint64]*syncGroup{}
	}
	g := &syncGroup{f: f, refs: 1, key: dev}
	groups.m[dev] = g
	return g, nil
}

// leave drops a store's reference; the last one closes the flusher.
func (g *syncGroup) leave() error {
	groups.Lock()
	defer groups.Unlock()
	g.refs--
	if g.refs > 0 {
		return nil
	}
	delete(groups.m, g.key)
	return g.f.close()
}
