package raftlog

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
)

// spares prepares the next segment file in the background: written with
// zeros and synced, so appends into it overwrite blocks the file system has
// already allocated and an fdatasync has only data to flush. Writing into a
// hole or an unwritten extent instead would put an extent change into the
// journal on every append's sync. With NoSync nothing is ever synced, so
// the file is only sized (sparse) and costs no disk writes.
type spares struct {
	dir    string
	size   int64
	nosync bool

	mu     sync.Mutex
	ready  bool          // the spare file exists, fully prepared
	making chan struct{} // closed when the running preparation ends
	stop   chan struct{}
}

const (
	spareName = "spare"
	zeroChunk = 1 << 20
)

func (p *spares) path() string { return filepath.Join(p.dir, spareName) }

// adopt keeps a spare left by an earlier run if it is complete and still all
// zeros at its start (a crash between a rollover's rename and the directory
// sync can leave records in it); otherwise it removes it.
func (p *spares) adopt() error {
	f, err := os.Open(p.path())
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	st, err := f.Stat()
	// A sparse spare (left by a NoSync run) would make every append's sync
	// allocate blocks; only a written one is worth keeping when syncing.
	ok := err == nil && st.Size() == p.size && (p.nosync || allocated(st) >= p.size)
	if ok {
		b := make([]byte, min(p.size, 64<<10))
		_, err := f.ReadAt(b, 0)
		ok = err == nil && allZero(b)
	}
	f.Close()
	if ok {
		p.ready = true
		return nil
	}
	return os.Remove(p.path())
}

// start prepares a spare in the background unless one is ready or on its way.
func (p *spares) start() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ready || p.making != nil {
		return
	}
	done := make(chan struct{})
	p.making = done
	go func() {
		err := p.prepare(p.path(), p.size)
		p.mu.Lock()
		p.making = nil
		p.ready = err == nil // on failure, take makes one and reports why
		p.mu.Unlock()
		close(done)
	}()
}

// take moves a prepared file of at least size bytes to path: the spare when
// it is big enough (waiting for it if it is being made), else a new one.
func (p *spares) take(path string, size int64) error {
	p.mu.Lock()
	making := p.making
	p.mu.Unlock()
	if making != nil {
		<-making
	}
	p.mu.Lock()
	ready := p.ready && size <= p.size
	if ready {
		p.ready = false
	}
	p.mu.Unlock()
	if ready {
		if err := os.Rename(p.path(), path); err != nil {
			return fmt.Errorf("raft log: claiming spare segment: %w", err)
		}
		return nil
	}
	tmp := path + tmpSuffix
	if err := p.prepare(tmp, max(size, p.size)); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("raft log: new segment: %w", err)
	}
	return nil
}

// prepare writes a zero-filled file of size bytes at path via a temporary
// name, so a file under the final name is always complete.
func (p *spares) prepare(path string, size int64) (err error) {
	tmp := path
	if filepath.Ext(path) != tmpSuffix {
		tmp = path + tmpSuffix
	}
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("raft log: preparing segment file: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("raft log: preparing segment file: %w", cerr)
		}
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if p.nosync {
		if err := f.Truncate(size); err != nil {
			return fmt.Errorf("raft log: preparing segment file: %w", err)
		}
	} else {
		zeros := make([]byte, zeroChunk)
		for off := int64(0); off < size; off += zeroChunk {
			select {
			case <-p.stop:
				return fmt.Errorf("raft log: preparing segment file: %w", ErrClosed)
			default:
			}
			n := min(int64(zeroChunk), size-off)
			if _, err := f.WriteAt(zeros[:n], off); err != nil {
				return fmt.Errorf("raft log: preparing segment file: %w", err)
			}
		}
		if err := datasync(f); err != nil {
			return fmt.Errorf("raft log: preparing segment file: %w", err)
		}
	}
	if tmp != path {
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("raft log: preparing segment file: %w", err)
		}
	}
	return nil
}

// close stops a running preparation and waits for it.
func (p *spares) close() {
	close(p.stop)
	p.mu.Lock()
	making := p.making
	p.mu.Unlock()
	if making != nil {
		<-making
	}
}
