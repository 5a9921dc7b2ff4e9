package chunkserver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dockyard/dockyard/internal/clusterauth"
)

// Client talks to any number of chunkservers over HTTP, and directly to those
// running in the same process once they are attached (see Attach). It is
// safe for concurrent use; one Client per process is enough.
type Client struct {
	hc *http.Client

	localMu sync.Mutex // serialises Attach and Detach
	local   atomic.Pointer[map[string]LocalServer]

	// probe finds chunkservers on this host (EnableShortCircuit); nil
	// until enabled.
	probe atomic.Pointer[scProber]
}

// NewClient returns a client using hc, or a tuned default when hc is nil.
func NewClient(hc *http.Client) *Client {
	if hc == nil {
		hc = defaultHTTPClient()
	}
	return &Client{hc: hc}
}

// defaultHTTPClient keeps many idle connections per host because the fs client
// writes k+m shards of many chunks in parallel to the same few servers; the
// stock limit of two idle connections per host would make most requests pay a
// new TCP handshake. No overall timeout: callers bound each call with ctx.
func defaultHTTPClient() *http.Client {
	tr := &http.Transport{
		Proxy: nil, // chunkservers are always addressed directly
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		// Shard bodies are already checksummed and incompressible parity.
		DisableCompression: true,
		WriteBufferSize:    256 << 10,
		ReadBufferSize:     256 << 10,
	}
	return &http.Client{Transport: tr}
}

func shardURL(addr, name string) string { return "http://" + addr + "/shards/" + name }

// checkName refuses an invalid name before it reaches the wire, where URL
// cleaning could turn it into a different request.
func checkName(op, addr, name string) error {
	if !ValidName(name) {
		return &ShardError{op, addr, name, ErrBadName}
	}
	return nil
}

// Put stores data as shard name on the chunkserver at addr and returns the
// shard's checksum once the shard is durable. The checksum is sent along so
// the server refuses bytes damaged in transit before making them durable.
func (c *Client) Put(ctx context.Context, addr, name string, data []byte) (uint64, error) {
	return c.put(ctx, addr, name, data, false)
}

// PutBuffered is Put acknowledged before the shard is durable: the server
// has written it (it reads back at once and survives a crash of the server
// process) and makes it durable at the next Sync to addr, or on its own
// within its flush interval. A server that predates buffered writes ignores
// the request for it and stores the shard durably.
func (c *Client) PutBuffered(ctx context.Context, addr, name string, data []byte) (uint64, error) {
	return c.put(ctx, addr, name, data, true)
}

func (c *Client) put(ctx context.Context, addr, name string, data []byte, buffered bool) (uint64, error) {
	if err := checkName("put", addr, name); err != nil {
		return 0, err
	}
	if ls := c.localServer(addr); ls != nil {
		// No checksum of our own: nothing can damage the bytes between
		// here and the store, which computes the sum it returns from
		// the very buffer it writes.
		if err := ctx.Err(); err != nil {
			return 0, &ShardError{"put", addr, name, err}
		}
		var sum uint64
		var err error
		if bs, ok := ls.(LocalBufferedServer); ok && buffered {
			sum, err = bs.PutShardBuffered(ctx, name, data)
		} else {
			sum, err = ls.PutShard(ctx, name, data)
		}
		if err != nil {
			return 0, &ShardError{"put", addr, name, err}
		}
		return sum, nil
	}
	if pr := c.probe.Load(); pr != nil {
		pr.maybeProbe(addr) // a writer may find its servers local before it reads
	}
	sum := Sum(data)
	url := shardURL(addr, name)
	if buffered {
		url += "?" + ParamBuffered + "=true"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, url, bytes.NewReader(data))
	if err != nil {
		return 0, &ShardError{"put", addr, name, err}
	}
	req.ContentLength = int64(len(data))
	req.Header.Set(HeaderSum, FormatSum(sum))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, &ShardError{"put", addr, name, err}
	}
	defer drain(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		return 0, &ShardError{"put", addr, name, statusError(resp)}
	}
	var reply PutReply
	if err := json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&reply); err != nil {
		return 0, &ShardError{"put", addr, name, fmt.Errorf("decoding reply: %w", err)}
	}
	got, err := ParseSum(reply.Sum)
	if err != nil {
		return 0, &ShardError{"put", addr, name, fmt.Errorf("reply: %w", err)}
	}
	if got != sum || reply.Size != int64(len(data)) {
		return 0, &ShardError{"put", addr, name, fmt.Errorf("server stored sum %016x size %d, sent sum %016x size %d: %w",
			got, reply.Size, sum, len(data), ErrSumMismatch)}
	}
	return sum, nil
}

// ReadAt fills p with the shard's bytes starting at off. It either fills p
// completely or returns an error: reading past the end of the shard is an
// error wrapping io.ErrUnexpectedEOF. A corrupt block yields ErrCorrupt, never
// bytes.
func (c *Client) ReadAt(ctx context.Context, addr, name string, p []byte, off int64) (int, error) {
	if err := checkName("read", addr, name); err != nil {
		return 0, err
	}
	if off < 0 {
		return 0, &ShardError{"read", addr, name, fmt.Errorf("negative offset %d", off)}
	}
	if len(p) == 0 {
		return 0, nil
	}
	if ls := c.localServer(addr); ls != nil {
		if err := ctx.Err(); err != nil {
			return 0, &ShardError{"read", addr, name, err}
		}
		if err := ls.ReadShard(ctx, name, p, off); err != nil {
			return 0, &ShardError{"read", addr, name, err}
		}
		return len(p), nil
	}
	if pr := c.probe.Load(); pr != nil {
		pr.maybeProbe(addr)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, shardURL(addr, name), nil)
	if err != nil {
		return 0, &ShardError{"read", addr, name, err}
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+int64(len(p))-1))
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, &ShardError{"read", addr, name, err}
	}
	defer drain(resp.Body)
	switch resp.StatusCode {
	case http.StatusPartialContent:
	case http.StatusOK:
		// A server may answer a range covering the whole shard with 200.
		if off != 0 {
			return 0, &ShardError{"read", addr, name, fmt.Errorf("server ignored range at offset %d", off)}
		}
	case http.StatusRequestedRangeNotSatisfiable:
		return 0, &ShardError{"read", addr, name, fmt.Errorf("range %d+%d past end of shard: %w", off, len(p), io.ErrUnexpectedEOF)}
	default:
		return 0, &ShardError{"read", addr, name, statusError(resp)}
	}
	if resp.ContentLength >= 0 && resp.ContentLength < int64(len(p)) {
		return 0, &ShardError{"read", addr, name, fmt.Errorf("range %d+%d: shard holds only %d bytes there: %w",
			off, len(p), resp.ContentLength, io.ErrUnexpectedEOF)}
	}
	n, err := io.ReadFull(resp.Body, p)
	if err != nil {
		return n, &ShardError{"read", addr, name, fmt.Errorf("reading body: %w", err)}
	}
	return n, nil
}

// Stat returns a shard's size and checksum without reading it.
func (c *Client) Stat(ctx context.Context, addr, name string) (ShardInfo, error) {
	if err := checkName("stat", addr, name); err != nil {
		return ShardInfo{}, err
	}
	if ls := c.localServer(addr); ls != nil {
		if err := ctx.Err(); err != nil {
			return ShardInfo{}, &ShardError{"stat", addr, name, err}
		}
		info, err := ls.StatShard(ctx, name)
		if err != nil {
			return ShardInfo{}, &ShardError{"stat", addr, name, err}
		}
		return info, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, shardURL(addr, name), nil)
	if err != nil {
		return ShardInfo{}, &ShardError{"stat", addr, name, err}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return ShardInfo{}, &ShardError{"stat", addr, name, err}
	}
	defer drain(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return ShardInfo{}, &ShardError{"stat", addr, name, statusError(resp)}
	}
	sum, err := ParseSum(resp.Header.Get(HeaderSum))
	if err != nil {
		return ShardInfo{}, &ShardError{"stat", addr, name, fmt.Errorf("%s header: %w", HeaderSum, err)}
	}
	if resp.ContentLength < 0 {
		return ShardInfo{}, &ShardError{"stat", addr, name, errors.New("reply has no Content-Length")}
	}
	return ShardInfo{Size: resp.ContentLength, Sum: sum}, nil
}

// Delete removes a shard. Deleting a shard the server does not hold succeeds,
// so a retried or repeated delete is harmless.
func (c *Client) Delete(ctx context.Context, addr, name string) error {
	if err := checkName("delete", addr, name); err != nil {
		return err
	}
	if ls := c.localServer(addr); ls != nil {
		if err := ctx.Err(); err != nil {
			return &ShardError{"delete", addr, name, err}
		}
		if err := ls.DeleteShard(ctx, name); err != nil {
			return &ShardError{"delete", addr, name, err}
		}
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, shardURL(addr, name), nil)
	if err != nil {
		return &ShardError{"delete", addr, name, err}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return &ShardError{"delete", addr, name, err}
	}
	defer drain(resp.Body)
	if resp.StatusCode != http.StatusNoContent {
		return &ShardError{"delete", addr, name, statusError(resp)}
	}
	return nil
}

// Sync makes every shard PutBuffered stored on the chunkserver at addr
// before the call durable. A failed flush on the server is an error wrapping
// ErrSync. A server that answers 404 or 405 predates buffered writes, so it
// stored every shard durably and there is nothing to do.
func (c *Client) Sync(ctx context.Context, addr string) error {
	if ls := c.localServer(addr); ls != nil {
		if err := ctx.Err(); err != nil {
			return &ShardError{Op: "sync", Addr: addr, Err: err}
		}
		bs, ok := ls.(LocalBufferedServer)
		if !ok {
			return nil // it never buffered a shard
		}
		if err := bs.SyncShards(ctx); err != nil {
			return &ShardError{Op: "sync", Addr: addr, Err: err}
		}
		return nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+SyncPath, nil)
	if err != nil {
		return &ShardError{Op: "sync", Addr: addr, Err: err}
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return &ShardError{Op: "sync", Addr: addr, Err: err}
	}
	defer drain(resp.Body)
	switch resp.StatusCode {
	case http.StatusNoContent, http.StatusOK, http.StatusNotFound, http.StatusMethodNotAllowed:
		return nil
	}
	return &ShardError{Op: "sync", Addr: addr, Err: statusError(resp)}
}

// Status fetches a chunkserver's identity and usage.
func (c *Client) Status(ctx context.Context, addr string) (StatusReply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/status", nil)
	if err != nil {
		return StatusReply{}, fmt.Errorf("chunkserver %s: status: %w", addr, err)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return StatusReply{}, fmt.Errorf("chunkserver %s: status: %w", addr, err)
	}
	defer drain(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return StatusReply{}, fmt.Errorf("chunkserver %s: status: %w", addr, statusError(resp))
	}
	var st StatusReply
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<16)).Decode(&st); err != nil {
		return StatusReply{}, fmt.Errorf("chunkserver %s: status: decoding: %w", addr, err)
	}
	return st, nil
}

// StatusError is an HTTP reply the client did not expect. It unwraps to the
// sentinel the status stands for, when there is one.
type StatusError struct {
	Code int
	Msg  string // first line of the reply body
	kind error
}

func (e *StatusError) Error() string {
	s := "HTTP " + strconv.Itoa(e.Code)
	if e.Msg != "" {
		s += ": " + e.Msg
	}
	return s
}

func (e *StatusError) Unwrap() error { return e.kind }

// statusError maps a reply to an error; the sentinel decides what callers do
// (a corrupt shard means degraded read plus report, no space means place
// elsewhere), the message is for humans.
func statusError(resp *http.Response) error {
	if resp.Request != nil {
		if err := clusterauth.CheckResponse("chunkserver "+resp.Request.URL.Host, resp); err != nil {
			return err
		}
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	msg := strings.TrimSpace(string(body))
	if i := strings.IndexByte(msg, '\n'); i >= 0 {
		msg = msg[:i]
	}
	return NewStatusError(resp.StatusCode, resp.Header.Get(HeaderError), msg)
}

// NewStatusError is the error a chunkserver's reply of status code with
// HeaderError value kind (may be empty) stands for. The HTTP client and the
// in-process transport both build their errors with it, so a caller sees the
// same error whichever way the shard travelled.
func NewStatusError(code int, kind, msg string) *StatusError {
	e := &StatusError{Code: code, Msg: msg}
	switch {
	case code == http.StatusNotFound:
		e.kind = ErrNotFound
	case code == http.StatusInsufficientStorage:
		e.kind = ErrNoSpace
	case kind == ErrorCorrupt:
		e.kind = ErrCorrupt
	case code == http.StatusBadRequest && kind == ErrorSum:
		e.kind = ErrSumMismatch
	case code == http.StatusBadRequest && kind == ErrorName:
		e.kind = ErrBadName
	case kind == ErrorSync:
		e.kind = ErrSync
	}
	return e
}

// drain lets the connection be reused: a body must be read to EOF before the
// transport puts the connection back in its idle pool.
func drain(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 1<<20))
	_ = body.Close()
}
