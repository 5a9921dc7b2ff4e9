package metaserver

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
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
	OpCloneTree           = "clonetree"
	OpAllocChunk          = "allocchunk"
	OpCommitExtents       = "commitextents"
	OpGetChunk            = "getchunk"
	OpReportBadShard      = "reportbadshard"
	OpAbandonChunk        = "abandonchunk"
	OpHeartbeat           = "heartbeat"
	OpChunkservers        = "chunkservers"
	OpSetChunkserverState = "setchunkserverstate"
	OpCompleteRepair      = "completerepair"
	OpStrayShards         = "strayshards"
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
	OpRename: true, OpSetXattr: true, OpRemoveXattr: true, OpCreateTree: true, OpCloneTree: true,
	OpAllocChunk: true, OpCommitExtents: true, OpReportBadShard: true, OpAbandonChunk: true,
	OpHeartbeat: true, OpSetChunkserverState: true, OpCompleteRepair: true,
	OpAddMember: true, OpRemoveMember: true, OpKVTxn: true,
}

// RequestIDHeader carries the request id of a mutation.
const RequestIDHeader = "Dockyard-Request-Id"

var reads = map[string]bool{
	OpLookup: true, OpGetAttr: true, OpGetInode: true, OpReadDir: true, OpGetXattr: true,
	OpListXattr: true, OpStatFS: true, OpResolvePath: true, OpGetChunk: true,
	OpChunkservers: true, OpKVGet: true, OpKVList: true, OpStrayShards: true,
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
	// CloneTreeArgs: clonetree copies the tree at Src to NewParent/NewName.
	CloneTreeArgs struct {
		Src       Ino    `json:"src"`
		NewParent Ino    `json:"newParent"`
		NewName   string `json:"newName"`
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

// The binary codec. The hottest operations (create, lookup, getattr, unlink,
// rmdir) carry their arguments and their Attr reply in a compact binary form
// instead of JSON when the client speaks the stream protocol (see
// docs/metaserver-api.md): JSON encoding and reflection-driven decoding cost
// more CPU than the rest of such an operation's handling on the leader, and
// the arguments are decoded again by every replica applying the log entry.
//
// A binary record starts with BinaryMagic, a byte no JSON text starts with, so
// every decoder tells the two forms apart by the first byte; JSON stays valid
// everywhere, and entries written before this codec decode as before. The
// magic is followed by one byte naming the record type (so bytes of one
// record are never taken for another) and the fields in a fixed order:
// integers as varints, strings and byte strings as a uvarint length and the
// bytes.
const BinaryMagic byte = 0xb1

// Record types of the binary codec.
const (
	binNameArgs byte = 1 + iota
	binInoArgs
	binCreateIn
	binAttr
)

// ErrBadBinary is the cause of every binary record that cannot be decoded.
var ErrBadBinary = errors.New("malformed binary record")

// IsBinary reports whether b is a record of the binary codec.
func IsBinary(b []byte) bool { return len(b) > 0 && b[0] == BinaryMagic }

// AppendBinary appends v's binary record to b. ok is false when v's type has
// no binary form; such values travel as JSON.
func AppendBinary(b []byte, v any) (_ []byte, ok bool) {
	if !HasBinary(v) {
		return b, false
	}
	if b == nil {
		// One allocation of the right size instead of a few growing ones:
		// fixed fields take at most 10 bytes each.
		n := 128
		if c, isCreate := v.(CreateIn); isCreate {
			n += len(c.Name) + len(c.Target)
			for k, x := range c.Xattrs {
				n += 2*binary.MaxVarintLen64 + len(k) + len(x)
			}
		} else if a, isName := v.(NameArgs); isName {
			n += len(a.Name)
		}
		b = make([]byte, 0, n)
	}
	switch v := v.(type) {
	case NameArgs:
		b = append(b, BinaryMagic, binNameArgs)
		b = binary.AppendUvarint(b, uint64(v.Parent))
		return appendString(b, v.Name), true
	case InoArgs:
		b = append(b, BinaryMagic, binInoArgs)
		return binary.AppendUvarint(b, uint64(v.Ino)), true
	case CreateIn:
		b = append(b, BinaryMagic, binCreateIn)
		b = binary.AppendUvarint(b, uint64(v.Parent))
		b = appendString(b, v.Name)
		b = binary.AppendUvarint(b, uint64(v.Mode))
		b = binary.AppendUvarint(b, uint64(v.Uid))
		b = binary.AppendUvarint(b, uint64(v.Gid))
		b = binary.AppendUvarint(b, v.Rdev)
		b = appendString(b, v.Target)
		b = binary.AppendUvarint(b, uint64(len(v.Xattrs)))
		if len(v.Xattrs) > 0 {
			// Sorted, so one value always has one encoding.
			for _, k := range slices.Sorted(maps.Keys(v.Xattrs)) {
				b = appendString(b, k)
				b = appendString(b, string(v.Xattrs[k]))
			}
		}
		return append(b, boolByte(v.Exclusive)), true
	case Attr:
		b = append(b, BinaryMagic, binAttr)
		b = binary.AppendUvarint(b, uint64(v.Ino))
		b = binary.AppendUvarint(b, uint64(v.Mode))
		b = binary.AppendUvarint(b, uint64(v.Uid))
		b = binary.AppendUvarint(b, uint64(v.Gid))
		b = binary.AppendUvarint(b, v.Size)
		b = binary.AppendUvarint(b, uint64(v.Nlink))
		b = binary.AppendUvarint(b, v.Rdev)
		b = binary.AppendVarint(b, v.Atime)
		b = binary.AppendVarint(b, v.Mtime)
		b = binary.AppendVarint(b, v.Ctime)
		return binary.AppendUvarint(b, v.Gen), true
	}
	return b, false
}

// HasBinary reports whether values of v's type (a value or a pointer to one)
// have a binary form.
func HasBinary(v any) bool {
	switch v.(type) {
	case NameArgs, *NameArgs, InoArgs, *InoArgs, CreateIn, *CreateIn, Attr, *Attr:
		return true
	}
	return false
}

// Unmarshal decodes an argument record or a reply into v, a pointer: a
// binary record (see IsBinary) or JSON. It never panics on hostile input;
// malformed records are ErrBadBinary (binary) or JSON's syntax errors.
func Unmarshal(b []byte, v any) error {
	if !IsBinary(b) {
		return json.Unmarshal(b, v)
	}
	d := binDecoder{b: b}
	d.header()
	switch v := v.(type) {
	case *NameArgs:
		d.want(binNameArgs)
		v.Parent = Ino(d.uvarint())
		v.Name = d.string()
	case *InoArgs:
		d.want(binInoArgs)
		v.Ino = Ino(d.uvarint())
	case *CreateIn:
		d.want(binCreateIn)
		v.Parent = Ino(d.uvarint())
		v.Name = d.string()
		v.Mode = d.uint32()
		v.Uid = d.uint32()
		v.Gid = d.uint32()
		v.Rdev = d.uvarint()
		v.Target = d.string()
		n := d.uvarint()
		// Every xattr takes at least two bytes: a count beyond that is a
		// lie, and must not size an allocation.
		if d.err == nil && n > uint64(len(d.b))/2 {
			d.fail("%d xattrs in %d bytes", n, len(d.b))
		}
		v.Xattrs = nil
		if n > 0 && d.err == nil {
			v.Xattrs = make(map[string][]byte, n)
			for range n {
				k := d.string()
				v.Xattrs[k] = []byte(d.string())
			}
		}
		v.Exclusive = d.bool()
	case *Attr:
		d.want(binAttr)
		v.Ino = Ino(d.uvarint())
		v.Mode = d.uint32()
		v.Uid = d.uint32()
		v.Gid = d.uint32()
		v.Size = d.uvarint()
		v.Nlink = d.uint32()
		v.Rdev = d.uvarint()
		v.Atime = d.varint()
		v.Mtime = d.varint()
		v.Ctime = d.varint()
		v.Gen = d.uvarint()
	default:
		return fmt.Errorf("%w: no binary form for %T", ErrBadBinary, v)
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail("%d trailing bytes", len(d.b))
	}
	return d.err
}

// MarshalReply encodes an operation's result: in binary when asked to and
// the type has a binary form, else as JSON. A server answers a binary
// request in binary, so the reply's form follows the request's.
func MarshalReply(v any, bin bool) ([]byte, error) {
	if bin {
		if b, ok := AppendBinary(nil, v); ok {
			return b, nil
		}
	}
	return json.Marshal(v)
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}

// binDecoder reads fields off b; the first failure sticks and later reads
// return zero values, so a decode function checks once at the end.
type binDecoder struct {
	b   []byte
	err error
}

func (d *binDecoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: %s", ErrBadBinary, fmt.Sprintf(format, args...))
	}
	d.b = nil
}

func (d *binDecoder) header() {
	if len(d.b) < 2 {
		d.fail("%d bytes, too short for a header", len(d.b))
		return
	}
	d.b = d.b[1:] // the magic, checked by the caller
}

func (d *binDecoder) want(kind byte) {
	if d.err != nil {
		return
	}
	if d.b[0] != kind {
		d.fail("record type %d, want %d", d.b[0], kind)
		return
	}
	d.b = d.b[1:]
}

func (d *binDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad or truncated varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *binDecoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad or truncated varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *binDecoder) uint32() uint32 {
	v := d.uvarint()
	if v > math.MaxUint32 {
		d.fail("%d overflows 32 bits", v)
		return 0
	}
	return uint32(v)
}

func (d *binDecoder) string() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail("string of %d bytes, %d left", n, len(d.b))
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *binDecoder) bool() bool {
	if d.err != nil {
		return false
	}
	if len(d.b) == 0 || d.b[0] > 1 {
		d.fail("bad or missing bool")
		return false
	}
	v := d.b[0] == 1
	d.b = d.b[1:]
	return v
}

// The stream protocol: a client upgrades one HTTP/1.1 connection
// (POST StreamPath with "Connection: Upgrade" and "Upgrade: StreamProtocol";
// the server answers 101) and from then on sends operations as frames on it,
// any number in flight, answered in any order. It saves what HTTP costs per
// request (header parsing and writing, the transport's goroutine hand-offs,
// one more read per request) on the metadata path, where requests are small
// and that cost dominates. The upgrade request passes through the same
// authentication as every other request. Both directions carry frames:
//
//	uvarint length of the rest | uvarint call id | one byte | body
//
// In a request the byte holds flags (StreamStale: a stale read) and the body is
// uvarint len + op | uvarint len + request id | arguments (binary or JSON). In
// a reply the byte is StreamOK, with the reply as body, or StreamError, with a
// WireError as JSON.
const (
	StreamPath     = "/v1/stream"
	StreamProtocol = "dockyard-meta/1"

	StreamStale byte = 1 << 0

	StreamOK    byte = 0
	StreamError byte = 1
)

// ErrStreamFrame is the cause of every malformed stream frame.
var ErrStreamFrame = errors.New("malformed stream frame")

// AppendStreamFrame appends one frame: uvarint length of the rest | uvarint
// id | one byte | body.
func AppendStreamFrame(b []byte, id uint64, flag byte, body []byte) []byte {
	var hdr [binary.MaxVarintLen64 + 1]byte
	h := binary.AppendUvarint(hdr[:0], id)
	h = append(h, flag)
	b = binary.AppendUvarint(b, uint64(len(h)+len(body)))
	b = append(b, h...)
	return append(b, body...)
}

// AppendStreamRequest appends a request frame.
func AppendStreamRequest(b []byte, id uint64, flags byte, op, reqID string, args []byte) []byte {
	var hdr [2*binary.MaxVarintLen64 + 1]byte
	h := binary.AppendUvarint(hdr[:0], id)
	h = append(h, flags)
	h = binary.AppendUvarint(h, uint64(len(op)))
	body := uint64(len(h) + len(op) + uvarintLen(uint64(len(reqID))) + len(reqID) + len(args))
	b = binary.AppendUvarint(b, body)
	b = append(b, h...)
	b = append(b, op...)
	b = appendString(b, reqID)
	return append(b, args...)
}

func uvarintLen(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
}

// ReadStreamFrame reads one frame and returns what follows its length: at
// most limit bytes, else ErrStreamFrame. The returned slice is the caller's.
func ReadStreamFrame(br *bufio.Reader, limit int) ([]byte, error) {
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return nil, err
	}
	if n > uint64(limit) || n < 2 {
		return nil, fmt.Errorf("%w: length %d (limit %d)", ErrStreamFrame, n, limit)
	}
	f := make([]byte, n)
	if _, err := io.ReadFull(br, f); err != nil {
		return nil, err
	}
	return f, nil
}

// ParseStreamFrame splits a frame read by ReadStreamFrame into its id, its
// byte and its body.
func ParseStreamFrame(f []byte) (id uint64, flag byte, body []byte, err error) {
	id, k := binary.Uvarint(f)
	if k <= 0 || len(f) == k {
		return 0, 0, nil, fmt.Errorf("%w: bad call id", ErrStreamFrame)
	}
	return id, f[k], f[k+1:], nil
}

// ParseStreamRequest splits a request frame. The id is returned even when
// the rest is malformed, so the error can go back to the right caller.
func ParseStreamRequest(f []byte) (id uint64, flags byte, op, reqID string, args []byte, err error) {
	id, flags, body, err := ParseStreamFrame(f)
	if err != nil {
		return 0, 0, "", "", nil, err
	}
	d := binDecoder{b: body}
	op = d.string()
	reqID = d.string()
	if d.err != nil {
		return id, 0, "", "", nil, fmt.Errorf("%w: truncated op or request id", ErrStreamFrame)
	}
	return id, flags, op, reqID, d.b, nil
}
