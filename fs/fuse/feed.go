package fuse

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/metaserver"
)

// kernelFeed passes other clients' changes, as the metadata cache learns
// them from the metaserver's change feed, on to the kernel, so the kernel may
// keep names and attributes for Options.FeedTimeout instead of a second.
//
// Why this is safe: the cache applies a change before it is passed on, and
// the kernel orders an invalidation after a lookup or getattr that is in
// flight for the same directory or inode (it takes the directory's lock; it
// drops attribute replies older than the invalidation), so a reply read from
// the cache before the change cannot outlive the notification. Only replies
// read while the cache followed the feed for the whole request get the long
// timeouts (see mark); when the cache drops itself (the feed failed, lagged
// or was reset) everything the kernel holds is invalidated, since changes may
// have gone unseen. This mount's own changes are not passed on: the kernel
// made them itself and updates its caches for them.
type kernelFeed struct {
	m     *mountState
	cache *dfs.MetaCache

	mu    sync.Mutex
	nodes map[metaserver.Ino]*node // the kernel's inodes, for notifications

	notices  chan []metaserver.Change // nil slice: invalidate everything
	overflow atomic.Bool              // a notice was lost: invalidate everything
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once

	// kept are the names of files with cached pages that invalidateAll
	// left in the kernel after checking them against the metaserver; they
	// are checked again every recheckEvery until the cache follows the feed
	// again, and once more then (only run touches it).
	kept map[keptEntry]metaserver.Ino
}

// keptEntry is a name the kernel holds: a child of dir.
type keptEntry struct {
	dir  *node
	name string
}

const (
	// recheckEvery is how often names kept across a drop of the metadata
	// cache are checked while the cache does not follow the feed: as often
	// as the short attribute timeout would have had the kernel ask.
	recheckEvery = time.Second
	// maxKept bounds the names checked one by one at a drop; past it the
	// rest are invalidated, as before, so a drop never turns into
	// thousands of lookups.
	maxKept = 1024
)

// notifyQueue bounds the batches of changes waiting for the kernel; past it
// the feed gives up on precision and invalidates everything once.
const notifyQueue = 256

func newKernelFeed(m *mountState, cache *dfs.MetaCache) *kernelFeed {
	k := &kernelFeed{m: m, cache: cache, nodes: map[metaserver.Ino]*node{},
		notices: make(chan []metaserver.Change, notifyQueue), stop: make(chan struct{}), done: make(chan struct{})}
	go k.run()
	cache.Observe(k)
	return k
}

func (k *kernelFeed) close() {
	k.once.Do(func() {
		k.cache.Observe(nil)
		close(k.stop)
		<-k.done
	})
}

// register records the node the kernel knows for its inode.
func (k *kernelFeed) register(n *node) {
	k.mu.Lock()
	k.nodes[n.ino] = n
	k.mu.Unlock()
}

// forget drops n once the kernel forgot it.
func (k *kernelFeed) forget(n *node) {
	k.mu.Lock()
	if k.nodes[n.ino] == n {
		delete(k.nodes, n.ino)
	}
	k.mu.Unlock()
}

func (k *kernelFeed) node(ino metaserver.Ino) *node {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.nodes[ino]
}

// Remote implements dfs.MetaObserver. It never blocks the cache.
func (k *kernelFeed) Remote(changes []metaserver.Change) {
	select {
	case k.notices <- changes:
	default:
		k.overflow.Store(true)
	}
}

// Dropped implements dfs.MetaObserver.
func (k *kernelFeed) Dropped() {
	select {
	case k.notices <- nil:
	default:
		k.overflow.Store(true)
	}
}

// run sends the notifications from a goroutine of its own: a notification
// waits for the kernel's locks, which FUSE requests in flight may hold, and
// neither the cache nor a request must wait for it.
func (k *kernelFeed) run() {
	defer close(k.done)
	// overflow is also looked at on a timer, in case it was set when no
	// notice came after.
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	lastCheck := time.Now()
	for {
		select {
		case <-k.stop:
			return
		case changes := <-k.notices:
			if changes == nil {
				k.invalidateAll()
				lastCheck = time.Now()
			} else {
				k.apply(changes)
			}
		case <-t.C:
		}
		if k.overflow.Swap(false) {
			k.invalidateAll()
			lastCheck = time.Now()
		}
		if len(k.kept) > 0 {
			_, following := k.cache.Epoch()
			if following || time.Since(lastCheck) >= recheckEvery {
				k.recheck()
				lastCheck = time.Now()
				if following {
					// From here on the feed brings every change: this
					// last check covers the time it did not.
					clear(k.kept)
				}
			}
		}
	}
}

// ignore reports notification errors that only mean the kernel holds
// nothing to invalidate.
func ignore(e syscall.Errno) bool { return e == 0 || e == syscall.ENOENT || e == syscall.ENOSYS }

func (k *kernelFeed) apply(changes []metaserver.Change) {
	for _, ch := range changes {
		n := k.node(ch.Ino)
		if n == nil {
			continue // the kernel has nothing of it
		}
		var e syscall.Errno
		switch ch.Kind {
		case metaserver.ChangeEntry:
			e = n.NotifyEntry(ch.Name)
		default:
			// Attributes only (offset -1): the page cache follows the
			// content generation at the next open (close-to-open).
			e = n.NotifyContent(-1, 0)
		}
		if !ignore(e) {
			k.m.log.Debug("kernel notification failed", "ino", uint64(ch.Ino), "kind", ch.Kind, "errno", e.Error())
		}
	}
}

// invalidateAll makes the kernel ask again for every attribute it holds,
// and for every name but those of files whose pages it caches and which the
// metaserver confirms.
//
// Why those are spared: invalidating a name unhashes the kernel's dentry,
// and FUSE evicts an inode as soon as nothing refers to it, so every closed
// file would lose its page cache with its name, and the next read of an
// unchanged file would fetch it all again. A drop happens whenever the feed
// lags by more than MaxLag, which a loaded host sees. The kernel cannot be
// told to merely revalidate a name (FUSE's EXPIRE_ONLY, which go-fuse does
// not offer), so such a name is checked here instead: still the same inode,
// it stays, and it is checked again every recheckEvery until the cache
// follows the feed, and once more then. A change made meanwhile is seen
// within about a second, as the short timeouts would have it; a lookup that
// fails invalidates the name.
func (k *kernelFeed) invalidateAll() {
	k.mu.Lock()
	nodes := make([]*node, 0, len(k.nodes))
	for _, n := range k.nodes {
		nodes = append(nodes, n)
	}
	k.mu.Unlock()
	if k.kept == nil {
		k.kept = map[keptEntry]metaserver.Ino{}
	}
	reachable := true
	for _, n := range nodes {
		_ = n.NotifyContent(-1, 0)
		for name, ch := range n.Children() {
			c, ok := ch.Operations().(*node)
			if ok && reachable && len(k.kept) < maxKept && c.cachesPages() {
				same, err := k.confirm(n, name, c.ino)
				if err != nil {
					// The metaserver does not answer: forget names as
					// before rather than wait on it name by name.
					reachable = false
				} else if same {
					k.kept[keptEntry{n, name}] = c.ino
					continue
				}
			}
			_ = n.NotifyEntry(name)
		}
	}
}

// recheck checks the kept names again, invalidating those that changed, and
// all of them once the metaserver fails to answer.
func (k *kernelFeed) recheck() {
	reachable := true
	for e, ino := range k.kept {
		if reachable {
			same, err := k.confirm(e.dir, e.name, ino)
			reachable = err == nil
			if same {
				continue
			}
		}
		_ = e.dir.NotifyEntry(e.name)
		delete(k.kept, e)
	}
}

// confirm reports whether the metaserver itself, not the dropped cache,
// still resolves name in dir to ino. Only a failure to ask is an error; a
// name that is gone is not the same.
func (k *kernelFeed) confirm(dir *node, name string, ino metaserver.Ino) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), recheckEvery)
	defer cancel()
	a, err := k.cache.API.Lookup(ctx, dir.ino, name)
	if errors.Is(err, syscall.ENOENT) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return a.Ino == ino, nil
}

// cachesPages reports whether the kernel may hold pages of n: a regular file
// opened through this mount.
func (n *node) cachesPages() bool {
	if n.StableAttr().Mode&syscall.S_IFMT != syscall.S_IFREG {
		return false
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.genKnown
}

// feedMark is where the cache stood when a request started.
type feedMark struct {
	epoch     uint64
	following bool
}

// mark notes whether the cache follows the feed as a request starts.
func (m *mountState) mark() feedMark {
	if m.feed == nil {
		return feedMark{}
	}
	e, ok := m.feed.cache.Epoch()
	return feedMark{epoch: e, following: ok}
}

// timeouts returns the entry and attribute timeouts for a reply to a
// request that started at mk: the long ones only if the cache followed the
// feed throughout (a reply read outside that may predate changes the feed
// will never bring).
func (m *mountState) timeouts(mk feedMark) (entry, attr time.Duration) {
	if mk.following {
		if e, ok := m.feed.cache.Epoch(); ok && e == mk.epoch {
			// Longer timeouts asked for explicitly stay longer.
			return max(m.opt.FeedTimeout, m.opt.EntryTimeout), max(m.opt.FeedTimeout, m.opt.AttrTimeout)
		}
	}
	return m.opt.EntryTimeout, m.opt.AttrTimeout
}

var _ gofs.NodeOnForgetter = (*node)(nil)

// OnForget drops the node from the feed's table once the kernel forgot it.
func (n *node) OnForget() {
	if n.m.feed != nil {
		n.m.feed.forget(n)
	}
}
