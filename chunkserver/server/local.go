package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/store"
)

// The in-process transport: a chunkserver.Client in the same process calls
// these instead of the HTTP API (chunkserver.Client.Attach). They keep the
// API's semantics — the same size limit, the same store calls and name check,
// the same mapping of store errors to statuses (storeFailure, which also
// counts and reports corrupt shards) and the same metrics, labelled with the
// method and status the HTTP request would have had — and drop only its
// costs: no socket, no request parsing, no copy of the body into a server
// buffer and no second checksum of bytes that never left the process.
var _ chunkserver.LocalBufferedServer = (*Server)(nil)

// PutShard implements chunkserver.LocalServer.
func (s *Server) PutShard(_ context.Context, name string, data []byte) (uint64, error) {
	start := time.Now()
	sum, code, err := s.putShard(name, data, false)
	s.observeLocal(http.MethodPut, code, start)
	return sum, err
}

// PutShardBuffered implements chunkserver.LocalBufferedServer.
func (s *Server) PutShardBuffered(_ context.Context, name string, data []byte) (uint64, error) {
	start := time.Now()
	sum, code, err := s.putShard(name, data, true)
	s.observeLocal(http.MethodPut, code, start)
	return sum, err
}

// SyncShards implements chunkserver.LocalBufferedServer.
func (s *Server) SyncShards(_ context.Context) error {
	if err := s.checkOpen(); err != nil {
		return err
	}
	start := time.Now()
	err := s.syncStore()
	code := http.StatusNoContent
	if err != nil {
		var kind string
		code, kind = s.syncFailure(err)
		err = chunkserver.NewStatusError(code, kind, err.Error())
	}
	s.observeLocal(http.MethodPost, code, start)
	return err
}

func (s *Server) putShard(name string, data []byte, buffered bool) (uint64, int, error) {
	if err := s.checkOpen(); err != nil {
		return 0, 0, err
	}
	if err := s.checkSize(int64(len(data))); err != nil {
		return 0, http.StatusRequestEntityTooLarge, chunkserver.NewStatusError(http.StatusRequestEntityTooLarge, "", err.Error())
	}
	s.metrics.bytesIn.Add(int64(len(data)))
	sum, err := s.storeShard(name, data, buffered)
	if err != nil {
		code, err := s.localError(name, err)
		return 0, code, err
	}
	return sum, http.StatusCreated, nil
}

// ReadShard implements chunkserver.LocalServer. Unlike the HTTP handler it
// needs no Stat first nor a buffer of its own: the store reads (and verifies)
// straight into p, and a store never hands out bytes that failed their check.
func (s *Server) ReadShard(_ context.Context, name string, p []byte, off int64) error {
	start := time.Now()
	code, err := s.readShard(name, p, off)
	s.observeLocal(http.MethodGet, code, start)
	return err
}

func (s *Server) readShard(name string, p []byte, off int64) (int, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	n, err := s.store.ReadAt(name, p, off)
	switch {
	case err == nil || (errors.Is(err, io.EOF) && n == len(p)):
	case errors.Is(err, io.EOF):
		// What the HTTP API answers with 416 (nothing at off) or with fewer
		// bytes than asked; the client makes both this same error.
		return http.StatusRequestedRangeNotSatisfiable,
			fmt.Errorf("range %d+%d past end of shard: %w", off, len(p), io.ErrUnexpectedEOF)
	default:
		return s.localError(name, err)
	}
	s.metrics.bytesOut.Add(int64(n))
	return http.StatusPartialContent, nil
}

// StatShard implements chunkserver.LocalServer.
func (s *Server) StatShard(_ context.Context, name string) (chunkserver.ShardInfo, error) {
	start := time.Now()
	info, code, err := s.statShard(name)
	s.observeLocal(http.MethodHead, code, start)
	return info, err
}

func (s *Server) statShard(name string) (chunkserver.ShardInfo, int, error) {
	if err := s.checkOpen(); err != nil {
		return chunkserver.ShardInfo{}, 0, err
	}
	info, err := s.store.Stat(name)
	if err != nil {
		code, err := s.localError(name, err)
		return chunkserver.ShardInfo{}, code, err
	}
	return info, http.StatusOK, nil
}

// DeleteShard implements chunkserver.LocalServer.
func (s *Server) DeleteShard(_ context.Context, name string) error {
	start := time.Now()
	code, err := s.deleteShard(name)
	s.observeLocal(http.MethodDelete, code, start)
	return err
}

func (s *Server) deleteShard(name string) (int, error) {
	if err := s.checkOpen(); err != nil {
		return 0, err
	}
	if err := s.store.Delete(name); err != nil && !errors.Is(err, store.ErrNotFound) {
		return s.localError(name, err)
	}
	return http.StatusNoContent, nil
}

// observeLocal counts a call as the HTTP request it replaces; calls refused
// because the server is closed (code 0) never reached it and are not counted.
func (s *Server) observeLocal(method string, code int, start time.Time) {
	if code != 0 {
		s.metrics.observe(method, code, time.Since(start))
	}
}

// localError is writeStoreError for the in-process transport: the status the
// API would answer, as the error the HTTP client would have made of it.
func (s *Server) localError(name string, err error) (int, error) {
	code, kind := s.storeFailure(name, err)
	return code, chunkserver.NewStatusError(code, kind, err.Error())
}

// checkOpen fails calls made after Close the way a connection to a stopped
// server would fail, so callers pass over the server rather than take its
// answer for a shard's state.
func (s *Server) checkOpen() error {
	if s.life.Err() != nil {
		return fmt.Errorf("chunkserver %s: %w", s.Addr(), chunkserver.ErrServerClosed)
	}
	return nil
}
