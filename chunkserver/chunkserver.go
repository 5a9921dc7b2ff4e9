// Package chunkserver holds what crosses the wire between a chunkserver and its
// callers: the shard naming rules, the whole-shard checksum, the errors callers
// match with errors.Is/As, and the Go HTTP client the fs package uses to put,
// read, stat and delete shards.
//
// It must stay free of server code: the shard stores live in
// chunkserver/store and the HTTP server, heartbeats, scrub and repair in
// chunkserver/server. It never imports the metaserver's server code, echo or
// go-fuse.
package chunkserver

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/cespare/xxhash/v2"
)

// Errors callers match with errors.Is. The client wraps them in *ShardError so
// the address and shard name travel with them; the stores return them wrapped
// with the shard name.
var (
	// ErrNotFound: the chunkserver has no shard of that name.
	ErrNotFound = errors.New("shard not found")
	// ErrCorrupt: a stored block failed its checksum; no bytes were returned.
	ErrCorrupt = errors.New("shard corrupt: checksum mismatch")
	// ErrNoSpace: the disk is full or the chunkserver is at its configured capacity.
	ErrNoSpace = errors.New("chunkserver out of space")
	// ErrBadName: the name is not a valid shard name.
	ErrBadName = errors.New("invalid shard name")
	// ErrSumMismatch: the bytes received do not hash to the checksum the sender stated.
	ErrSumMismatch = errors.New("shard checksum does not match the data sent")
	// ErrSync: the chunkserver could not make its buffered shards durable;
	// those acknowledged since the last successful Sync may be lost.
	ErrSync = errors.New("flushing buffered shards failed")
)

// HTTP headers of the chunkserver API.
const (
	// HeaderSum carries a shard's xxhash64 as 16 lower-case hex digits.
	HeaderSum = "X-Dockyard-Sum"
	// HeaderError carries a machine-readable error kind on failures, so a
	// client can tell a corrupt shard from any other server error.
	HeaderError = "X-Dockyard-Error"
	// ErrorCorrupt is the HeaderError value for a checksum failure.
	ErrorCorrupt = "corrupt"
	// ErrorNoSpace is the HeaderError value sent with 507.
	ErrorNoSpace = "nospace"
	// ErrorSum is the HeaderError value of a 400 for a checksum mismatch.
	ErrorSum = "sum"
	// ErrorName is the HeaderError value of a 400 for an invalid shard name.
	ErrorName = "name"
	// ErrorSync is the HeaderError value of a 500 for a failed Sync.
	ErrorSync = "sync"

	// ParamBuffered is the PUT query parameter asking for a buffered write
	// ("true" or "1"): acknowledged once written, durable after the next
	// Sync. Absent or false, a PUT is durable when acknowledged.
	ParamBuffered = "buffered"
	// SyncPath is where a POST makes the server's buffered shards durable.
	SyncPath = "/sync"
)

// MaxNameLen bounds a shard name; "%016x.%d" names are far shorter.
const MaxNameLen = 64

// ShardInfo is what Stat reports about a stored shard.
type ShardInfo struct {
	Size int64  `json:"size"`
	Sum  uint64 `json:"sum"`
}

// PutReply is the JSON body of a successful PUT (201).
type PutReply struct {
	Sum  string `json:"sum"`
	Size int64  `json:"size"`
}

// StatusReply is the JSON body of GET /status.
type StatusReply struct {
	ID       string `json:"id"`
	Capacity int64  `json:"capacity"`
	Used     int64  `json:"used"`
	Shards   int    `json:"shards"`
}

// Sum is the xxhash64 of a whole shard: the value recorded in
// metaserver.Shard.Sum and sent in HeaderSum.
func Sum(data []byte) uint64 { return xxhash.Sum64(data) }

// FormatSum renders a checksum the way the API sends it.
func FormatSum(sum uint64) string { return fmt.Sprintf("%016x", sum) }

// ParseSum parses a checksum in the API's hex form.
func ParseSum(s string) (uint64, error) {
	if s == "" || len(s) > 16 {
		return 0, fmt.Errorf("checksum %q: want 1-16 hex digits", s)
	}
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("checksum %q: %w", s, err)
	}
	return v, nil
}

// ValidName reports whether name is an acceptable shard name: lower-case hex
// digits, one dot, decimal digits. Chunkservers treat names as opaque, but the
// narrow alphabet means a name can never walk out of the data directory or
// collide with a temporary file.
func ValidName(name string) bool {
	if len(name) < 3 || len(name) > MaxNameLen {
		return false
	}
	dot := -1
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '.':
			if dot >= 0 {
				return false
			}
			dot = i
		case c >= '0' && c <= '9':
		case c >= 'a' && c <= 'f':
			if dot >= 0 {
				return false // the index after the dot is decimal
			}
		default:
			return false
		}
	}
	return dot > 0 && dot < len(name)-1
}

// ParseName splits a shard name into its chunk id and shard index, the inverse
// of metaserver.ShardName.
func ParseName(name string) (chunk uint64, index int, err error) {
	if !ValidName(name) {
		return 0, 0, fmt.Errorf("%q: %w", name, ErrBadName)
	}
	var dot int
	for dot = 0; name[dot] != '.'; dot++ {
	}
	chunk, err = strconv.ParseUint(name[:dot], 16, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("%q: chunk id: %w", name, ErrBadName)
	}
	idx, err := strconv.ParseUint(name[dot+1:], 10, 31)
	if err != nil {
		return 0, 0, fmt.Errorf("%q: shard index: %w", name, ErrBadName)
	}
	return chunk, int(idx), nil
}

// ShardError is a failed client call on one shard of one chunkserver. It
// unwraps to the sentinel (ErrNotFound, ErrCorrupt, ErrNoSpace, ...) or the
// transport error underneath.
type ShardError struct {
	Op   string // "put", "read", "stat", "delete", "sync" (no Name)
	Addr string
	Name string
	Err  error
}

func (e *ShardError) Error() string {
	if e.Name == "" { // a call on the whole server (sync)
		return fmt.Sprintf("chunkserver %s: %s: %v", e.Addr, e.Op, e.Err)
	}
	return fmt.Sprintf("chunkserver %s: %s shard %s: %v", e.Addr, e.Op, e.Name, e.Err)
}

func (e *ShardError) Unwrap() error { return e.Err }
