package fuse

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dockyard/dockyard/metaserver"
)

// Defaults of the whole-file cache behind passthrough.
const (
	// DefaultFileCacheBytes bounds the local copies when the cache file
	// system is large; on a smaller one a tenth of it is used.
	DefaultFileCacheBytes = 10 << 30
	// DefaultFileCacheMinSize: smaller files are not copied. Their page
	// cache serves a second read well enough, and for them the fixed cost
	// of a copy (a local file made, opened at every open) and the writer
	// rule (see passthrough.go) outweigh the gain.
	DefaultFileCacheMinSize = 1 << 20
	// copyWindow is how far ahead of the filled prefix a READ may land and
	// still count as part of one sequential pass: the kernel keeps a few
	// read-ahead requests in flight and answers may arrive out of order.
	// Anything further is another pattern, and the copy is given up.
	copyWindow = 32 << 20
	// maxCopyRanges bounds the filled ranges a copy tracks while the gaps
	// between them close; more means the reader is not sequential.
	maxCopyRanges = 64
)

// errCopyGivenUp is why a copy stopped; it never reaches the caller of a
// read, which was served from the file system either way.
var errCopyGivenUp = errors.New("local copy given up")

// fileCache holds local copies of whole files, one per inode, each filled
// from the bytes READ requests return while a reader goes through the file
// from offset 0. A complete copy of the generation the metaserver still has
// is what passthrough opens hand to the kernel. Copies live only as long as
// the mount: the directory is emptied when the mount starts and removed
// when it ends, so a copy is never trusted across sessions.
type fileCache struct {
	dir     string
	budget  int64
	maxFile int64
	minFile int64
	log     *slog.Logger
	mu      sync.Mutex
	copies  map[metaserver.Ino]*fileCopy
	lru     *list.List // of *fileCopy, most recently used at the front
	used    int64      // bytes reserved by copies (their full size)
	writers map[metaserver.Ino]int
	// gaveUp remembers the generation whose copy a reader's pattern
	// made us give up: it is started again only by a READ at offset 0,
	// not by every random read that lands near the start.
	gaveUp   map[metaserver.Ino]uint64
	complete int64 // copies completed, for Stats
}

// maxGaveUp bounds gaveUp; when full it is simply forgotten.
const maxGaveUp = 4096

// gaveUpOn reports whether a copy of ino at gen was given up.
func (c *fileCache) gaveUpOn(ino metaserver.Ino, gen uint64) bool {
	g, ok := c.gaveUp[ino]
	return ok && g == gen
}

// fileCopy is the local copy of one generation of one file.
type fileCopy struct {
	ino  metaserver.Ino
	gen  uint64
	size int64
	path string
	// f is open for writing while the copy fills; nil once complete or
	// dropped, when jobs, the writer goroutine's queue, is closed too.
	f    *os.File
	jobs chan copyJob
	// filled is the sorted, disjoint list of byte ranges claimed by a
	// READ: written, or queued for writing (pending counts those).
	filled  []span
	pending int
	// settled is closed when the copy is complete or dropped.
	settled chan struct{}
	done    bool
	// dropped: no longer in the cache; the file is removed once no
	// passthrough handle reads it (pins).
	dropped bool
	pins    int
	elem    *list.Element
}

type span struct{ lo, hi int64 }

// newFileCache makes a cache in dir/files/<pid>, after removing what
// mounts that no longer run left there. budget <= 0 means the default:
// DefaultFileCacheBytes or a tenth of the file system holding dir, whichever
// is less.
func newFileCache(dir string, budget, minFile int64, log *slog.Logger) (*fileCache, error) {
	root := filepath.Join(dir, "files")
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("file cache: %w", err)
	}
	sweepFileCaches(root, log)
	own := filepath.Join(root, strconv.Itoa(os.Getpid()))
	if err := os.RemoveAll(own); err != nil {
		return nil, fmt.Errorf("file cache: emptying %s: %w", own, err)
	}
	if err := os.Mkdir(own, 0o700); err != nil {
		return nil, fmt.Errorf("file cache: %w", err)
	}
	if budget <= 0 {
		budget = DefaultFileCacheBytes
		var st unix.Statfs_t
		if err := unix.Statfs(own, &st); err == nil {
			budget = min(budget, int64(st.Blocks)*int64(st.Bsize)/10)
		}
	}
	if minFile <= 0 {
		minFile = DefaultFileCacheMinSize
	}
	return &fileCache{
		dir: own, budget: budget, maxFile: budget, minFile: minFile, log: log,
		copies: map[metaserver.Ino]*fileCopy{}, lru: list.New(), writers: map[metaserver.Ino]int{}, gaveUp: map[metaserver.Ino]uint64{},
	}, nil
}

// sweepFileCaches removes the copies of mounts whose process is gone: they
// were never verified against the metaserver after it ended.
func sweepFileCaches(root string, log *slog.Logger) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			if err := os.RemoveAll(filepath.Join(root, e.Name())); err != nil {
				log.Warn("removing a stale file cache", "dir", filepath.Join(root, e.Name()), "err", err)
			}
		}
	}
}

// close drops every copy and removes the directory. Passthrough handles
// still open keep reading the files they hold open.
func (c *fileCache) close() error {
	c.mu.Lock()
	for _, cp := range c.copies {
		c.dropLocked(cp)
	}
	c.mu.Unlock()
	return os.RemoveAll(c.dir)
}

// fill records that a READ of ino returned bufs at off from generation gen
// of a file of size bytes, and has them written into the copy. A READ
// near the start begins a copy when none exists. Failures only give the
// copy up.
//
// The write is queued for the copy's writer goroutine, so the READ reply is
// not held up by it; fill then returns true and calls done once bufs are
// no longer needed. With the queue full it writes them itself, and returns
// false (as when it copies nothing): done is not called and bufs are free
// when fill returns.
func (c *fileCache) fill(ino metaserver.Ino, gen uint64, size, off int64, bufs [][]byte, n int, done func()) bool {
	if n <= 0 {
		return false
	}
	c.mu.Lock()
	cp := c.copies[ino]
	if cp != nil && cp.gen != gen {
		c.dropLocked(cp)
		cp = nil
	}
	if cp == nil {
		// A pass from the start: the kernel's first read-ahead
		// requests may be answered before the one at offset 0.
		if off >= copyWindow || c.writers[ino] > 0 || (off != 0 && c.gaveUpOn(ino, gen)) {
			c.mu.Unlock()
			return false
		}
		var err error
		if cp, err = c.startLocked(ino, gen, size); cp == nil {
			c.mu.Unlock()
			if err != nil {
				c.log.Debug("not copying a file", "ino", uint64(ino), "err", err)
			}
			return false
		}
	}
	if cp.done || cp.dropped {
		c.mu.Unlock()
		return false
	}
	end := off + int64(n)
	if err := cp.admit(off, end); err != nil {
		c.dropLocked(cp)
		if len(c.gaveUp) >= maxGaveUp {
			clear(c.gaveUp)
		}
		c.gaveUp[ino] = gen
		c.mu.Unlock()
		c.log.Debug("giving up a local copy", "ino", uint64(ino), "err", err)
		return false
	}
	if cp.covered(off, end) {
		c.mu.Unlock()
		return false
	}
	cp.add(off, end)
	cp.pending++
	c.lru.MoveToFront(cp.elem)
	j := copyJob{off: off, end: end, bufs: bufs, done: done}
	select {
	case cp.jobs <- j:
		c.mu.Unlock()
		return true
	default:
	}
	c.mu.Unlock()
	j.done = nil
	c.write(cp, j)
	return false
}

// copyJob is one READ reply to write into a copy.
type copyJob struct {
	off, end int64
	bufs     [][]byte
	done     func()
}

// copyQueue is how many READ replies may wait for a copy's writer before
// READs write their bytes themselves: a few read-ahead requests' worth.
const copyQueue = 8

// writer writes the queued replies of cp until it is complete or dropped.
func (c *fileCache) writer(cp *fileCopy) {
	for j := range cp.jobs {
		c.write(cp, j)
		j.done()
	}
}

// write writes one claimed reply into cp; the copy is complete when every
// byte is claimed and every claim written.
func (c *fileCache) write(cp *fileCopy, j copyJob) {
	c.mu.Lock()
	f := cp.f
	skip := cp.done || cp.dropped
	c.mu.Unlock()
	var err error
	if !skip {
		err = pwritev(f, j.bufs, j.off)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	cp.pending--
	if cp.done || cp.dropped {
		return
	}
	if err != nil {
		c.log.Warn("writing a local copy failed; giving it up", "ino", uint64(cp.ino), "err", err)
		c.dropLocked(cp)
		return
	}
	if cp.pending == 0 && cp.claimedAll() {
		cp.done = true
		c.complete++
		close(cp.settled)
		close(cp.jobs)
		// Readers open the copy read-only for themselves.
		err := cp.f.Close()
		cp.f = nil
		if err != nil {
			c.log.Warn("closing a local copy failed; giving it up", "ino", uint64(cp.ino), "err", err)
			c.dropLocked(cp)
		}
	}
}

// startLocked makes room for and creates the copy of ino at gen, or returns
// nil when the file is not worth or not able to be copied.
func (c *fileCache) startLocked(ino metaserver.Ino, gen uint64, size int64) (*fileCopy, error) {
	if size < c.minFile || size > c.maxFile {
		return nil, nil
	}
	for c.used+size > c.budget {
		if !c.evictLocked() {
			return nil, fmt.Errorf("%d bytes do not fit the %d-byte budget beside copies in use", size, c.budget)
		}
	}
	// The budget is no promise of space: the disk is shared. A copy that
	// would leave less than a tenth of it free is not begun.
	var fs unix.Statfs_t
	if err := unix.Statfs(c.dir, &fs); err == nil {
		total, free := int64(fs.Blocks)*int64(fs.Bsize), int64(fs.Bavail)*int64(fs.Bsize)
		if free-size < total/10 {
			return nil, fmt.Errorf("%d bytes would leave less than a tenth of the cache's file system free (%d bytes free)", size, free)
		}
	}
	path := filepath.Join(c.dir, fmt.Sprintf("%d-%d", ino, gen))
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, err
	}
	// The copy has the file's size from the start, so a passthrough reader
	// of a complete copy sees exactly the file; unfilled ranges are holes.
	if err := f.Truncate(size); err != nil {
		f.Close()
		os.Remove(path)
		return nil, err
	}
	delete(c.gaveUp, ino)
	cp := &fileCopy{ino: ino, gen: gen, size: size, path: path, f: f, jobs: make(chan copyJob, copyQueue), settled: make(chan struct{})}
	go c.writer(cp)
	cp.elem = c.lru.PushFront(cp)
	c.copies[ino] = cp
	c.used += size
	return cp, nil
}

// evictLocked drops the least recently used copy no passthrough reader
// holds; false when there is none.
func (c *fileCache) evictLocked() bool {
	for e := c.lru.Back(); e != nil; e = e.Prev() {
		cp := e.Value.(*fileCopy)
		if cp.pins == 0 {
			c.dropLocked(cp)
			return true
		}
	}
	return false
}

// dropLocked takes cp out of the cache. Its file goes when the last
// passthrough handle on it is released.
func (c *fileCache) dropLocked(cp *fileCopy) {
	if cp.dropped {
		return
	}
	cp.dropped = true
	if c.copies[cp.ino] == cp {
		delete(c.copies, cp.ino)
	}
	c.lru.Remove(cp.elem)
	c.used -= cp.size
	if cp.f != nil {
		// Not complete: the writer still reads jobs.
		close(cp.settled)
		close(cp.jobs)
		cp.f.Close()
		cp.f = nil
	}
	if cp.pins == 0 {
		os.Remove(cp.path)
	}
}

// drop gives up ino's copy: this mount is about to change the file.
func (c *fileCache) drop(ino metaserver.Ino) {
	c.mu.Lock()
	if cp := c.copies[ino]; cp != nil {
		c.dropLocked(cp)
	}
	c.mu.Unlock()
}

// addWriter counts an open of ino that may change it: no copy is made
// while one is open, since reads then return its unflushed bytes.
func (c *fileCache) addWriter(ino metaserver.Ino) {
	c.mu.Lock()
	c.writers[ino]++
	if cp := c.copies[ino]; cp != nil {
		c.dropLocked(cp)
	}
	c.mu.Unlock()
}

func (c *fileCache) removeWriter(ino metaserver.Ino) {
	c.mu.Lock()
	if c.writers[ino]--; c.writers[ino] <= 0 {
		delete(c.writers, ino)
	}
	c.mu.Unlock()
}

// pin returns ino's copy opened read-only, if it is complete and of
// generation gen, and holds it in the cache until unpin. A copy of another
// generation is dropped: the file changed since. A copy whose every byte
// has been read but not yet written is waited for, up to settleWait.
func (c *fileCache) pin(ino metaserver.Ino, gen uint64) (*fileCopy, *os.File) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := c.copies[ino]
	if cp == nil {
		return nil, nil
	}
	if cp.gen != gen {
		c.dropLocked(cp)
		return nil, nil
	}
	if !cp.done && cp.claimedAll() {
		c.mu.Unlock()
		t := time.NewTimer(settleWait)
		select {
		case <-cp.settled:
		case <-t.C:
		}
		t.Stop()
		c.mu.Lock()
	}
	if !cp.done || cp.dropped {
		return nil, nil
	}
	f, err := os.Open(cp.path)
	if err != nil {
		c.log.Warn("opening a local copy failed; giving it up", "ino", uint64(ino), "err", err)
		c.dropLocked(cp)
		return nil, nil
	}
	cp.pins++
	c.lru.MoveToFront(cp.elem)
	return cp, f
}

// hasComplete reports whether ino has a complete copy, of any generation.
func (c *fileCache) hasComplete(ino metaserver.Ino) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp := c.copies[ino]
	return cp != nil && (cp.done || cp.claimedAll())
}

// settleWait bounds how long an open waits for the last queued writes of a
// copy whose bytes have all been read: a reader that closes and reopens at
// once should find the copy complete.
const settleWait = time.Second

// claimedAll reports whether every byte of the copy is written or queued.
func (cp *fileCopy) claimedAll() bool {
	return len(cp.filled) == 1 && cp.filled[0].lo == 0 && cp.filled[0].hi >= cp.size
}

// unpin releases a pin; a dropped copy's file goes with its last pin.
func (c *fileCache) unpin(cp *fileCopy) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cp.pins--
	if cp.pins == 0 && cp.dropped {
		os.Remove(cp.path)
	}
}

// stats returns the bytes the copies reserve and how many completed.
func (c *fileCache) stats() (used, completed int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used, c.complete
}

// admit checks that a READ of [lo, hi) continues the pass from offset 0.
func (cp *fileCopy) admit(lo, hi int64) error {
	if hi > cp.size {
		return fmt.Errorf("read ends at %d, past the %d bytes of the copy: %w", hi, cp.size, errCopyGivenUp)
	}
	prefix := int64(0)
	if len(cp.filled) > 0 && cp.filled[0].lo == 0 {
		prefix = cp.filled[0].hi
	}
	if lo > prefix+copyWindow {
		return fmt.Errorf("read at %d, %d bytes past the filled prefix: %w", lo, lo-prefix, errCopyGivenUp)
	}
	if len(cp.filled) >= maxCopyRanges {
		return fmt.Errorf("%d separate ranges filled: %w", len(cp.filled), errCopyGivenUp)
	}
	return nil
}

// covered reports whether [lo, hi) is filled already.
func (cp *fileCopy) covered(lo, hi int64) bool {
	for _, s := range cp.filled {
		if s.lo <= lo && hi <= s.hi {
			return true
		}
	}
	return false
}

// add merges [lo, hi) into the filled ranges.
func (cp *fileCopy) add(lo, hi int64) {
	i := sort.Search(len(cp.filled), func(i int) bool { return cp.filled[i].hi >= lo })
	j := i
	for j < len(cp.filled) && cp.filled[j].lo <= hi {
		lo, hi = min(lo, cp.filled[j].lo), max(hi, cp.filled[j].hi)
		j++
	}
	cp.filled = slices.Replace(cp.filled, i, j, span{lo, hi})
}

// pwritev writes bufs at off with one system call where it can. It goes
// through the file's RawConn so a concurrent Close cannot hand the
// descriptor number to another file while it is written.
func pwritev(f *os.File, bufs [][]byte, off int64) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	cerr := rc.Write(func(fd uintptr) bool {
		owned := false
		for len(bufs) > 0 {
			n, err := unix.Pwritev(int(fd), bufs[:min(len(bufs), 1024)], off)
			if err != nil {
				if errors.Is(err, syscall.EINTR) {
					continue
				}
				werr = err
				return true
			}
			if n == 0 {
				werr = io.ErrShortWrite
				return true
			}
			off += int64(n)
			for n > 0 && len(bufs) > 0 {
				if n >= len(bufs[0]) {
					n -= len(bufs[0])
					bufs = bufs[1:]
					continue
				}
				// bufs is the caller's (a READ reply still to be
				// sent): trim a copy of it.
				if !owned {
					bufs, owned = slices.Clone(bufs), true
				}
				bufs[0] = bufs[0][n:]
				n = 0
			}
		}
		return true
	})
	if cerr != nil {
		return cerr
	}
	return werr
}
