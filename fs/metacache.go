package fs

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dockyard/dockyard/metaserver"
)

// MetaCache is a metaserver.API that answers positive lookups and getattrs
// from memory, kept fresh by the metaserver's change feed (Watch). Every
// other call goes to the metaserver; the mount's own changes update the
// cache from their replies.
//
// Why it is correct. Every change the feed delivers carries the index of
// the entry that made it (or a later one), and the cache applies them in
// order, so after applying a reply it holds every change up to its cursor.
// A reply to a read or a mutation sent while the cursor was C reflects at
// least every change up to C: those changes were applied by some node, so
// committed, before the request was sent, and the metaserver's reads and
// writes are linearizable. So a reply is cached as of C; a later change
// stamped above C that touches it removes it (or confirms it, when it
// carries the same value: the reply may be newer than the change, so it
// cannot simply be replaced); and a reply that arrives after such a change
// was applied is not cached at all, since it may predate it. A value the
// feed confirmed is ordered, and the feed's later changes replace it. Negative lookups are never answered from the cache (a
// name created on another mount must be found at once), opens fetch the
// inode afresh (GetInode is not cached), and stale-read contexts bypass
// the cache (their replies are not ordered).
//
// When the feed fails or falls behind by more than MetaCacheOptions.MaxLag,
// the cache drops everything and answers nothing until the feed is back.
type MetaCache struct {
	metaserver.API
	feed metaserver.Watcher
	opt  MetaCacheOptions
	log  *slog.Logger

	mu     sync.Mutex
	live   bool      // the feed is being followed
	cursor uint64    // every change stamped at or below it is applied
	fresh  time.Time // until when the last feed reply vouches for the cache
	dents  map[dentKey]dentVal
	attrs  map[metaserver.Ino]attrVal
	// local* hold, per name, inode and directory, the value of gen when
	// this mount last changed it: a read sent before that is not cached,
	// since it may predate the change and its own reply. localFloor plays
	// the part of recentFloor.
	gen        uint64
	localDents map[dentKey]uint64
	localAttrs map[metaserver.Ino]uint64
	localDirs  map[metaserver.Ino]uint64
	localFloor uint64
	// recent holds the stamp of the last change applied per name, inode
	// and directory, for refusing replies older than a change applied
	// while they were on the way. recentFloor: replies sent before it are
	// refused, since recent forgot what happened before it.
	recentDents map[dentKey]uint64
	recentAttrs map[metaserver.Ino]uint64
	recentDirs  map[metaserver.Ino]uint64
	recentFloor uint64

	// self is the client id of this mount's own changes (Change.Origin).
	self string
	// observer hears remote changes and drops; dropped is set by drop
	// until the observer was told.
	observer MetaObserver
	dropped  bool
	// epoch counts drops: within one epoch the feed was followed without a
	// gap (see Epoch).
	epoch uint64

	hits, misses atomic.Uint64
	drops        atomic.Uint64

	stop chan struct{}
	done chan struct{}
}

var _ metaserver.API = (*MetaCache)(nil)

type dentKey struct {
	dir  metaserver.Ino
	name string
}

// unordered marks a value taken from a reply (a read, or this mount's own
// mutation) rather than from the feed. Its exact place in the feed's order
// is not known (a reply says at least which changes it reflects, not which
// it does not), so a change of it from the feed is not known to be newer:
// one that carries the same value confirms it, any other removes it and the
// next reader fetches it afresh. Values from the feed replace each other in
// order.
type dentVal struct {
	ino       metaserver.Ino
	unordered bool
}

type attrVal struct {
	attr      metaserver.Attr
	unordered bool
}

// MetaCacheOptions tune a MetaCache. Zero values mean the defaults.
type MetaCacheOptions struct {
	// MaxEntries bounds the names plus attributes held, default 128 Ki
	// (a few tens of MiB). Past it, a quarter is forgotten.
	MaxEntries int
	// PollWait is how long one feed call waits for a change, default 1 s.
	PollWait time.Duration
	// MaxLag is how long the cache trusts itself beyond a feed call's wait
	// without hearing from the feed, default 1 s: the most a remote change
	// can go unseen when the feed stalls.
	MaxLag time.Duration
	Logger *slog.Logger
}

// Defaults of MetaCacheOptions.
const (
	DefaultMetaCacheEntries = 128 << 10
	DefaultMetaCachePoll    = time.Second
	DefaultMetaCacheMaxLag  = time.Second
)

// maxRecent bounds the recent-change tables; past it they are forgotten and
// replies in flight from before are refused (they are fetched again).
const maxRecent = 1 << 16

// feedRetry is the longest wait between attempts to reach a failed feed.
const feedRetry = time.Second

func (o MetaCacheOptions) withDefaults() MetaCacheOptions {
	if o.MaxEntries <= 0 {
		o.MaxEntries = DefaultMetaCacheEntries
	}
	if o.PollWait <= 0 {
		o.PollWait = DefaultMetaCachePoll
	}
	if o.MaxLag <= 0 {
		o.MaxLag = DefaultMetaCacheMaxLag
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// MetaObserver hears what a MetaCache learns from the feed, in the order it
// learns it; a FUSE mount passes it on to the kernel. Calls may come from
// the cache's feed loop and its watchdog at once; they must return quickly
// (the feed waits for them) and must not call back into the cache.
type MetaObserver interface {
	// Remote is called with the changes other clients made (Origin not
	// this client's), after the cache applied them.
	Remote(changes []metaserver.Change)
	// Dropped is called after the cache dropped everything because the
	// feed failed, lagged or was reset: changes may have gone unseen.
	Dropped()
}

// NewMetaCache wraps api with a metadata cache fed by feed (usually the
// same *metaserver.Client, whose ID tells this mount's own changes from
// others') and starts following the feed. Close stops it.
func NewMetaCache(api metaserver.API, feed metaserver.Watcher, opt MetaCacheOptions) *MetaCache {
	opt = opt.withDefaults()
	c := &MetaCache{
		API: api, feed: feed, opt: opt, log: opt.Logger,
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	for _, v := range []any{feed, api} {
		if id, ok := v.(interface{ ID() string }); ok {
			c.self = id.ID()
			break
		}
	}
	c.reset()
	go c.follow()
	return c
}

// Observe makes o hear remote changes and drops from now on; nil stops it.
func (c *MetaCache) Observe(o MetaObserver) {
	c.mu.Lock()
	c.observer = o
	c.mu.Unlock()
}

// Following reports whether the cache follows the feed now, so what it
// answers is kept fresh.
func (c *MetaCache) Following() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.usable(time.Now())
}

// Epoch reports whether the cache follows the feed now, and a number that
// changes whenever it stops: a caller that sees the same number, following,
// before and after a request knows every change since is (or will be) in the
// feed it follows.
func (c *MetaCache) Epoch() (uint64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ok := c.usable(time.Now())
	return c.epoch, ok
}

// tell passes remote changes and a drop to the observer; mu is not held.
func (c *MetaCache) tell(remote []metaserver.Change) {
	c.mu.Lock()
	o, dropped := c.observer, c.dropped
	c.dropped = false
	c.mu.Unlock()
	if o == nil {
		return
	}
	if dropped {
		// Everything is invalidated: the changes need no telling.
		o.Dropped()
		return
	}
	if len(remote) > 0 {
		o.Remote(remote)
	}
}

// Close stops following the feed; the cache answers nothing afterwards.
func (c *MetaCache) Close() error {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
	return nil
}

// MetaCacheStats counts what the cache did.
type MetaCacheStats struct {
	Hits, Misses uint64
	Drops        uint64 // times the whole cache was dropped (feed failed, lagged or was reset)
	Entries      int
	Live         bool
	Cursor       uint64 // every change of the feed up to it is applied
}

// Stats reports the counters and the current state.
func (c *MetaCache) Stats() MetaCacheStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	return MetaCacheStats{Hits: c.hits.Load(), Misses: c.misses.Load(), Drops: c.drops.Load(),
		Entries: len(c.dents) + len(c.attrs), Live: c.usable(time.Now()), Cursor: c.cursor}
}

// WaitLive blocks until the cache follows the feed, or ctx ends.
func (c *MetaCache) WaitLive(ctx context.Context) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		if c.Stats().Live {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// reset forgets everything; mu is held (or the cache is new).
func (c *MetaCache) reset() {
	c.dents = map[dentKey]dentVal{}
	c.attrs = map[metaserver.Ino]attrVal{}
	c.clearLocal()
	c.recentDents = map[dentKey]uint64{}
	c.recentAttrs = map[metaserver.Ino]uint64{}
	c.recentDirs = map[metaserver.Ino]uint64{}
	c.recentFloor = c.cursor
}

func (c *MetaCache) clearLocal() {
	c.localDents = map[dentKey]uint64{}
	c.localAttrs = map[metaserver.Ino]uint64{}
	c.localDirs = map[metaserver.Ino]uint64{}
	c.localFloor = c.gen
}

// touch records that this mount changes names, inodes and directories now;
// mu is held.
func (c *MetaCache) touch(names []dentKey, inos []metaserver.Ino, dirs ...metaserver.Ino) {
	c.gen++
	for _, k := range names {
		c.localDents[k] = c.gen
	}
	for _, ino := range inos {
		c.localAttrs[ino] = c.gen
	}
	for _, d := range dirs {
		c.localDirs[d] = c.gen
	}
	if len(c.localDents)+len(c.localAttrs)+len(c.localDirs) > maxRecent {
		c.clearLocal()
	}
}

// drop forgets everything and stops answering until the feed is followed
// again; mu is held.
func (c *MetaCache) drop(why string, err error) {
	if c.live {
		c.drops.Add(1)
		c.dropped = true
		c.log.Debug("metadata cache dropped", "why", why, "err", err)
	}
	c.live = false
	c.epoch++
	c.reset()
}

// usable reports whether the cache may answer; mu is held. A feed that went
// quiet past its wait plus MaxLag may have stopped: the cache then forgets
// everything rather than answer from a state that may be behind.
func (c *MetaCache) usable(now time.Time) bool {
	if !c.live {
		return false
	}
	if now.After(c.fresh) {
		c.drop("feed lags", nil)
		return false
	}
	return true
}

// follow applies the feed until Close.
func (c *MetaCache) follow() {
	defer close(c.done)
	defer func() {
		c.mu.Lock()
		c.drop("closed", nil)
		c.mu.Unlock()
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-c.stop
		cancel()
	}()
	// The watchdog notices a feed that went quiet even when nothing asks
	// the cache (the kernel may be answering from its own caches, which
	// the observer must then invalidate).
	go func() {
		t := time.NewTicker(min(c.opt.MaxLag/4, 250*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			c.mu.Lock()
			c.usable(time.Now())
			c.mu.Unlock()
			c.tell(nil)
		}
	}()
	backoff := 10 * time.Millisecond
	for ctx.Err() == nil {
		c.mu.Lock()
		live, since := c.live, c.cursor
		c.mu.Unlock()
		wait := c.opt.PollWait
		if !live {
			// Start from where the feed is now: the cache is empty.
			since, wait = ^uint64(0), 0
		}
		sent := time.Now()
		r, err := c.feed.Watch(ctx, since, wait)
		if ctx.Err() != nil {
			return
		}
		if err == nil && r.Reset && r.Applied == 0 {
			// The node is restarting its feed (it restored a snapshot).
			err = errors.New("the metaserver's change feed is restarting")
		}
		if err != nil {
			c.mu.Lock()
			c.drop("feed failed", err)
			c.mu.Unlock()
			c.tell(nil)
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, feedRetry)
			continue
		}
		backoff = 10 * time.Millisecond
		c.mu.Lock()
		switch {
		case r.Reset:
			c.drop("feed reset", nil)
			c.cursor = r.Applied
			c.reset()
			c.live = true
		case !live:
			c.cursor = r.Applied
			c.reset()
			c.live = true
		default:
			c.apply(r.Changes)
			c.cursor = max(c.cursor, r.Applied)
		}
		// The reply vouches for the state up to when the call was sent;
		// the next call may legitimately wait PollWait for a change.
		c.fresh = sent.Add(c.opt.PollWait + c.opt.MaxLag)
		var remote []metaserver.Change
		if c.observer != nil {
			for _, ch := range r.Changes {
				if c.self == "" || ch.Origin != c.self {
					remote = append(remote, ch)
				}
			}
		}
		c.mu.Unlock()
		c.tell(remote)
	}
}

// apply applies feed changes in order; mu is held.
func (c *MetaCache) apply(changes []metaserver.Change) {
	for i := range changes {
		ch := &changes[i]
		switch ch.Kind {
		case metaserver.ChangeEntry:
			k := dentKey{ch.Ino, ch.Name}
			c.recentDents[k] = ch.Index
			d, cached := c.dents[k]
			switch {
			case ch.Child == 0 || (cached && d.unordered && d.ino != ch.Child):
				delete(c.dents, k)
			case cached:
				c.dents[k] = dentVal{ino: ch.Child}
			}
		case metaserver.ChangeAttr:
			c.recentAttrs[ch.Ino] = ch.Index
			a, cached := c.attrs[ch.Ino]
			switch {
			case ch.Attr == nil || (cached && a.unordered && a.attr != *ch.Attr):
				delete(c.attrs, ch.Ino)
			case cached:
				c.attrs[ch.Ino] = attrVal{attr: *ch.Attr}
			}
		case metaserver.ChangeDir:
			c.recentDirs[ch.Ino] = ch.Index
			for k := range c.dents {
				if k.dir == ch.Ino {
					delete(c.dents, k)
				}
			}
		default:
			// A kind this client does not know may change anything: start
			// over from where the feed is.
			c.drop("unknown change kind "+ch.Kind, nil)
			return
		}
	}
	if len(c.recentDents)+len(c.recentAttrs)+len(c.recentDirs) > maxRecent {
		c.recentDents = map[dentKey]uint64{}
		c.recentAttrs = map[metaserver.Ino]uint64{}
		c.recentDirs = map[metaserver.Ino]uint64{}
		c.recentFloor = c.cursor
		for _, ch := range changes {
			c.recentFloor = max(c.recentFloor, ch.Index)
		}
	}
	c.bound()
}

// bound forgets a quarter of the entries when over the limit; mu is held.
// Map order is as good as any here: the entries are cheap to fetch again.
func (c *MetaCache) bound() {
	if len(c.dents)+len(c.attrs) <= c.opt.MaxEntries {
		return
	}
	n := (len(c.dents) + len(c.attrs)) / 4
	for k := range c.dents {
		if n <= 0 {
			break
		}
		delete(c.dents, k)
		n--
	}
	for k := range c.attrs {
		if n <= 0 {
			break
		}
		delete(c.attrs, k)
		n--
	}
}

// ticket is where the cache stood when a request was sent: the feed's
// cursor and this mount's change count. ok is false when the cache is not
// following the feed (the reply is then not cached).
type ticket struct {
	at, gen uint64
	ok      bool
}

// ticketLocked returns a ticket; mu is held.
func (c *MetaCache) ticketLocked(ctx context.Context) ticket {
	if metaserver.StaleAllowed(ctx) || !c.usable(time.Now()) {
		return ticket{}
	}
	return ticket{at: c.cursor, gen: c.gen, ok: true}
}

func (c *MetaCache) ticket(ctx context.Context) ticket {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ticketLocked(ctx)
}

// admits reports whether a reply sent at t may still be cached; mu is held.
func (c *MetaCache) admits(t ticket) bool {
	return t.ok && c.live && t.at >= c.recentFloor && t.gen >= c.localFloor
}

// putAttr caches a read's attributes if neither the feed nor this mount
// changed the inode since the request was sent; mu is held.
func (c *MetaCache) putAttr(t ticket, a metaserver.Attr) {
	if c.admits(t) && c.recentAttrs[a.Ino] <= t.at && c.localAttrs[a.Ino] <= t.gen {
		c.attrs[a.Ino] = attrVal{attr: a, unordered: true}
	}
}

// putDent caches a read's name; mu is held.
func (c *MetaCache) putDent(t ticket, dir metaserver.Ino, name string, ino metaserver.Ino) {
	k := dentKey{dir, name}
	if c.admits(t) && c.recentDents[k] <= t.at && c.recentDirs[dir] <= t.at &&
		c.localDents[k] <= t.gen && c.localDirs[dir] <= t.gen {
		c.dents[k] = dentVal{ino: ino, unordered: true}
	}
}

func (c *MetaCache) fill(t ticket, f func()) {
	if !t.ok {
		return
	}
	c.mu.Lock()
	f()
	c.bound()
	c.mu.Unlock()
}

// forget drops names and attributes a mutation of this mount changes (or
// may have changed, when it failed in flight), and refuses reads sent
// before now. It returns a ticket taken after it, for the mutation itself.
func (c *MetaCache) forget(ctx context.Context, names []dentKey, inos ...metaserver.Ino) ticket {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range names {
		if d, ok := c.dents[k]; ok {
			// The inode the name held changes too (nlink, ctime).
			delete(c.attrs, d.ino)
			inos = append(inos, d.ino)
			delete(c.dents, k)
		}
	}
	for _, ino := range inos {
		delete(c.attrs, ino)
	}
	c.touch(names, inos)
	return c.ticketLocked(ctx)
}

// settle caches what this mount's mutation answered: a name (name.dir
// 0: none) and attributes. Reads sent before are refused from now on, as
// they may predate the mutation. When the feed changed the name or inode
// while the mutation was on its way, neither the reply nor anything cached
// meanwhile is known to be the latest: it is dropped, and the next reader
// asks the metaserver.
func (c *MetaCache) settle(t ticket, name dentKey, a metaserver.Attr) {
	if !t.ok {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var names []dentKey
	if name.dir != 0 {
		names = append(names, name)
	}
	c.touch(names, []metaserver.Ino{a.Ino})
	ok := c.admits(t)
	if name.dir != 0 {
		if ok && c.recentDents[name] <= t.at && c.recentDirs[name.dir] <= t.at {
			c.dents[name] = dentVal{ino: a.Ino, unordered: true}
		} else {
			delete(c.dents, name)
		}
	}
	if ok && c.recentAttrs[a.Ino] <= t.at {
		c.attrs[a.Ino] = attrVal{attr: a, unordered: true}
	} else {
		delete(c.attrs, a.Ino)
	}
	c.bound()
}

// --- reads ---

func (c *MetaCache) Lookup(ctx context.Context, parent metaserver.Ino, name string) (metaserver.Attr, error) {
	c.mu.Lock()
	t := c.ticketLocked(ctx)
	if t.ok {
		if d, ok := c.dents[dentKey{parent, name}]; ok {
			if a, ok := c.attrs[d.ino]; ok {
				c.mu.Unlock()
				c.hits.Add(1)
				return a.attr, nil
			}
		}
	}
	c.mu.Unlock()
	if t.ok {
		c.misses.Add(1)
	}
	a, err := c.API.Lookup(ctx, parent, name)
	if err == nil {
		c.fill(t, func() {
			c.putDent(t, parent, name, a.Ino)
			c.putAttr(t, a)
		})
	}
	return a, err
}

func (c *MetaCache) GetAttr(ctx context.Context, ino metaserver.Ino) (metaserver.Attr, error) {
	c.mu.Lock()
	t := c.ticketLocked(ctx)
	if t.ok {
		if a, ok := c.attrs[ino]; ok {
			c.mu.Unlock()
			c.hits.Add(1)
			return a.attr, nil
		}
	}
	c.mu.Unlock()
	if t.ok {
		c.misses.Add(1)
	}
	a, err := c.API.GetAttr(ctx, ino)
	if err == nil {
		c.fill(t, func() { c.putAttr(t, a) })
	}
	return a, err
}

// GetInode always asks the metaserver (an open revalidates: close-to-open
// consistency) and refreshes the cached attributes with the answer.
func (c *MetaCache) GetInode(ctx context.Context, ino metaserver.Ino) (metaserver.Inode, error) {
	t := c.ticket(ctx)
	in, err := c.API.GetInode(ctx, ino)
	if err == nil {
		c.fill(t, func() { c.putAttr(t, in.Attr) })
	} else if errors.Is(err, syscall.ENOENT) {
		c.forget(ctx, nil, ino)
	}
	return in, err
}

func (c *MetaCache) ReadDir(ctx context.Context, dir metaserver.Ino, after string, limit int, plus bool) ([]metaserver.DirEntry, error) {
	t := c.ticket(ctx)
	es, err := c.API.ReadDir(ctx, dir, after, limit, plus)
	if err == nil && plus {
		c.fill(t, func() {
			for _, e := range es {
				if e.Attr != nil {
					c.putDent(t, dir, e.Name, e.Ino)
					c.putAttr(t, *e.Attr)
				}
			}
		})
	}
	return es, err
}

// --- this mount's mutations ---

func (c *MetaCache) SetAttr(ctx context.Context, ino metaserver.Ino, in metaserver.SetAttrIn) (metaserver.Attr, error) {
	t := c.forget(ctx, nil, ino)
	a, err := c.API.SetAttr(ctx, ino, in)
	if err == nil {
		c.settle(t, dentKey{}, a)
	} else {
		c.forget(ctx, nil, ino)
	}
	return a, err
}

func (c *MetaCache) Create(ctx context.Context, in metaserver.CreateIn) (metaserver.Attr, error) {
	k := dentKey{in.Parent, in.Name}
	// The parent's mtime (and nlink, for a directory) change.
	t := c.forget(ctx, []dentKey{k}, in.Parent)
	a, err := c.API.Create(ctx, in)
	if err == nil {
		c.settle(t, k, a)
	}
	c.forget(ctx, nil, in.Parent)
	return a, err
}

func (c *MetaCache) Link(ctx context.Context, ino metaserver.Ino, newParent metaserver.Ino, newName string) (metaserver.Attr, error) {
	k := dentKey{newParent, newName}
	t := c.forget(ctx, []dentKey{k}, ino, newParent)
	a, err := c.API.Link(ctx, ino, newParent, newName)
	if err == nil {
		c.settle(t, k, a)
	} else {
		c.forget(ctx, nil, ino)
	}
	c.forget(ctx, nil, newParent)
	return a, err
}

func (c *MetaCache) Unlink(ctx context.Context, parent metaserver.Ino, name string) error {
	names := []dentKey{{parent, name}}
	c.forget(ctx, names, parent)
	err := c.API.Unlink(ctx, parent, name)
	c.forget(ctx, names, parent)
	return err
}

// ForgetInode drops the cached attributes of ino and refuses replies to
// reads of it sent before now. Unlink and Rename reach the inode under a
// name through the names the cache holds; a caller that knows which inode
// the name held (the kernel does) tells the cache after the mutation, so the
// inode's new link count and ctime are never answered stale from a name the
// cache did not hold.
func (c *MetaCache) ForgetInode(ctx context.Context, ino metaserver.Ino) {
	c.forget(ctx, nil, ino)
}

func (c *MetaCache) Rmdir(ctx context.Context, parent metaserver.Ino, name string) error {
	names := []dentKey{{parent, name}}
	c.forget(ctx, names, parent)
	err := c.API.Rmdir(ctx, parent, name)
	c.forget(ctx, names, parent)
	return err
}

func (c *MetaCache) Rename(ctx context.Context, oldParent metaserver.Ino, oldName string, newParent metaserver.Ino, newName string, flags uint32) error {
	names := []dentKey{{oldParent, oldName}, {newParent, newName}}
	c.forget(ctx, names, oldParent, newParent)
	err := c.API.Rename(ctx, oldParent, oldName, newParent, newName, flags)
	c.forget(ctx, names, oldParent, newParent)
	return err
}

func (c *MetaCache) SetXattr(ctx context.Context, ino metaserver.Ino, name string, value []byte, flags int) error {
	c.forget(ctx, nil, ino)
	err := c.API.SetXattr(ctx, ino, name, value, flags)
	c.forget(ctx, nil, ino) // ctime changed
	return err
}

func (c *MetaCache) RemoveXattr(ctx context.Context, ino metaserver.Ino, name string) error {
	c.forget(ctx, nil, ino)
	err := c.API.RemoveXattr(ctx, ino, name)
	c.forget(ctx, nil, ino)
	return err
}

func (c *MetaCache) CreateTree(ctx context.Context, parent metaserver.Ino, entries []metaserver.TreeEntry) ([]metaserver.Ino, error) {
	inos, err := c.API.CreateTree(ctx, parent, entries)
	c.mu.Lock()
	for k := range c.dents {
		if k.dir == parent {
			delete(c.dents, k)
		}
	}
	delete(c.attrs, parent)
	c.touch(nil, []metaserver.Ino{parent}, parent)
	c.mu.Unlock()
	return inos, err
}

// CloneTree adds one name to newParent, as Create does; the inodes under
// it are new, so nothing cached describes them.
func (c *MetaCache) CloneTree(ctx context.Context, src metaserver.Ino, newParent metaserver.Ino, newName string) (metaserver.Attr, error) {
	k := dentKey{newParent, newName}
	t := c.forget(ctx, []dentKey{k}, newParent)
	a, err := c.API.CloneTree(ctx, src, newParent, newName)
	if err == nil {
		c.settle(t, k, a)
	}
	c.forget(ctx, nil, newParent)
	return a, err
}

func (c *MetaCache) CommitExtents(ctx context.Context, ino metaserver.Ino, extents []metaserver.Extent, sums map[metaserver.ChunkID][]uint64, newSize uint64) (metaserver.Attr, error) {
	t := c.forget(ctx, nil, ino)
	a, err := c.API.CommitExtents(ctx, ino, extents, sums, newSize)
	if err == nil {
		c.settle(t, dentKey{}, a)
	} else {
		c.forget(ctx, nil, ino)
	}
	return a, err
}
