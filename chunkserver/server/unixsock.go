package server

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/internal/unixsock"
)

// The short-circuit socket: clients on this host open shard files through it
// and read them without the HTTP API copying every byte through loopback (see
// chunkserver.ShortCircuit for the client and the protocol, and
// docs/chunkserver.md). The socket is owner-only and a connecting process
// must run as the server's user (or root), who can read the shard files
// anyway; a descriptor handed out reads that one shard file and nothing else.
//
// A store that encrypts its shards hands out no descriptors: the files hold
// ciphertext, and giving a client the means to decrypt them would spread the
// key. Such a server speaks chunkserver.ShortCircuitVersionBytes and serves
// reads as bytes over the socket (SCRead), read and checked by the store;
// that still skips loopback HTTP, and clients that only know descriptors
// refuse the socket and read over HTTP.

type shortCircuit struct {
	ln       *net.UnixListener
	path     string
	instance string
	opener   store.ShardOpener
	// bytesOnly: the shard files are encrypted; serve reads, not files.
	bytesOnly bool

	mu     sync.Mutex
	conns  map[*net.UnixConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// listenShortCircuit binds the socket in the data directory. It fails when
// the store's shards are not files, the path is too long for a socket, or a
// live server already answers on it.
func (s *Server) listenShortCircuit() (*shortCircuit, error) {
	opener, ok := s.store.(store.ShardOpener)
	if !ok {
		return nil, errors.New("the shard store keeps no files to hand out")
	}
	if s.cfg.DataDir == "" {
		return nil, errors.New("no data directory for the socket")
	}
	dir, err := filepath.Abs(s.cfg.DataDir)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, chunkserver.ShortCircuitSocket)
	// The peer check on every connection covers the moment before the
	// socket's mode is set.
	ln, err := unixsock.Listen(path, "chunkserver")
	if err != nil {
		return nil, err
	}
	var rnd [16]byte
	_, _ = rand.Read(rnd[:])
	enc, _ := s.store.(interface{ Encrypted() bool })
	return &shortCircuit{ln: ln, path: path, instance: hex.EncodeToString(rnd[:]), opener: opener,
		bytesOnly: enc != nil && enc.Encrypted(), conns: map[*net.UnixConn]struct{}{}}, nil
}

// withShortCircuit adds the endpoint describing the socket to the API.
func (s *Server) withShortCircuit(api http.Handler) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+chunkserver.ShortCircuitPath, s.handleShortCircuitInfo)
	mux.Handle("/", api)
	return mux
}

func (s *Server) handleShortCircuitInfo(w http.ResponseWriter, _ *http.Request) {
	if s.sc == nil {
		http.Error(w, "short-circuit reads are off on this chunkserver", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(chunkserver.ShortCircuitInfo{ID: string(s.id), Socket: s.sc.path, Instance: s.sc.instance})
}

// ShortCircuitSocket is the path of the server's short-circuit socket, or ""
// when it offers none.
func (s *Server) ShortCircuitSocket() string {
	if s.sc == nil {
		return ""
	}
	return s.sc.path
}

func (s *Server) serveShortCircuit() {
	sc := s.sc
	for {
		c, err := sc.ln.AcceptUnix()
		if err != nil {
			sc.mu.Lock()
			closed := sc.closed
			sc.mu.Unlock()
			if !closed {
				s.log.Error("short-circuit socket stopped", "err", err)
			}
			return
		}
		sc.mu.Lock()
		if sc.closed {
			sc.mu.Unlock()
			_ = c.Close()
			return
		}
		sc.conns[c] = struct{}{}
		sc.wg.Add(1)
		sc.mu.Unlock()
		go func() {
			defer sc.wg.Done()
			s.serveShortCircuitConn(c)
			sc.mu.Lock()
			delete(sc.conns, c)
			sc.mu.Unlock()
			_ = c.Close()
		}()
	}
}

// closeShortCircuit stops accepting, cuts every connection (descriptors
// already handed out stay valid) and removes the socket file.
func (s *Server) closeShortCircuit() {
	sc := s.sc
	if sc == nil {
		return
	}
	sc.mu.Lock()
	sc.closed = true
	for c := range sc.conns {
		_ = c.Close()
	}
	sc.mu.Unlock()
	_ = sc.ln.Close() // unlinks the socket file
	sc.wg.Wait()
}

func (s *Server) serveShortCircuitConn(c *net.UnixConn) {
	if err := checkPeer(c); err != nil {
		s.metrics.scRefused.Add(1)
		s.log.Warn("refused a short-circuit connection", "err", err)
		return
	}
	s.metrics.scAccepted.Add(1)
	hello := chunkserver.ShortCircuitHello{Version: chunkserver.ShortCircuitVersion, ID: string(s.id), Instance: s.sc.instance}
	if s.sc.bytesOnly {
		hello.Version, hello.NoDescriptors = chunkserver.ShortCircuitVersionBytes, true
	}
	if err := chunkserver.WriteShortCircuitFrame(c, hello, nil); err != nil {
		return
	}
	// Requests carry no descriptors (any sent are dropped by the kernel
	// on a plain read), so a buffered reader serves both the frames and
	// the data of puts that follow them.
	br := bufio.NewReaderSize(c, 64<<10)
	for {
		var req chunkserver.ShortCircuitRequest
		err := chunkserver.ReadShortCircuitRequest(br, &req)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("short-circuit connection ended", "err", err)
			}
			return
		}
		if err := s.answerShortCircuit(c, br, req); err != nil {
			return
		}
	}
}

func (s *Server) answerShortCircuit(c *net.UnixConn, r io.Reader, req chunkserver.ShortCircuitRequest) error {
	switch req.Op {
	case chunkserver.SCPut:
		return s.putShortCircuit(c, r, req)
	case chunkserver.SCRead:
		return s.readShortCircuit(c, req)
	case chunkserver.SCOpen:
		if s.sc.bytesOnly {
			return chunkserver.WriteShortCircuitFrame(c, chunkserver.ShortCircuitReply{Status: http.StatusNotImplemented,
				Msg: "shard files are encrypted at rest: no descriptors; read with " + chunkserver.SCRead}, nil)
		}
		if err := s.checkOpen(); err != nil {
			return chunkserver.WriteShortCircuitFrame(c, chunkserver.ShortCircuitReply{Status: http.StatusServiceUnavailable, Msg: err.Error()}, nil)
		}
		f, l, err := s.sc.opener.OpenShard(req.Name)
		if err != nil {
			code, kind := s.storeFailure(req.Name, err)
			return chunkserver.WriteShortCircuitFrame(c, chunkserver.ShortCircuitReply{Status: code, Kind: kind, Msg: err.Error()}, nil)
		}
		defer f.Close()
		s.metrics.scOpens.Add(1)
		return chunkserver.WriteShortCircuitFrame(c, chunkserver.ShortCircuitReply{Layout: &l}, f)
	case chunkserver.SCCorrupt:
		if !chunkserver.ValidName(req.Name) {
			return chunkserver.WriteShortCircuitFrame(c, chunkserver.ShortCircuitReply{Status: http.StatusBadRequest, Kind: chunkserver.ErrorName, Msg: "invalid shard name"}, nil)
		}
		// Counted and reported exactly as a corrupt read over HTTP.
		s.storeFailure(req.Name, fmt.Errorf("read %s by a short-circuit client: %w", req.Name, store.ErrCorrupt))
		return chunkserver.WriteShortCircuitFrame(c, chunkserver.ShortCircuitReply{}, nil)
	default:
		return chunkserver.WriteShortCircuitFrame(c, chunkserver.ShortCircuitReply{Status: http.StatusBadRequest, Msg: fmt.Sprintf("unknown operation %q", req.Op)}, nil)
	}
}

// putShortCircuit stores the shard whose bytes follow the request, as a PUT
// does (same size limit, store call, error mapping and metrics). The bytes
// never left the host, so no checksum comes with them: the reply's is the one
// the store computed from what it wrote.
func (s *Server) putShortCircuit(c *net.UnixConn, r io.Reader, req chunkserver.ShortCircuitRequest) error {
	start := time.Now()
	reply := func(code int, kind, msg string) error {
		s.observeLocal(http.MethodPut, code, start)
		return chunkserver.WriteShortCircuitFrame(c, chunkserver.ShortCircuitReply{Status: code, Kind: kind, Msg: msg}, nil)
	}
	if req.Size < 0 {
		return errors.New("negative put size") // out of step: hang up
	}
	if err := s.checkSize(req.Size); err != nil {
		// Read past the refused bytes, so the connection stays in step
		// and the client reads the refusal instead of a broken pipe.
		if _, derr := io.CopyN(io.Discard, r, req.Size); derr != nil {
			return derr
		}
		return reply(http.StatusRequestEntityTooLarge, "", err.Error())
	}
	bp := s.getBuf(int(req.Size))
	defer s.putBuf(bp)
	if _, err := io.ReadFull(r, *bp); err != nil {
		return err
	}
	if err := s.checkOpen(); err != nil {
		return reply(http.StatusServiceUnavailable, "", err.Error())
	}
	if !chunkserver.ValidName(req.Name) {
		return reply(http.StatusBadRequest, chunkserver.ErrorName, fmt.Sprintf("invalid shard name %q", req.Name))
	}
	s.metrics.bytesIn.Add(req.Size)
	sum, err := s.storeShard(req.Name, *bp, req.Buffered)
	if err != nil {
		code, kind := s.storeFailure(req.Name, err)
		return reply(code, kind, err.Error())
	}
	s.observeLocal(http.MethodPut, http.StatusCreated, start)
	s.metrics.scPuts.Add(1)
	return chunkserver.WriteShortCircuitFrame(c, chunkserver.ShortCircuitReply{Sum: sum}, nil)
}

// readShortCircuit answers SCRead: the bytes read through the store (so
// checked and, for an encrypted store, decrypted) after the reply frame,
// with the same size limit, error mapping and metrics as a GET.
func (s *Server) readShortCircuit(c *net.UnixConn, req chunkserver.ShortCircuitRequest) error {
	start := time.Now()
	reply := func(code int, kind, msg string) error {
		s.observeLocal(http.MethodGet, code, start)
		return chunkserver.WriteShortCircuitFrame(c, chunkserver.ShortCircuitReply{Status: code, Kind: kind, Msg: msg}, nil)
	}
	if req.Size < 0 || req.Off < 0 {
		return reply(http.StatusBadRequest, "", fmt.Sprintf("read of %d bytes at %d", req.Size, req.Off))
	}
	if err := s.checkSize(req.Size); err != nil {
		return reply(http.StatusRequestEntityTooLarge, "", err.Error())
	}
	if !chunkserver.ValidName(req.Name) {
		return reply(http.StatusBadRequest, chunkserver.ErrorName, fmt.Sprintf("invalid shard name %q", req.Name))
	}
	if err := s.checkOpen(); err != nil {
		return reply(http.StatusServiceUnavailable, "", err.Error())
	}
	bp := s.getBuf(int(req.Size))
	defer s.putBuf(bp)
	n, err := s.store.ReadAt(req.Name, *bp, req.Off)
	switch {
	case err == nil || (errors.Is(err, io.EOF) && n == len(*bp)):
	case errors.Is(err, io.EOF):
		return reply(http.StatusRequestedRangeNotSatisfiable, "", fmt.Sprintf("range %d+%d past end of shard", req.Off, req.Size))
	default:
		code, kind := s.storeFailure(req.Name, err)
		return reply(code, kind, err.Error())
	}
	s.metrics.bytesOut.Add(int64(n))
	s.observeLocal(http.MethodGet, http.StatusPartialContent, start)
	s.metrics.scReads.Add(1)
	return chunkserver.WriteShortCircuitData(c, chunkserver.ShortCircuitReply{Size: req.Size}, *bp)
}
