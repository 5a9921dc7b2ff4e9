package registry

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/dockyard/dockyard/fs"
)

// sendPiece is the unit a whole blob is read and written in: the file
// system's chunk size, so each read is one chunk's data shards fetched in
// parallel, straight into the buffer that is then written to the socket.
const sendPiece = 4 << 20

// plainGet reports whether a GET asks for the whole body unconditionally,
// which is how clients pull layers; ranges and conditional requests go
// through http.ServeContent, which implements their rules.
func plainGet(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	for _, h := range []string{"Range", "If-Range", "If-Match", "If-None-Match", "If-Modified-Since", "If-Unmodified-Since"} {
		if r.Header.Get(h) != "" {
			return false
		}
	}
	return true
}

// sendDepth is how many pieces are read ahead of the one being written. A
// piece takes about as long to read from the chunkservers as to write to a
// loopback socket, so a few in flight keep both busy; 4 x 4 MiB bounds a
// download's memory at 16 MiB.
const sendDepth = 4

// sendSlots bounds the pieces held by all downloads together (64 x 4 MiB =
// 256 MiB, the fs client's default block cache), so many slow clients cannot
// make the registry hold 16 MiB each. A download always gets its next piece
// (it waits for a slot while holding none, so downloads never wait on each
// other in a cycle); read-ahead beyond it takes only free slots.
var sendSlots = make(chan struct{}, 64)

// dataReader is a blob reader that can lend its bytes instead of copying
// them into the piece's buffer (fs.File.ReadDataKept): they are written to
// the socket straight from the file system's block cache, which then lets
// them go, since a pull reads each blob once.
type dataReader interface {
	ReadData(buf []byte, off int64) (fs.Data, error)
}

var sendBufs = sync.Pool{New: func() any { b := make([]byte, sendPiece); return &b }}

// sendWhole writes all of br as a 200 response body, reading up to
// sendDepth pieces ahead in parallel. It replaces http.ServeContent for
// whole-blob GETs, where ServeContent's single-threaded read-then-write loop
// leaves the socket idle while each piece is read and the reader idle while
// it is written. The caller has set every header but Content-Length. It
// returns only read errors: once the status is sent, a failed read can only
// cut the body short (the client sees fewer bytes than Content-Length), which
// is all the caller can do too.
func sendWhole(w http.ResponseWriter, br io.ReaderAt, size int64) error {
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	return sendBody(w, br, size)
}

// sendBody is sendWhole after the status line and headers.
func sendBody(w io.Writer, br io.ReaderAt, size int64) error {
	if size == 0 {
		return nil
	}
	type piece struct {
		buf  *[]byte
		data fs.Data // the bytes read: in buf, or lent by a dataReader
		err  error
		done chan struct{}
	}
	n := int((size + sendPiece - 1) / sendPiece)
	pieces := make([]*piece, n)
	next := 0 // the first piece not started
	start := func() {
		i := next
		next++
		p := &piece{buf: sendBufs.Get().(*[]byte), done: make(chan struct{})}
		pieces[i] = p
		off := int64(i) * sendPiece
		want := min(int64(sendPiece), size-off)
		go func() {
			defer close(p.done)
			if dr, ok := br.(dataReader); ok {
				p.data, p.err = dr.ReadData((*p.buf)[:want], off)
			} else {
				var n int
				n, p.err = br.ReadAt((*p.buf)[:want], off)
				p.data = fs.Data{Bufs: [][]byte{(*p.buf)[:n]}, N: n}
			}
			switch n := p.data.N; {
			case int64(n) == want && p.err == io.EOF:
				p.err = nil
			case int64(n) < want && (p.err == nil || p.err == io.EOF):
				// The blob is shorter than its size said.
				p.err = io.ErrUnexpectedEOF
			}
		}()
	}
	release := func(p *piece) {
		p.data.Release()
		sendBufs.Put(p.buf)
		<-sendSlots
	}
	// readAhead starts the pieces after i, up to sendDepth in all, as far
	// as free slots allow.
	readAhead := func(i int) {
		for next < n && next < i+sendDepth {
			select {
			case sendSlots <- struct{}{}:
				start()
			default:
				return
			}
		}
	}
	var err error
	i := 0
	for ; i < n; i++ {
		if next == i {
			sendSlots <- struct{}{} // holding no piece: safe to wait
			start()
		}
		p := pieces[i]
		if i > 0 {
			readAhead(i)
		}
		<-p.done
		if i == 0 {
			// The first piece is read alone: started together with its
			// read-ahead, it would share the disk and CPU with three
			// pieces the client does not need yet, and a client that
			// opens several downloads at once (skopeo: six) would wait
			// for all of them before its first byte.
			readAhead(i)
		}
		if p.err != nil {
			err = fmt.Errorf("reading blob at %d: %w", int64(i)*sendPiece, p.err)
			break
		}
		var werr error
		for _, b := range p.data.Bufs {
			if _, werr = w.Write(b); werr != nil {
				break
			}
		}
		release(p)
		pieces[i] = nil
		if werr != nil {
			break // the client went away: nothing to report to it
		}
	}
	// Pieces still being read are released once their read ends.
	for ; i < next; i++ {
		if p := pieces[i]; p != nil {
			<-p.done
			release(p)
		}
	}
	return err
}

// Ordered downloads for clients on this host.
//
// A client pulling an image asks for several layers at once (skopeo six,
// crane four, docker three) and then does per-layer work once a layer has
// arrived: skopeo fsyncs each layer's file before it asks for the next
// layer, docker extracts layers in order. Served side by side, all of them
// arrive together, so that work starts only then and runs while nothing
// downloads: pulling 8 x 128 MiB over loopback, skopeo's six first downloads
// ended within half a second of each other, and its seventh started 1.6-2.3
// s later, the six fsyncs having run with no download in flight (the page
// cache here starts writing back only at 2 GiB dirty, so an fsync writes the
// whole layer). Served in the order they were asked for, a few at a time,
// the first layers arrive early and their per-layer work overlaps the
// download of the next ones.
//
// Only clients on this host (loopback) are ordered. There the limit to
// parallel downloads is the host's CPUs, shared by client and registry, so
// more streams than CPUs mostly interleave; over a network one flow may be held
// back by its own path, and clients open several to fill the link, so remote
// clients keep every stream flowing. Two valves keep ordering from ever
// holding a download back for nothing: a download waits only while the
// client's flowing downloads are moving (a client that reads its responses
// in another order, or stopped reading, gets the next one after
// laneStall), and never longer than laneMaxWait.

// minLocalDownloads is the fewest downloads of one client that flow at once
// by default, however few CPUs the host has. On a busy host a client's share
// of the CPUs grows with its threads: with two flowing on this two-CPU
// machine under other load, crane's pull (four downloads at once) took twice
// as long. Four leaves crane's and docker's defaults (four and three) as they
// were and still orders skopeo's six.
const minLocalDownloads = 4

// laneMinSize is the smallest blob that waits its turn: configs and small
// layers cost less to send than to order.
const laneMinSize = 1 << 20

const (
	laneStall   = time.Second
	laneMaxWait = 10 * time.Second
)

// downloadLanes orders each loopback client's whole-blob downloads.
type downloadLanes struct {
	perClient int // downloads that flow at once for one client
	stall     time.Duration
	maxWait   time.Duration

	mu      sync.Mutex
	clients map[string]*laneQueue
}

// laneQueue is one client's downloads: those flowing and those waiting, in
// arrival order.
type laneQueue struct {
	flowing  int
	waiting  []*laneTurn
	progress atomic.Int64 // unix nanos of the latest write of a flowing download (or of an admission)
}

// laneTurn is one download's place in its client's queue.
type laneTurn struct {
	l        *downloadLanes
	key      string
	q        *laneQueue
	admitted chan struct{} // closed once it may flow
	flowing  bool          // guarded by l.mu
}

func newDownloadLanes(perClient int) *downloadLanes {
	return &downloadLanes{perClient: perClient, stall: laneStall, maxWait: laneMaxWait, clients: map[string]*laneQueue{}}
}

// clientKey returns the client's address when it is on this host and so
// its downloads are ordered; "" otherwise.
func clientKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return ""
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return ""
	}
	return host
}

// enter queues a download of client key and returns its turn once it may
// flow, or ctx's error if the client goes away first. Call done on the
// returned turn when the download ends.
func (l *downloadLanes) enter(ctx context.Context, key string) (*laneTurn, error) {
	l.mu.Lock()
	q := l.clients[key]
	if q == nil {
		q = &laneQueue{}
		l.clients[key] = q
	}
	t := &laneTurn{l: l, key: key, q: q, admitted: make(chan struct{})}
	if q.flowing < l.perClient && len(q.waiting) == 0 {
		l.admitLocked(t)
		l.mu.Unlock()
		return t, nil
	}
	q.waiting = append(q.waiting, t)
	l.mu.Unlock()

	deadline := time.Now().Add(l.maxWait)
	timer := time.NewTimer(l.stall)
	defer timer.Stop()
	for {
		select {
		case <-t.admitted:
			return t, nil
		case <-ctx.Done():
			l.mu.Lock()
			if t.flowing { // admitted meanwhile: give the place on
				l.mu.Unlock()
				t.done()
				return nil, ctx.Err()
			}
			l.removeLocked(t)
			l.forgetIdleLocked(t)
			l.mu.Unlock()
			return nil, ctx.Err()
		case <-timer.C:
			l.mu.Lock()
			if t.flowing {
				l.mu.Unlock()
				return t, nil
			}
			now := time.Now()
			idle := now.Sub(time.Unix(0, q.progress.Load()))
			if idle >= l.stall || !now.Before(deadline) {
				// The flowing downloads are not moving, or this one
				// waited long enough: it flows alongside them.
				l.removeLocked(t)
				l.admitLocked(t)
				l.mu.Unlock()
				return t, nil
			}
			timer.Reset(min(l.stall-idle, deadline.Sub(now)))
			l.mu.Unlock()
		}
	}
}

// admitLocked lets t flow; l.mu is held.
func (l *downloadLanes) admitLocked(t *laneTurn) {
	t.q.flowing++
	t.flowing = true
	// A download just admitted has not written yet: it counts as moving,
	// so the next one does not pass it at once.
	t.q.progress.Store(time.Now().UnixNano())
	close(t.admitted)
}

// removeLocked takes a waiting t out of its queue; l.mu is held.
func (l *downloadLanes) removeLocked(t *laneTurn) {
	q := t.q
	for i, w := range q.waiting {
		if w == t {
			q.waiting = append(q.waiting[:i], q.waiting[i+1:]...)
			break
		}
	}
}

// forgetIdleLocked drops t's queue once it holds no download; l.mu is held.
func (l *downloadLanes) forgetIdleLocked(t *laneTurn) {
	if q := t.q; q.flowing == 0 && len(q.waiting) == 0 && l.clients[t.key] == q {
		delete(l.clients, t.key)
	}
}

// wrote notes that the download moved.
func (t *laneTurn) wrote() { t.q.progress.Store(time.Now().UnixNano()) }

// done ends the download and lets the next ones waiting flow.
func (t *laneTurn) done() {
	l := t.l
	l.mu.Lock()
	defer l.mu.Unlock()
	q := t.q
	q.flowing--
	for q.flowing < l.perClient && len(q.waiting) > 0 {
		next := q.waiting[0]
		q.waiting = q.waiting[1:]
		l.admitLocked(next)
	}
	l.forgetIdleLocked(t)
}

// laneWriter reports each write of a flowing download to its turn.
type laneWriter struct {
	w io.Writer
	t *laneTurn
}

func (w laneWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	w.t.wrote()
	return n, err
}

// sendBlob answers a whole-blob GET: at once, or, for a large blob asked
// for by a client on this host, once the client's earlier downloads have
// made room (see downloadLanes). The status and headers go out first either
// way, so a client waiting for its turn has its answer and only the body
// waits.
func (r *Registry) sendBlob(c echo.Context, br BlobReader) error {
	size := br.Size()
	key := ""
	if r.lanes != nil && size >= laneMinSize {
		key = clientKey(c.Request())
	}
	if key == "" {
		return sendWhole(c.Response(), br, size)
	}
	w := c.Response()
	w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	w.Flush()
	t, err := r.lanes.enter(c.Request().Context(), key)
	if err != nil {
		return nil // the client went away while its download waited: nobody to tell
	}
	defer t.done()
	return sendBody(laneWriter{w: w, t: t}, br, size)
}
