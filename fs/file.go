package fs

import (
	"context"
	"fmt"
	"io"
	"sort"
	"sync"
	"syscall"
	"time"

	"github.com/dockyard/dockyard/metaserver"
)

// File is an open regular file. It is safe for concurrent use.
//
// Writes land in chunk-aligned buffers. A buffer that fills is encoded and
// uploaded in the background (bounded by Options.MaxUploads, so a fast writer
// waits instead of growing memory) while the next one fills; uploaded chunks
// are committed to the metaserver in batches, at Flush at the latest.
// Overwrites are copy-on-write: new chunks, and the commit replaces the parts
// of the old extents they cover. Reads see the file's own unflushed writes.
//
// If an upload fails for good, the bytes it carried are lost: the error is
// kept and returned by every later WriteAt, Flush and Close, as a local file
// system reports a failed writeback at fsync or close.
type File struct {
	c   *Client
	ino metaserver.Ino

	// wmu serialises writers, Flush and Truncate, so buffer dispatch and
	// commits happen in write order.
	wmu sync.Mutex

	mu      sync.Mutex
	cond    *sync.Cond // signalled when uploads settle
	attr    metaserver.Attr
	size    uint64              // includes unflushed writes
	extents []metaserver.Extent // committed and uploaded-but-uncommitted
	wbufs   []*wbuf             // dirty and uploading buffers, by seq
	slots   map[int64]*wbuf     // dirty buffers by chunk slot
	pending []pendingChunk      // uploaded, not committed, in upload order
	seq     uint64
	err     error // sticky write failure
	closed  bool
	// commitTimer commits uploaded chunks of a file left open without a
	// Flush, before their lease runs out.
	commitTimer *time.Timer

	ra readAhead // the read stream and its read-ahead (read.go)

	layer    io.ReaderAt
	layerErr error
}

// wbuf is a chunk's worth of written bytes: dirty while it is being filled,
// then uploading, then settled into the file's extents.
type wbuf struct {
	seq   uint64
	slot  int64
	buf   *[]byte
	spans []span // dirty bytes, slot-relative; while not dispatched

	dispatched bool
	off        int64  // file offset of data[0], once dispatched
	data       []byte // chunk data, a prefix of *buf, once dispatched
	done       bool
	err        error
	chunk      metaserver.Chunk
	sums       []uint64

	// refs counts the file's own reference (while listed in wbufs) and
	// readers overlaying it; the buffer is recycled at zero.
	refs int
}

type pendingChunk struct {
	ext   metaserver.Extent
	chunk metaserver.Chunk
	sums  []uint64
}

func newFile(c *Client, in metaserver.Inode) *File {
	f := &File{
		c:       c,
		ino:     in.Ino,
		attr:    in.Attr,
		size:    in.Size,
		extents: append([]metaserver.Extent(nil), in.Extents...),
		slots:   map[int64]*wbuf{},
	}
	f.cond = sync.NewCond(&f.mu)
	return f
}

func (f *File) ioCtx() (context.Context, context.CancelFunc) {
	// Calls without a context still must not hang forever on a dead
	// server; single requests are bounded by IOTimeout below this.
	return context.WithCancel(context.Background())
}

// Ino returns the file's inode number.
func (f *File) Ino() metaserver.Ino { return f.ino }

// Attr returns the file's attributes as this handle sees them, with the size
// including writes not yet flushed.
func (f *File) Attr() metaserver.Attr {
	f.mu.Lock()
	defer f.mu.Unlock()
	a := f.attr
	a.Size = f.size
	return a
}

func (f *File) unrefLocked(w *wbuf) {
	w.refs--
	if w.refs == 0 && w.buf != nil {
		f.c.putBuf(w.buf)
		w.buf = nil
	}
}

// WriteAt buffers p at off. Whole chunks are encoded and uploaded as they
// fill; it blocks while MaxUploads chunks are already in flight.
func (f *File) WriteAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("write at offset %d: %w", off, syscall.EINVAL)
	}
	if f.layer != nil || f.layerErr != nil {
		return 0, fmt.Errorf("write to inode %d: bytes live in a read-only layer: %w", f.ino, syscall.EROFS)
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if err := f.state(); err != nil {
		return 0, err
	}
	cs := f.c.opt.ChunkSize
	n := 0
	for n < len(p) {
		pos := off + int64(n)
		slot := pos / cs
		rel := pos - slot*cs
		w, _, err := f.lockBuffer(slot)
		if err != nil {
			return n, err
		}
		m := copy((*w.buf)[rel:cs], p[n:])
		w.spans = addSpan(w.spans, rel, rel+int64(m))
		n += m
		f.size = max(f.size, uint64(pos+int64(m)))
		full := len(w.spans) == 1 && w.spans[0] == span{0, cs}
		f.mu.Unlock()
		if full {
			if err := f.dispatch(w); err != nil {
				return n, err
			}
		}
	}
	if f.commitDue() {
		ctx, cancel := f.ioCtx()
		defer cancel()
		if err := f.commit(ctx); err != nil {
			return n, err
		}
	}
	return n, nil
}

// WriteFrom streams r into the file from off until r ends and returns the
// bytes written. Unlike WriteAt of a caller's buffer it reads r straight into
// the file's chunk buffers, so a stream (an upload's request body) is copied
// once less; like WriteAt, whole chunks are uploaded as they fill and the
// rest waits for Flush or Close. An error reading r is returned wrapped, after
// the bytes read before it were written.
func (f *File) WriteFrom(ctx context.Context, r io.Reader, off int64) (int64, error) {
	if off < 0 {
		return 0, fmt.Errorf("write at offset %d: %w", off, syscall.EINVAL)
	}
	return f.writeFrom(ctx, r, off)
}

// writeFrom streams r into the file from off to r's end. A chunk buffer it
// starts is filled straight from r, one copy less than WriteAt of a caller's
// buffer; readers never look at a buffer's bytes outside its dirty spans, so
// filling it needs no lock. It returns the bytes written.
func (f *File) writeFrom(ctx context.Context, r io.Reader, off int64) (int64, error) {
	if f.layer != nil || f.layerErr != nil {
		return 0, fmt.Errorf("write to inode %d: bytes live in a read-only layer: %w", f.ino, syscall.EROFS)
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if err := f.state(); err != nil {
		return 0, err
	}
	cs := f.c.opt.ChunkSize
	var total int64
	var tmp []byte
	for {
		if err := ctx.Err(); err != nil {
			return total, err
		}
		pos := off + total
		slot := pos / cs
		rel := pos - slot*cs
		w, fresh, err := f.lockBuffer(slot)
		if err != nil {
			return total, err
		}
		f.mu.Unlock()
		var m int
		var rerr error
		if fresh {
			m, rerr = io.ReadFull(r, (*w.buf)[rel:cs])
		} else {
			// Part of this buffer is dirty and readers may be copying it:
			// read aside, then copy under the lock as WriteAt does.
			if tmp == nil {
				tmp = make([]byte, cs)
			}
			m, rerr = io.ReadFull(r, tmp[:cs-rel])
		}
		f.mu.Lock()
		if !fresh {
			copy((*w.buf)[rel:], tmp[:m])
		}
		full := false
		switch {
		case m > 0:
			w.spans = addSpan(w.spans, rel, rel+int64(m))
			f.size = max(f.size, uint64(pos+int64(m)))
			full = len(w.spans) == 1 && w.spans[0] == span{0, cs}
		case fresh:
			// The source ended exactly at a chunk boundary: drop the
			// buffer started for bytes that never came.
			delete(f.slots, slot)
			for i, x := range f.wbufs {
				if x == w {
					f.wbufs = append(f.wbufs[:i], f.wbufs[i+1:]...)
					break
				}
			}
			f.unrefLocked(w)
		}
		f.mu.Unlock()
		total += int64(m)
		if full {
			if err := f.dispatch(w); err != nil {
				return total, err
			}
		}
		if f.commitDue() {
			if err := f.commit(ctx); err != nil {
				return total, err
			}
		}
		switch {
		case rerr == io.EOF || rerr == io.ErrUnexpectedEOF:
			return total, nil
		case rerr != nil:
			return total, fmt.Errorf("reading source: %w", rerr)
		}
	}
}

// lockBuffer returns the dirty buffer of chunk slot, starting one (fresh)
// when there is none; to make room it first writes out the oldest buffer when
// MaxDirtyChunks are in use. On success f.mu is held; on error it is not.
func (f *File) lockBuffer(slot int64) (w *wbuf, fresh bool, err error) {
	f.mu.Lock()
	w = f.slots[slot]
	if w == nil && len(f.slots) >= f.c.opt.MaxDirtyChunks {
		f.mu.Unlock()
		if err := f.dispatchOldest(); err != nil {
			return nil, false, err
		}
		f.mu.Lock()
	}
	if w == nil {
		f.seq++
		w = &wbuf{seq: f.seq, slot: slot, buf: f.c.getBuf(), refs: 1}
		f.slots[slot] = w
		f.wbufs = append(f.wbufs, w)
		fresh = true
	}
	return w, fresh, nil
}

// commitDue reports whether CommitEvery uploaded chunks await their commit.
func (f *File) commitDue() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pending) >= f.c.opt.CommitEvery
}

// state returns the error that stops writes, if any.
func (f *File) state() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return fmt.Errorf("inode %d: %w", f.ino, ErrClosed)
	}
	if f.err != nil {
		return fmt.Errorf("inode %d: earlier write failed: %w", f.ino, f.err)
	}
	return nil
}

// dispatchOldest writes out the least recently started dirty buffer to make
// room for another.
func (f *File) dispatchOldest() error {
	f.mu.Lock()
	var oldest *wbuf
	for _, w := range f.wbufs {
		if !w.dispatched {
			oldest = w
			break
		}
	}
	f.mu.Unlock()
	if oldest == nil {
		return nil
	}
	return f.dispatch(oldest)
}

// dispatch turns a dirty buffer into one chunk and starts its upload. A
// buffer with several dirty spans is made one contiguous chunk by reading the
// gaps between them, so scattered small writes do not become many tiny chunks.
// Called with wmu held.
func (f *File) dispatch(w *wbuf) error {
	f.mu.Lock()
	spans := append([]span(nil), w.spans...)
	f.mu.Unlock()
	base := w.slot * f.c.opt.ChunkSize
	lo, hi := spans[0].lo, spans[len(spans)-1].hi
	if len(spans) > 1 {
		gap := make([]byte, hi-lo)
		if _, err := f.readAt(gap, base+lo, false); err != nil && err != io.EOF {
			return fmt.Errorf("inode %d: reading around a partial chunk: %w", f.ino, err)
		}
		f.mu.Lock()
		for i := 1; i < len(spans); i++ {
			g0, g1 := spans[i-1].hi, spans[i].lo
			copy((*w.buf)[g0:g1], gap[g0-lo:g1-lo])
		}
		f.mu.Unlock()
	}
	// Wait for an upload slot before the buffer stops being dirty, so the
	// writer is held back instead of memory growing.
	f.c.uploads <- struct{}{}
	f.mu.Lock()
	b := *w.buf
	if lo > 0 {
		copy(b, b[lo:hi])
	}
	w.dispatched = true
	w.spans = nil
	w.off = base + lo
	w.data = b[:hi-lo]
	delete(f.slots, w.slot)
	f.mu.Unlock()
	go f.upload(w)
	return nil
}

func (f *File) upload(w *wbuf) {
	defer func() { <-f.c.uploads }()
	ctx, cancel := f.ioCtx()
	defer cancel()
	ch, sums, err := f.c.writeChunk(ctx, *w.buf, int64(len(w.data)))
	if err == nil {
		f.c.noteBuffered(f.ino, ch)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	w.done, w.err, w.chunk, w.sums = true, err, ch, sums
	f.settleLocked()
}

// settleLocked moves finished uploads into the file's extents. Uploads of the
// same chunk slot settle in write order, so an older upload finishing late
// never covers a newer one.
func (f *File) settleLocked() {
	for i := 0; i < len(f.wbufs); {
		w := f.wbufs[i]
		if !w.done || f.olderInFlightLocked(i) {
			i++
			continue
		}
		if w.err != nil {
			if f.err == nil {
				f.err = w.err
			}
		} else {
			ext := metaserver.Extent{Off: uint64(w.off), Len: uint64(len(w.data)), Chunk: w.chunk.ID}
			f.extents = spliceExtent(f.extents, ext)
			f.pending = append(f.pending, pendingChunk{ext: ext, chunk: w.chunk, sums: w.sums})
			if f.commitTimer == nil && !f.closed {
				f.commitTimer = time.AfterFunc(f.c.opt.CommitAfter, f.backgroundCommit)
			}
		}
		f.wbufs = append(f.wbufs[:i], f.wbufs[i+1:]...)
		f.unrefLocked(w)
	}
	f.cond.Broadcast()
}

func (f *File) olderInFlightLocked(i int) bool {
	for _, o := range f.wbufs[:i] {
		if o.slot == f.wbufs[i].slot && !o.done {
			return true
		}
	}
	return false
}

// Flush writes out every buffered byte and commits the file's new extents to
// the metaserver in one entry.
func (f *File) Flush(ctx context.Context) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if err := f.state(); err != nil {
		return err
	}
	return f.flushLocked(ctx)
}

// Sync is fsync: it flushes the file (Flush), then makes durable every shard
// this client wrote buffered for the file since its last Sync, through any
// handle, by syncing those chunkservers (Client.SyncInode). Close and Flush
// leave that to Sync, as a local file system does.
func (f *File) Sync(ctx context.Context) error {
	if err := f.Flush(ctx); err != nil {
		return err
	}
	return f.c.SyncInode(ctx, f.ino)
}

func (f *File) flushLocked(ctx context.Context) error {
	for {
		f.mu.Lock()
		var next *wbuf
		for _, w := range f.wbufs {
			if !w.dispatched {
				next = w
				break
			}
		}
		f.mu.Unlock()
		if next == nil {
			break
		}
		if err := f.dispatch(next); err != nil {
			return err
		}
	}
	f.mu.Lock()
	for len(f.wbufs) > 0 {
		f.cond.Wait()
	}
	err := f.err
	f.mu.Unlock()
	if err != nil {
		return fmt.Errorf("inode %d: write failed: %w", f.ino, err)
	}
	return f.commit(ctx)
}

// commit records the uploaded chunks in the metaserver. Extents overlapping
// each other within the batch are resolved here, in write order, so the
// metaserver receives a disjoint list; chunks left with no bytes in it are
// deleted instead of committed.
func (f *File) commit(ctx context.Context) error {
	f.mu.Lock()
	batch := append([]pendingChunk(nil), f.pending...)
	f.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	var exts []metaserver.Extent
	for _, p := range batch {
		exts = spliceExtent(exts, p.ext)
	}
	used := map[metaserver.ChunkID]bool{}
	var newSize uint64
	for _, e := range exts {
		used[e.Chunk] = true
		newSize = max(newSize, e.Off+e.Len)
	}
	sums := map[metaserver.ChunkID][]uint64{}
	for _, p := range batch {
		if used[p.chunk.ID] {
			sums[p.chunk.ID] = p.sums
		}
	}
	attr, err := f.c.meta.CommitExtents(ctx, f.ino, exts, sums, newSize)
	if err != nil {
		return fmt.Errorf("inode %d: committing %d extents: %w", f.ino, len(exts), err)
	}
	for _, p := range batch {
		if !used[p.chunk.ID] {
			f.c.dropChunk(p.chunk)
		}
	}
	f.mu.Lock()
	f.pending = f.pending[len(batch):]
	f.attr = attr
	f.size = max(f.size, attr.Size)
	f.mu.Unlock()
	return nil
}

// backgroundCommit commits what uploads have settled when nobody flushed in
// time. A failure is logged and retried later: the caller that flushes or
// closes gets the error from its own commit.
func (f *File) backgroundCommit() {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.mu.Lock()
	f.commitTimer = nil
	closed := f.closed
	f.mu.Unlock()
	if closed {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), f.c.opt.IOTimeout)
	defer cancel()
	if err := f.commit(ctx); err != nil {
		f.c.log.Warn("background commit failed; retrying", "ino", f.ino, "err", err)
		f.mu.Lock()
		if f.commitTimer == nil && !f.closed && len(f.pending) > 0 {
			f.commitTimer = time.AfterFunc(f.c.opt.CommitAfter, f.backgroundCommit)
		}
		f.mu.Unlock()
	}
}

// SetAttr changes the file's mode, owner or times through this handle; sizes
// go through Truncate. Writes still buffered are committed first: a commit
// stamps the file's mtime, so one landing after an explicit mtime (tar,
// rsync -t and touch -d write, then set the times) would undo it. A handle
// that is closed or whose writes failed has nothing to commit and just
// passes the change on.
func (f *File) SetAttr(ctx context.Context, in metaserver.SetAttrIn) (metaserver.Attr, error) {
	if in.Size != nil {
		return metaserver.Attr{}, fmt.Errorf("inode %d: SetAttr cannot change the size; use Truncate", f.ino)
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if f.state() == nil {
		if err := f.flushLocked(ctx); err != nil {
			return metaserver.Attr{}, err
		}
	}
	a, err := f.c.meta.SetAttr(ctx, f.ino, in)
	if err != nil {
		return a, err
	}
	f.mu.Lock()
	f.attr = a
	f.mu.Unlock()
	return a, nil
}

// Truncate writes out buffered data and sets the file's size; bytes past it
// are dropped and a later extension reads zeros.
func (f *File) Truncate(ctx context.Context, size uint64) error {
	if f.layer != nil || f.layerErr != nil {
		return fmt.Errorf("truncate inode %d: bytes live in a read-only layer: %w", f.ino, syscall.EROFS)
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if err := f.state(); err != nil {
		return err
	}
	if err := f.flushLocked(ctx); err != nil {
		return err
	}
	if _, err := f.c.meta.SetAttr(ctx, f.ino, metaserver.SetAttrIn{Size: &size}); err != nil {
		return fmt.Errorf("truncating inode %d to %d: %w", f.ino, size, err)
	}
	in, err := f.c.meta.GetInode(ctx, f.ino)
	if err != nil {
		return fmt.Errorf("truncating inode %d: re-reading it: %w", f.ino, err)
	}
	f.mu.Lock()
	f.attr = in.Attr
	f.size = in.Size
	f.extents = append([]metaserver.Extent(nil), in.Extents...)
	f.ra.restart()
	f.mu.Unlock()
	return nil
}

// Close flushes and releases the handle. Closing twice returns ErrClosed.
func (f *File) Close() error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return fmt.Errorf("inode %d: %w", f.ino, ErrClosed)
	}
	werr := f.err
	f.mu.Unlock()
	var err error
	if werr != nil {
		err = fmt.Errorf("inode %d: write failed: %w", f.ino, werr)
		f.mu.Lock()
		for len(f.wbufs) > 0 && f.hasDispatchedLocked() {
			f.cond.Wait()
		}
		f.mu.Unlock()
	} else {
		ctx, cancel := f.ioCtx()
		err = f.flushLocked(ctx)
		cancel()
	}
	f.mu.Lock()
	f.closed = true
	if f.commitTimer != nil {
		f.commitTimer.Stop()
		f.commitTimer = nil
	}
	for _, w := range f.wbufs {
		f.unrefLocked(w)
	}
	f.wbufs, f.slots = nil, nil
	f.mu.Unlock()
	if cl, ok := f.layer.(io.Closer); ok {
		if cerr := cl.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("inode %d: closing layer reader: %w", f.ino, cerr)
		}
	}
	return err
}

func (f *File) hasDispatchedLocked() bool {
	for _, w := range f.wbufs {
		if w.dispatched {
			return true
		}
	}
	return false
}

// ReadAt reads len(p) bytes at off (io.ReaderAt): holes read as zeros, and
// io.EOF comes with a short read at the end of the file.
func (f *File) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("read at offset %d: %w", off, syscall.EINVAL)
	}
	if f.layerErr != nil {
		return 0, fmt.Errorf("inode %d: %w", f.ino, f.layerErr)
	}
	if f.layer != nil {
		f.mu.Lock()
		size := int64(f.size)
		f.mu.Unlock()
		if off >= size {
			return 0, io.EOF
		}
		want := min(int64(len(p)), size-off)
		n, err := f.layer.ReadAt(p[:want], off)
		if err == io.EOF && int64(n) == want {
			err = nil
		}
		if err == nil && want < int64(len(p)) {
			err = io.EOF
		}
		return n, err
	}
	return f.readAt(p, off, true)
}

func (f *File) readAt(p []byte, off int64, readAhead bool) (int, error) {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return 0, fmt.Errorf("inode %d: %w", f.ino, ErrClosed)
	}
	size := int64(f.size)
	if off >= size {
		f.mu.Unlock()
		return 0, io.EOF
	}
	n := min(int64(len(p)), size-off)
	exts := overlapping(f.extents, off, n)
	snap := append([]*wbuf(nil), f.wbufs...)
	for _, w := range snap {
		w.refs++
	}
	f.mu.Unlock()

	ctx, cancel := f.ioCtx()
	defer cancel()
	clearHoles(p[:n], off, exts)
	err := f.c.readExtents(ctx, exts, p[:n], off)

	f.mu.Lock()
	if len(snap) > 0 || len(f.wbufs) > 0 {
		for _, w := range mergeBySeq(snap, f.wbufs) {
			w.overlay(p[:n], off, f.c.opt.ChunkSize)
		}
	}
	for _, w := range snap {
		f.unrefLocked(w)
	}
	var ra *readAheadJob
	if err == nil && readAhead {
		ra = f.readAheadLocked(off, n, size)
	}
	f.mu.Unlock()
	if err != nil {
		return 0, fmt.Errorf("inode %d: reading [%d,%d): %w", f.ino, off, off+n, err)
	}
	if ra != nil {
		go f.prefetch(ra)
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

// overlay copies the buffer's bytes that fall in [off, off+len(p)) into p.
func (w *wbuf) overlay(p []byte, off, chunkSize int64) {
	if w.buf == nil {
		return
	}
	put := func(fileLo int64, src []byte) {
		lo := max(fileLo, off)
		hi := min(fileLo+int64(len(src)), off+int64(len(p)))
		if lo < hi {
			copy(p[lo-off:hi-off], src[lo-fileLo:hi-fileLo])
		}
	}
	if w.dispatched {
		put(w.off, w.data)
		return
	}
	base := w.slot * chunkSize
	for _, s := range w.spans {
		put(base+s.lo, (*w.buf)[s.lo:s.hi])
	}
}

func mergeBySeq(a, b []*wbuf) []*wbuf {
	seen := map[*wbuf]bool{}
	var out []*wbuf
	for _, l := range [][]*wbuf{a, b} {
		for _, w := range l {
			if !seen[w] {
				seen[w] = true
				out = append(out, w)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// overlapping returns the parts of extents inside [off, off+n).
func overlapping(exts []metaserver.Extent, off, n int64) []metaserver.Extent {
	lo, hi := uint64(off), uint64(off+n)
	i := sort.Search(len(exts), func(i int) bool { return exts[i].Off+exts[i].Len > lo })
	var out []metaserver.Extent
	for ; i < len(exts) && exts[i].Off < hi; i++ {
		e := exts[i]
		s, t := max(e.Off, lo), min(e.Off+e.Len, hi)
		if s < t {
			out = append(out, metaserver.Extent{Off: s, Len: t - s, Chunk: e.Chunk, ChunkOff: e.ChunkOff + (s - e.Off)})
		}
	}
	return out
}

// readExtents fills p (file bytes from off) from the chunks of exts, which
// lie inside that range; the chunks are read in parallel. With p nil it only
// warms the cache.
func (c *Client) readExtents(ctx context.Context, exts []metaserver.Extent, p []byte, off int64) error {
	return eachExtent(exts, func(_ int, e metaserver.Extent) error {
		var dst []byte
		if p != nil {
			dst = p[int64(e.Off)-off : int64(e.Off+e.Len)-off]
		}
		return c.readChunkData(ctx, e.Chunk, dst, int64(e.ChunkOff), int64(e.Len))
	})
}

// eachExtent runs read for every extent of exts, in parallel (at most eight
// at once; a lone extent in the caller's goroutine), and returns the first
// error in extent order once all have finished.
func eachExtent(exts []metaserver.Extent, read func(i int, e metaserver.Extent) error) error {
	if len(exts) == 1 {
		return read(0, exts[0])
	}
	errs := make([]error, len(exts))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, e := range exts {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			errs[i] = read(i, e)
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}
