package store

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Buffered Puts. Acknowledging a shard only once it is on stable storage
// costs two journal commits per shard (file, then directory), which halved a
// sequential write through the mount. Local file systems, NFS (UNSTABLE
// writes plus COMMIT), HDFS (hflush against hsync) and MooseFS all answer a
// write from memory and make it durable when the application asks, with
// fsync; PutBuffered and Sync are that split for one chunkserver.
//
// PutBuffered writes the file under a temporary name and renames it into
// place exactly as Put does, without either flush, starts the file's
// writeback at once (so the disk works while the client sends the next
// shards) and remembers the shard in Disk.unsynced. Sync makes every shard
// remembered when its round started durable: an fdatasync of each file, then
// one fsync of each directory holding one (the renames). Rounds are run by a
// syncGroup, so concurrent callers share them: a round covers every caller
// waiting when it started.
//
// A background flush every FlushInterval bounds how much a power loss can take
// when nobody calls Sync. A shard a flush could not make durable stays
// remembered and is tried again by the next round; the error goes to the
// callers of the round that failed (Linux reports a writeback error to one
// fsync only, so a caller that got one must treat those shards as lost).

// DefaultFlushInterval is how often buffered shards are flushed without a
// Sync. Five seconds is ext4's default journal commit interval and the
// kernel's default writeback period: a chunkserver loses no more to a power
// cut than a program writing to a local ext4 disk without fsync does, and a
// round every five seconds costs a few fsyncs whose data the early writeback
// has mostly written already.
const DefaultFlushInterval = 5 * time.Second

// flushWorkers is how many fdatasyncs a round has in flight. The journal
// batches concurrent fsyncs into one commit, so a round of hundreds of files
// costs a few commits instead of one each.
const flushWorkers = 16

// WithFlushInterval sets how often buffered shards are flushed without a
// Sync (default DefaultFlushInterval); zero or negative turns the
// background flush off, leaving it to Sync and Close.
func WithFlushInterval(every time.Duration) DiskOption {
	return func(d *Disk) { d.flushEvery = every }
}

// WithFlushErrorHandler makes fn receive the errors of background flushes,
// which have no caller to return them to; the server logs and counts them.
func WithFlushErrorHandler(fn func(error)) DiskOption {
	return func(d *Disk) { d.onFlushError = fn }
}

// WithoutEarlyWriteback stops PutBuffered from starting its file's
// writeback, leaving it to the kernel's own schedule (for comparison).
func WithoutEarlyWriteback() DiskOption { return func(d *Disk) { d.earlyWriteback = false } }

// PutBuffered implements Store.
func (d *Disk) PutBuffered(name string, data []byte) (uint64, error) { return d.put(name, data, true) }

// Sync implements Store.
func (d *Disk) Sync() error {
	d.mu.RLock()
	closed, n := d.closed, len(d.unsynced)
	d.mu.RUnlock()
	if closed {
		return ErrClosed
	}
	// Entries leave the set only once durable, so an empty set means every
	// buffered Put acknowledged so far is.
	if n == 0 {
		return nil
	}
	return d.rounds.wait()
}

// Unsynced counts the buffered shards not yet made durable.
func (d *Disk) Unsynced() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.unsynced)
}

// bufferedFlusher runs one Sync round for d.
type bufferedFlusher struct{ d *Disk }

func (b bufferedFlusher) flush() error { return b.d.flushUnsynced() }
func (b bufferedFlusher) close() error { return nil }

// flushUnsynced makes the shards in d.unsynced at the time of the call
// durable and forgets those it did.
func (d *Disk) flushUnsynced() error {
	d.mu.RLock()
	batch := maps.Clone(d.unsynced)
	syncFile := d.syncFile
	d.mu.RUnlock()
	if len(batch) == 0 {
		return nil
	}
	var failed map[string]error
	if d.group != nil {
		// One flush of the file system covers the data and the renames.
		if err := d.group.wait(); err != nil {
			return fmt.Errorf("flushing %d buffered shards: %w", len(batch), noSpace(err))
		}
	} else {
		failed = d.syncFiles(batch, syncFile)
	}
	d.mu.Lock()
	for name, gen := range batch {
		// A newer Put of the name stays: its bytes may postdate the flush.
		if _, bad := failed[name]; !bad && d.unsynced[name] == gen {
			delete(d.unsynced, name)
		}
	}
	d.mu.Unlock()
	if len(failed) == 0 {
		return nil
	}
	errs := make([]error, 0, len(failed))
	for _, err := range failed {
		errs = append(errs, err)
	}
	return fmt.Errorf("flushing buffered shards: %d of %d failed: %w", len(failed), len(batch), noSpace(errors.Join(errs...)))
}

// syncFiles fdatasyncs the files of batch, then fsyncs each directory
// holding one, and returns the names it could not make durable with why.
// A file deleted meanwhile needs nothing; one replaced meanwhile is synced
// as it now is, which is harmless.
func (d *Disk) syncFiles(batch map[string]uint64, syncFile func(*os.File) error) map[string]error {
	names := make(chan string)
	var (
		mu     sync.Mutex
		failed = map[string]error{}
		dirs   = map[string][]string{} // directory -> names synced in it
		wg     sync.WaitGroup
	)
	for range min(flushWorkers, len(batch)) {
		wg.Go(func() {
			for name := range names {
				path := d.Path(name)
				err := syncPath(path, syncFile)
				mu.Lock()
				switch {
				case errors.Is(err, os.ErrNotExist):
				case err != nil:
					failed[name] = fmt.Errorf("shard %s: %w", name, err)
				default:
					dir := filepath.Dir(path)
					dirs[dir] = append(dirs[dir], name)
				}
				mu.Unlock()
			}
		})
	}
	for name := range batch {
		names <- name
	}
	close(names)
	wg.Wait()
	for dir, in := range dirs {
		if err := syncDir(dir); err != nil {
			for _, name := range in {
				failed[name] = fmt.Errorf("shard %s: %w", name, err)
			}
		}
	}
	return failed
}

func syncPath(path string, syncFile func(*os.File) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	serr := syncFile(f)
	if err := f.Close(); serr == nil {
		serr = err
	}
	return serr
}

// startFlusher starts the background flush, unless it is off or there is
// nothing it could ever flush.
func (d *Disk) startFlusher() {
	if d.flushEvery <= 0 || d.noSync {
		return
	}
	d.stopFlush, d.flushDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(d.flushDone)
		t := time.NewTicker(d.flushEvery)
		defer t.Stop()
		for {
			select {
			case <-d.stopFlush:
				return
			case <-t.C:
			}
			if err := d.Sync(); err != nil && !errors.Is(err, ErrClosed) && d.onFlushError != nil {
				d.onFlushError(err)
			}
		}
	}()
}

func (d *Disk) stopFlusher() {
	if d.stopFlush != nil {
		close(d.stopFlush)
		<-d.flushDone
	}
}
