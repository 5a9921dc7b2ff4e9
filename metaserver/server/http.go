package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	ms "github.com/dockyard/dockyard/metaserver"
)

// maxRequestBody bounds one request; a CreateTree of a large layer is the
// biggest thing sent.
const maxRequestBody = 64 << 20

func (n *Node) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/op/{op}", n.serveOp)
	mux.HandleFunc("POST "+ms.StreamPath, n.serveStream)
	mux.HandleFunc("GET "+ms.WatchPath, n.serveWatch)
	mux.HandleFunc("GET /healthz", n.serveHealth)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.met.reg, promhttp.HandlerOpts{}))
	return mux
}

func (n *Node) serveOp(w http.ResponseWriter, r *http.Request) {
	op := r.PathValue("op")
	start := time.Now()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	var reply []byte
	if err != nil {
		err = fmt.Errorf("%w: reading request: %v", ms.ErrBadRequest, err)
	} else {
		ctx := r.Context()
		if r.Header.Get(ms.ConsistencyHeader) == "stale" {
			ctx = ms.AllowStale(ctx)
		}
		reply, err = n.Exec(ctx, op, r.Header.Get(ms.RequestIDHeader), body)
	}
	we := n.met.observe(op, start, err)
	if we != nil {
		writeError(w, we)
		return
	}
	if ms.IsBinary(reply) {
		w.Header().Set("Content-Type", "application/octet-stream")
	} else {
		w.Header().Set("Content-Type", "application/json")
	}
	if len(reply) == 0 {
		reply = []byte("null")
	}
	_, _ = w.Write(reply) // the client sees a broken reply and retries
}

// serveStream switches the connection to the stream protocol (see
// metaserver.StreamProtocol) and serves frames on it until either side
// closes it or the node stops.
func (n *Node) serveStream(w http.ResponseWriter, r *http.Request) {
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", ms.StreamProtocol) {
		w.Header().Set("Upgrade", ms.StreamProtocol)
		writeErrorStatus(w, ms.ToWire(fmt.Errorf("%w: %s needs Connection: Upgrade and Upgrade: %s", ms.ErrBadRequest, ms.StreamPath, ms.StreamProtocol)), http.StatusUpgradeRequired)
		return
	}
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		writeError(w, ms.ToWire(fmt.Errorf("%w: cannot take over the connection: %v", ms.ErrBadRequest, err)))
		return
	}
	_ = conn.SetDeadline(time.Time{}) // no deadline the HTTP server may have left
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + ms.StreamProtocol + "\r\n\r\n")
	if err := brw.Flush(); err != nil {
		_ = conn.Close()
		return
	}
	n.met.streams.Inc()
	defer n.met.streams.Dec()
	s := &serverStream{n: n, conn: conn, slots: make(chan struct{}, streamInFlight)}
	// Read straight from the connection, not through the HTTP server's
	// reader (a lock and a copy per read), unless the client already sent
	// frames behind the upgrade request.
	br := brw.Reader
	if br.Buffered() == 0 {
		br = bufio.NewReaderSize(conn, 16<<10)
	}
	s.serve(br)
}

// serverStream is one client's stream connection.
type serverStream struct {
	n    *Node
	conn net.Conn
	wmu  sync.Mutex // one reply frame at a time on the wire
	// slots bounds the requests of one connection in flight; when they are
	// all taken the read loop stops reading, and TCP pushes back.
	slots chan struct{}
}

const (
	// streamInFlight is how many requests one stream connection may have
	// in flight.
	streamInFlight = 1024
	// streamWriteTimeout ends a connection whose client stopped reading
	// its replies.
	streamWriteTimeout = 30 * time.Second
)

// serve reads request frames and runs each in its own goroutine: a mutation
// waits for its Raft commit, and the requests behind it must not wait too,
// or group commit would see one request per connection.
func (s *serverStream) serve(br *bufio.Reader) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Hijacked connections are no longer the HTTP server's: closing the
	// node must end them too, so clients move on to another node.
	go func() {
		select {
		case <-s.n.stop:
		case <-ctx.Done():
		}
		_ = s.conn.Close()
	}()
	for {
		f, err := ms.ReadStreamFrame(br, maxRequestBody)
		if err != nil {
			return // closed by the client, or garbage: either way this connection is done
		}
		id, flags, op, reqID, args, err := ms.ParseStreamRequest(f)
		if err != nil {
			s.reply(id, nil, fmt.Errorf("%w: %w", ms.ErrBadRequest, err))
			continue
		}
		s.slots <- struct{}{}
		go s.exec(ctx, id, flags, op, reqID, args)
	}
}

func (s *serverStream) exec(ctx context.Context, id uint64, flags byte, op, reqID string, args []byte) {
	start := time.Now()
	if flags&ms.StreamStale != 0 {
		ctx = ms.AllowStale(ctx)
	}
	reply, err := s.n.Exec(ctx, op, reqID, args)
	s.n.met.observe(op, start, err)
	s.reply(id, reply, err)
	<-s.slots
}

// framePool recycles reply frames: a stream writes one per operation.
var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

func (s *serverStream) reply(id uint64, reply []byte, err error) {
	status, body := ms.StreamOK, reply
	if err != nil {
		status = ms.StreamError
		body, _ = json.Marshal(ms.ToWire(err)) // a struct of strings and integers always encodes
	}
	bp := framePool.Get().(*[]byte)
	b := ms.AppendStreamFrame((*bp)[:0], id, status, body)
	s.wmu.Lock()
	werr := s.conn.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
	if werr == nil {
		_, werr = s.conn.Write(b)
	}
	s.wmu.Unlock()
	*bp = b
	if cap(b) <= 64<<10 {
		framePool.Put(bp)
	}
	if werr != nil {
		_ = s.conn.Close() // the read loop ends too; the client retries elsewhere
	}
}

// headerHasToken reports whether a comma-separated header has token (any
// case), as Connection: keep-alive, Upgrade does.
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

func statusOf(we *ms.WireError) int {
	switch we.Kind {
	case ms.KindErrno:
		switch we.Errno {
		case syscall.ENOENT:
			return http.StatusNotFound
		case syscall.EEXIST:
			return http.StatusConflict
		}
		return http.StatusUnprocessableEntity
	case ms.KindNotLeader:
		return http.StatusMisdirectedRequest
	case ms.KindNoSpace:
		return http.StatusInsufficientStorage
	case ms.KindConflict:
		return http.StatusConflict
	case ms.KindUnavailable:
		return http.StatusServiceUnavailable
	case ms.KindInvalid:
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, we *ms.WireError) {
	writeErrorStatus(w, we, statusOf(we))
}

func writeErrorStatus(w http.ResponseWriter, we *ms.WireError, status int) {
	w.Header().Set("Content-Type", "application/json")
	if we.Kind == ms.KindNotLeader && we.Leader != "" {
		w.Header().Set("Location", "http://"+we.Leader)
	}
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(struct {
		Error *ms.WireError `json:"error"`
	}{we})
}

// serveHealth is 200 while the node is part of a cluster with a known
// leader, 503 otherwise.
func (n *Node) serveHealth(w http.ResponseWriter, _ *http.Request) {
	st := n.raft.State()
	leader := n.Leader()
	if st == raft.Shutdown || leader == "" {
		writeError(w, ms.ToWire(fmt.Errorf("%w: state %s, no leader", ms.ErrUnavailable, st)))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"state": st.String(), "leader": leader, "applied": n.fsm.AppliedIndex()})
}
