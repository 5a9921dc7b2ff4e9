package metaserver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// This file holds what the HTTP API and the Go client share beyond types.go:
// the operation names, their argument records and the error envelope. Every
// operation is one POST /v1/op/{name} with the arguments as a JSON body; see
// docs/metaserver-api.md.

// Operation names. Mutations go through the Raft log; reads are answered by the
// leader after it confirmed its leadership.
const (
	OpLookup              = "lookup"
	OpGetAttr             = "getattr"
	OpGetInode            = "getinode"
	OpSetAttr             = "setattr"
	OpCreate              = "create"
	OpLink                = "link"
	OpUnlink              = "unlink"
	OpRmdir               = "rmdir"
	OpRename              = "rename"
	OpReadDir             = "readdir"
	OpSetXattr            = "setxattr"
	OpGetXattr            = "getxattr"
	OpListXattr           = "listxattr"
	OpRemoveXattr         = "removexattr"
	OpStatFS              = "statfs"
	OpResolvePath         = "resolvepath"
	OpCreateTree          = "createtree"
	OpAllocChunk          = "allocchunk"
	OpCommitExtents       = "commitextents"
	OpGetChunk            = "getchunk"
	OpReportBadShard      = "reportbadshard"
	OpHeartbeat           = "heartbeat"
	OpChunkservers        = "chunkservers"
	OpSetChunkserverState = "setchunkserverstate"
	OpCompleteRepair      = "completerepair"
	OpMembers             = "members"
	OpAddMember           = "addmember"
	OpRemoveMember        = "removemember"
	OpStatus              = "status"
	OpKVGet               = "kvget"
	OpKVList              = "kvlist"
	OpKVTxn               = "kvtxn"
)

// IsMutation reports whether op changes state. Only these carry a request
// id; the client retries them with the same id so they apply once.
func IsMutation(op string) bool { return mutations[op] }

// IsRead reports whether op reads state without changing it. By default the
// leader answers reads linearizably; see AllowStale.
func IsRead(op string) bool { return reads[op] }

var mutations = map[string]bool{
	OpSetAttr: true, OpCreate: true, OpLink: true, OpUnlink: true, OpRmdir: true,
	OpRename: true, OpSetXattr: true, OpRemoveXattr: true, OpCreateTree: true,
	OpAllocChunk: true, OpCommitExtents: true, OpReportBadShard: true,
	OpHeartbeat: true, OpSetChunkserverState: true, OpCompleteRepair: true,
	OpAddMember: true, OpRemoveMember: true, OpKVTxn: true,
}

// RequestIDHeader carries the request id of a mutation.
const RequestIDHeader = "Dockyard-Request-Id"

var reads = map[string]bool{
	OpLookup: true, OpGetAttr: true, OpGetInode: true, OpReadDir: true, OpGetXattr: true,
	OpListXattr: true, OpStatFS: true, OpResolvePath: true, OpGetChunk: true,
	OpChunkservers: true, OpKVGet: true, OpKVList: true,
}

// ConsistencyHeader set to "stale" asks for a stale read (see AllowStale).
const ConsistencyHeader = "Dockyard-Read-Consistency"

type staleKey struct{}

// AllowStale marks ctx so that reads made with it may be answered by any
// metaserver, follower or leader, from its own state without asking the
// others: cheaper and spread over the cluster, but possibly behind the
// latest writes (by the replication delay; a partitioned node, by more). For
// data that does not change once written, such as an image's file tree.
func AllowStale(ctx context.Context) context.Context {
	return context.WithValue(ctx, staleKey{}, true)
}

// StaleAllowed reports whether ctx was marked by AllowStale.
func StaleAllowed(ctx context.Context) bool {
	v, _ := ctx.Value(staleKey{}).(bool)
	return v
}

// Argument records of the operations.
type (
	// NameArgs: lookup, unlink, rmdir.
	NameArgs struct {
		Parent Ino    `json:"parent"`
		Name   string `json:"name"`
	}
	// InoArgs: getattr, getinode, listxattr.
	InoArgs struct {
		Ino Ino `json:"ino"`
	}
	SetAttrArgs struct {
		Ino Ino       `json:"ino"`
		In  SetAttrIn `json:"in"`
	}
	LinkArgs struct {
		Ino       Ino    `json:"ino"`
		NewParent Ino    `json:"newParent"`
		NewName   string `json:"newName"`
	}
	RenameArgs struct {
		OldParent Ino    `json:"oldParent"`
		OldName   string `json:"oldName"`
		NewParent Ino    `json:"newParent"`
		NewName   string `json:"newName"`
		Flags     uint32 `json:"flags,omitempty"`
	}
	ReadDirArgs struct {
		Dir   Ino    `json:"dir"`
		After string `json:"after,omitempty"`
		Limit int    `json:"limit,omitempty"`
		Plus  bool   `json:"plus,omitempty"`
	}
	// XattrArgs: setxattr, getxattr, removexattr.
	XattrArgs struct {
		Ino   Ino    `json:"ino"`
		Name  string `json:"name"`
		Value []byte `json:"value,omitempty"`
		Flags int    `json:"flags,omitempty"`
	}
	PathArgs struct {
		Path string `json:"path"`
	}
	CreateTreeArgs struct {
		Parent  Ino         `json:"parent"`
		Entries []TreeEntry `json:"entries"`
	}
	AllocChunkArgs struct {
		K          int   `json:"k"`
		M          int   `json:"m"`
		ShardSize  int64 `json:"shardSize"`
		Size       int64 `json:"size"`
		Replicated bool  `json:"replicated,omitempty"`
	}
	CommitExtentsArgs struct {
		Ino     Ino                  `json:"ino"`
		Extents []Extent             `json:"extents"`
		Sums    map[ChunkID][]uint64 `json:"sums,omitempty"`
		NewSize uint64               `json:"newSize"`
	}
	ChunkArgs struct {
		ID ChunkID `json:"id"`
	}
	BadShardArgs struct {
		ID     ChunkID `json:"id"`
		Index  int     `json:"index"`
		Reason string  `json:"reason,omitempty"`
	}
	SetStateArgs struct {
		ID    ServerID `json:"id"`
		State string   `json:"state"`
	}
	MemberArgs struct {
		ID       string `json:"id"`
		RaftAddr string `json:"raftAddr,omitempty"`
		APIAddr  string `json:"apiAddr,omitempty"`
	}
	KVGetArgs struct {
		Bucket string `json:"bucket"`
		Key    string `json:"key"`
	}
	KVGetReply struct {
		Value []byte `json:"value,omitempty"`
		Found bool   `json:"found"`
	}
	KVListArgs struct {
		Bucket string `json:"bucket"`
		Prefix string `json:"prefix,omitempty"`
		After  string `json:"after,omitempty"`
		Limit  int    `json:"limit,omitempty"`
	}
	KVTxnArgs struct {
		Conds []KVCond `json:"conds,omitempty"`
		Ops   []KVOp   `json:"ops"`
	}
)

// ErrUnavailable means the cluster could not answer now (no leader, node
// shutting down, leadership lost while a mutation was in flight). The client
// retries these with the same request id.
var ErrUnavailable = errors.New("metaserver unavailable")

// Error kinds of WireError.
const (
	KindErrno       = "errno"
	KindNotLeader   = "notleader"
	KindNoSpace     = "nospace"
	KindConflict    = "conflict"
	KindUnavailable = "unavailable"
	KindInvalid     = "invalid" // malformed request
	KindInternal    = "internal"
)

// WireError is how an error crosses the wire: {"error": WireError}.
type WireError struct {
	Kind   string        `json:"kind"`
	Op     string        `json:"op,omitempty"`
	Errno  syscall.Errno `json:"errno,omitempty"`
	Msg    string        `json:"msg,omitempty"`
	Leader string        `json:"leader,omitempty"`
}

// ErrBadRequest wraps request decoding failures (KindInvalid).
var ErrBadRequest = errors.New("bad request")

// ToWire turns an error into its wire form.
func ToWire(err error) *WireError {
	var e *Error
	var nl *ErrNotLeader
	switch {
	case err == nil:
		return nil
	case errors.As(err, &e):
		return &WireError{Kind: KindErrno, Op: e.Op, Errno: e.Errno, Msg: e.Msg}
	case errors.As(err, &nl):
		return &WireError{Kind: KindNotLeader, Leader: nl.Leader, Msg: err.Error()}
	case errors.Is(err, ErrNoSpace):
		return &WireError{Kind: KindNoSpace, Msg: err.Error()}
	case errors.Is(err, ErrConflict):
		return &WireError{Kind: KindConflict, Msg: err.Error()}
	case errors.Is(err, ErrUnavailable):
		return &WireError{Kind: KindUnavailable, Msg: err.Error()}
	case errors.Is(err, ErrBadRequest):
		return &WireError{Kind: KindInvalid, Msg: err.Error()}
	default:
		return &WireError{Kind: KindInternal, Msg: err.Error()}
	}
}

// Err rebuilds the error a caller matches with errors.Is/As.
func (w *WireError) Err() error {
	switch w.Kind {
	case KindErrno:
		return &Error{Op: w.Op, Errno: w.Errno, Msg: w.Msg}
	case KindNotLeader:
		return &ErrNotLeader{Leader: w.Leader}
	case KindNoSpace:
		return wrapSentinel(ErrNoSpace, w.Msg)
	case KindConflict:
		return wrapSentinel(ErrConflict, w.Msg)
	case KindUnavailable:
		return wrapSentinel(ErrUnavailable, w.Msg)
	case KindInvalid:
		return wrapSentinel(ErrBadRequest, w.Msg)
	default:
		return fmt.Errorf("metaserver: %s", w.Msg)
	}
}

// wrapSentinel rebuilds a sentinel error from its remote message. The
// message usually contains the sentinel's text already (the server wrapped
// it); it is then used as is, so the text does not repeat.
func wrapSentinel(s error, msg string) error {
	if msg == "" || msg == s.Error() {
		return s
	}
	if strings.Contains(msg, s.Error()) {
		return &remoteError{msg: msg, sentinel: s}
	}
	return fmt.Errorf("%s: %w", msg, s)
}

// remoteError is a remote message that already names its sentinel.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// Executor runs one operation: op is a name above, reqID is set for mutations,
// args and the returned reply are JSON. Errors are those of this package.
// The HTTP client is one Executor; an in-process node is another.
type Executor interface {
	Exec(ctx context.Context, op, reqID string, args []byte) ([]byte, error)
}
