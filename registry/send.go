package registry

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

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
