package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/store"
)

// Handler is the chunkserver's HTTP API (see the chunkserver package for the
// contract). It is exported so tests and in-process setups can mount it on an
// httptest server.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/shards/{name}", s.handleShard)
	mux.HandleFunc("POST "+chunkserver.SyncPath, s.handleSync)
	mux.HandleFunc("GET /status", s.handleStatus)
	mux.HandleFunc("GET /metrics", s.handleMetrics)
	return s.instrument(mux)
}

// statusWriter records the status code for the request metrics.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		if sw.code == 0 {
			sw.code = http.StatusOK
		}
		s.metrics.observe(r.Method, sw.code, time.Since(start))
	})
}

func (s *Server) handleShard(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	if !chunkserver.ValidName(name) {
		w.Header().Set(chunkserver.HeaderError, chunkserver.ErrorName)
		http.Error(w, fmt.Sprintf("invalid shard name %q: want hex digits, a dot and a decimal index", name), http.StatusBadRequest)
		return
	}
	switch r.Method {
	case http.MethodPut:
		s.handlePut(w, r, name)
	case http.MethodGet:
		s.handleGet(w, r, name)
	case http.MethodHead:
		s.handleHead(w, name)
	case http.MethodDelete:
		s.handleDelete(w, name)
	default:
		w.Header().Set("Allow", "GET, HEAD, PUT, DELETE")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	}
}

// getBuf returns a pooled buffer of length n. Shard buffers are reused because
// every PUT and GET needs one the size of a shard (1 MiB by default), and
// allocating those per request dominates the garbage collector's work.
func (s *Server) getBuf(n int) *[]byte {
	if v, ok := s.bufs.Get().(*[]byte); ok && cap(*v) >= n {
		*v = (*v)[:n]
		return v
	}
	b := make([]byte, n)
	return &b
}

func (s *Server) putBuf(b *[]byte) {
	if cap(*b) <= int(s.cfg.MaxShardSize) {
		s.bufs.Put(b)
	}
}

func (s *Server) handlePut(w http.ResponseWriter, r *http.Request, name string) {
	limit := s.cfg.MaxShardSize
	if err := s.checkSize(r.ContentLength); err != nil {
		http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
		return
	}
	buffered := false
	if v := r.URL.Query().Get(chunkserver.ParamBuffered); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			http.Error(w, fmt.Sprintf("bad %s parameter %q: want true or false", chunkserver.ParamBuffered, v), http.StatusBadRequest)
			return
		}
		buffered = b
	}
	var want uint64
	hasSum := false
	if h := r.Header.Get(chunkserver.HeaderSum); h != "" {
		v, err := chunkserver.ParseSum(h)
		if err != nil {
			http.Error(w, fmt.Sprintf("bad %s header: %v", chunkserver.HeaderSum, err), http.StatusBadRequest)
			return
		}
		want, hasSum = v, true
	}
	var data []byte
	if r.ContentLength >= 0 {
		buf := s.getBuf(int(r.ContentLength))
		defer s.putBuf(buf)
		if _, err := io.ReadFull(r.Body, *buf); err != nil {
			http.Error(w, fmt.Sprintf("reading shard body: %v", err), http.StatusBadRequest)
			return
		}
		data = *buf
	} else {
		b, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
		if err != nil {
			http.Error(w, fmt.Sprintf("reading shard body: %v", err), http.StatusBadRequest)
			return
		}
		if int64(len(b)) > limit {
			http.Error(w, fmt.Sprintf("shard exceeds the %d byte limit", limit), http.StatusRequestEntityTooLarge)
			return
		}
		data = b
	}
	s.metrics.bytesIn.Add(int64(len(data)))
	// Checking before the store makes anything durable means a shard damaged
	// on the wire is never acknowledged.
	if hasSum {
		if got := chunkserver.Sum(data); got != want {
			w.Header().Set(chunkserver.HeaderError, chunkserver.ErrorSum)
			http.Error(w, fmt.Sprintf("body hashes to %016x, header says %016x", got, want), http.StatusBadRequest)
			return
		}
	}
	sum, err := s.storeShard(name, data, buffered)
	if err != nil {
		s.writeStoreError(w, name, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	_ = json.NewEncoder(w).Encode(chunkserver.PutReply{Sum: chunkserver.FormatSum(sum), Size: int64(len(data))})
}

// writeStoreError answers a store error with its status (see storeFailure).
func (s *Server) writeStoreError(w http.ResponseWriter, name string, err error) {
	code, kind := s.storeFailure(name, err)
	if kind != "" {
		w.Header().Set(chunkserver.HeaderError, kind)
	}
	http.Error(w, err.Error(), code)
}

// storeFailure maps a store error to the status and HeaderError value the API
// answers it with: the sentinels become the statuses the client turns back
// into the same sentinels. A corrupt shard is also counted and reported to
// the metaserver: the reader may report it too, but the chunkserver is the one
// that knows for certain. The HTTP handlers and the in-process transport both
// go through here, so both count, report and answer alike.
func (s *Server) storeFailure(name string, err error) (code int, kind string) {
	switch {
	case errors.Is(err, store.ErrNotFound):
		return http.StatusNotFound, ""
	case errors.Is(err, store.ErrNoSpace):
		return http.StatusInsufficientStorage, chunkserver.ErrorNoSpace
	case errors.Is(err, store.ErrCorrupt):
		s.metrics.corrupt.Add(1)
		s.log.Warn("corrupt shard", "err", err)
		if name != "" {
			s.reportBadAsync(name, err)
		}
		return http.StatusInternalServerError, chunkserver.ErrorCorrupt
	case errors.Is(err, store.ErrBadName):
		return http.StatusBadRequest, chunkserver.ErrorName
	case errors.Is(err, store.ErrClosed):
		return http.StatusServiceUnavailable, ""
	default:
		s.log.Error("store failure", "err", err)
		return http.StatusInternalServerError, ""
	}
}

// checkSize refuses a shard of n bytes over MaxShardSize (413 over HTTP).
func (s *Server) checkSize(n int64) error {
	if limit := s.cfg.MaxShardSize; n > limit {
		return fmt.Errorf("shard of %d bytes exceeds the %d byte limit", n, limit)
	}
	return nil
}

func (s *Server) handleHead(w http.ResponseWriter, name string) {
	info, err := s.store.Stat(name)
	if err != nil {
		s.writeStoreError(w, name, err)
		return
	}
	h := w.Header()
	h.Set("Content-Length", strconv.FormatInt(info.Size, 10))
	h.Set(chunkserver.HeaderSum, chunkserver.FormatSum(info.Sum))
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	w.WriteHeader(http.StatusOK)
}

// handleGet verifies every block of the range before sending the first byte:
// once a 200 is on the wire a checksum failure could only cut the body short,
// which a client cannot tell from a network fault. Shards are small (1 MiB by
// default, MaxShardSize at most), so buffering the range is cheap.
func (s *Server) handleGet(w http.ResponseWriter, r *http.Request, name string) {
	info, err := s.store.Stat(name)
	if err != nil {
		s.writeStoreError(w, name, err)
		return
	}
	start, end, partial, err := parseRange(r.Header.Get("Range"), info.Size)
	if err != nil {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", info.Size))
		http.Error(w, err.Error(), http.StatusRequestedRangeNotSatisfiable)
		return
	}
	n := end - start
	buf := s.getBuf(int(n))
	defer s.putBuf(buf)
	if n > 0 {
		if _, err := s.store.ReadAt(name, *buf, start); err != nil {
			// The shard may have been replaced by a shorter one since Stat.
			if errors.Is(err, io.EOF) {
				err = fmt.Errorf("shard %s changed while being read: %w", name, store.ErrNotFound)
			}
			s.writeStoreError(w, name, err)
			return
		}
	}
	h := w.Header()
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set(chunkserver.HeaderSum, chunkserver.FormatSum(info.Sum))
	code := http.StatusOK
	if partial {
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end-1, info.Size))
		code = http.StatusPartialContent
	}
	w.WriteHeader(code)
	m, _ := w.Write(*buf)
	s.metrics.bytesOut.Add(int64(m))
}

// errRange is a Range header that cannot be satisfied.
var errRange = errors.New("range not satisfiable")

// parseRange interprets a single-range "bytes=" header against a shard of size
// bytes, returning the half-open span [start, end). No header, or one in a
// unit other than bytes, selects the whole shard (partial false), as HTTP
// requires of a server that does not understand it. Multiple ranges are not
// supported: readers ask for one span per request.
func parseRange(h string, size int64) (start, end int64, partial bool, err error) {
	spec, ok := strings.CutPrefix(h, "bytes=")
	if h == "" || !ok {
		return 0, size, false, nil
	}
	if strings.Contains(spec, ",") {
		return 0, 0, false, fmt.Errorf("%w: multiple ranges are not supported", errRange)
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, 0, false, fmt.Errorf("%w: malformed range %q", errRange, h)
	}
	if first == "" { // suffix: the last N bytes
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n <= 0 {
			return 0, 0, false, fmt.Errorf("%w: malformed range %q", errRange, h)
		}
		if size == 0 {
			return 0, 0, false, fmt.Errorf("%w: shard is empty", errRange)
		}
		return max(size-n, 0), size, true, nil
	}
	start, err = strconv.ParseInt(first, 10, 64)
	if err != nil || start < 0 {
		return 0, 0, false, fmt.Errorf("%w: malformed range %q", errRange, h)
	}
	if start >= size {
		return 0, 0, false, fmt.Errorf("%w: offset %d is past the shard's %d bytes", errRange, start, size)
	}
	end = size
	if last != "" {
		l, err := strconv.ParseInt(last, 10, 64)
		if err != nil || l < start {
			return 0, 0, false, fmt.Errorf("%w: malformed range %q", errRange, h)
		}
		end = min(l+1, size)
	}
	return start, end, true, nil
}

func (s *Server) handleDelete(w http.ResponseWriter, name string) {
	if err := s.store.Delete(name); err != nil && !errors.Is(err, store.ErrNotFound) {
		s.writeStoreError(w, name, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// storeShard writes a shard to the store, durably or buffered.
func (s *Server) storeShard(name string, data []byte, buffered bool) (uint64, error) {
	if buffered {
		return s.store.PutBuffered(name, data)
	}
	return s.store.Put(name, data)
}

// handleSync answers 204 once every shard PUT buffered before the request is
// durable, 500 with HeaderError "sync" when the flush failed.
func (s *Server) handleSync(w http.ResponseWriter, _ *http.Request) {
	if err := s.syncStore(); err != nil {
		code, kind := s.syncFailure(err)
		if kind != "" {
			w.Header().Set(chunkserver.HeaderError, kind)
		}
		http.Error(w, err.Error(), code)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// syncStore runs the store's Sync; a failure is logged, as the caller may
// not be the only one whose shards it touches.
func (s *Server) syncStore() error {
	err := s.store.Sync()
	if err != nil && !errors.Is(err, store.ErrClosed) {
		s.log.Error("flushing buffered shards failed", "err", err)
	}
	return err
}

// syncFailure maps a Sync error to its status and HeaderError value.
func (s *Server) syncFailure(err error) (code int, kind string) {
	if errors.Is(err, store.ErrClosed) {
		return http.StatusServiceUnavailable, ""
	}
	return http.StatusInternalServerError, chunkserver.ErrorSync
}

func (s *Server) handleStatus(w http.ResponseWriter, _ *http.Request) {
	u, err := s.store.Usage()
	if err != nil {
		s.writeStoreError(w, "", err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(chunkserver.StatusReply{ID: string(s.id), Capacity: u.Capacity, Used: u.Used, Shards: u.Shards})
}

func (s *Server) handleMetrics(w http.ResponseWriter, _ *http.Request) {
	u, err := s.store.Usage()
	if err != nil {
		s.writeStoreError(w, "", err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	g := gauges{capacity: u.Capacity, used: u.Used, shards: u.Shards}
	if us, ok := s.store.(interface{ Unsynced() int }); ok {
		g.unsynced = us.Unsynced()
	}
	if sc := s.sc; sc != nil {
		sc.mu.Lock()
		g.scConns = len(sc.conns)
		sc.mu.Unlock()
	}
	s.metrics.write(w, g)
}
