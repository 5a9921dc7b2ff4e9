package chunkserver

import (
	"errors"
	"fmt"
)

// Short-circuit reads let a client on the same host as a chunkserver read
// shard files itself instead of having every byte copied by the server into a
// loopback socket and out again. The chunkserver listens on a Unix socket in
// its data directory (owner-only); a client asks there to open a shard and
// receives the open file's descriptor (SCM_RIGHTS) with the layout needed to
// read it, then reads ranges with pread and checks every block's xxhash64
// itself, exactly as the store does. See docs/chunkserver.md.
//
// The wire protocol is frames of a 4-byte little-endian length followed by
// that many bytes of JSON. The server speaks first with a
// ShortCircuitHello; then each ShortCircuitRequest gets one
// ShortCircuitReply, which carries the descriptor as ancillary data when it
// opened a shard.

// ShortCircuitPath is the HTTP endpoint (GET) where a chunkserver that offers
// short-circuit reads describes its socket as a ShortCircuitInfo. A server
// that does not offer them answers 404.
const ShortCircuitPath = "/shortcircuit"

// ShortCircuitSocket is the socket's file name in the data directory.
const ShortCircuitSocket = "shortcircuit.sock"

// ShortCircuitVersion is the protocol version in the hello.
const ShortCircuitVersion = 1

// ShortCircuitVersionBytes is the version a server speaks when it hands out
// no descriptors, because its shard files hold ciphertext (encryption at
// rest): it refuses SCOpen and answers SCRead with the verified plaintext
// instead, and says so with ShortCircuitHello.NoDescriptors. Clients that
// know only version 1 refuse such a socket and read over HTTP, so none of
// them ever reads a shard file that is not plaintext.
const ShortCircuitVersionBytes = 2

// Operations of a ShortCircuitRequest.
const (
	// SCOpen asks for a read-only descriptor of the named shard's file.
	SCOpen = "open"
	// SCCorrupt tells the server that a block of the named shard failed
	// its checksum on the client's read, so the server counts and reports
	// it as it does a corrupt read over HTTP. The reply carries nothing.
	SCCorrupt = "corrupt"
	// SCPut stores a shard: the request frame is followed by Size bytes of
	// data, and the reply carries the shard's checksum in Sum. Buffered
	// asks for a buffered write (see Client.PutBuffered).
	SCPut = "put"
	// SCRead reads Size bytes at Off of the named shard through the
	// store, which checks (and decrypts) them: the reply frame, with the
	// byte count in Size, is followed by that many bytes. Only servers of
	// ShortCircuitVersionBytes answer it.
	SCRead = "read"
)

// ErrShortCircuitIdentity: the socket answered as a different chunkserver
// (or a different run of it) than the one the client asked over HTTP, e.g.
// the path is stale or another host's server reported a path that exists
// here too.
var ErrShortCircuitIdentity = errors.New("short-circuit socket belongs to another chunkserver")

// ShortCircuitInfo is the JSON body of GET ShortCircuitPath.
type ShortCircuitInfo struct {
	// ID is the chunkserver's ID, as in StatusReply.
	ID string `json:"id"`
	// Socket is the absolute path of the Unix socket.
	Socket string `json:"socket"`
	// Instance is random per start of the server: the hello on the
	// socket must repeat it, so a client never mistakes another server's
	// socket (or a stale path) for this one's.
	Instance string `json:"instance"`
}

// ShortCircuitHello is the server's first frame on a new connection.
type ShortCircuitHello struct {
	Version  int    `json:"version"`
	ID       string `json:"id"`
	Instance string `json:"instance"`
	// NoDescriptors (version 2): read with SCRead, not SCOpen.
	NoDescriptors bool `json:"noDescriptors,omitempty"`
}

// ShortCircuitRequest is a client's frame.
type ShortCircuitRequest struct {
	Op       string `json:"op"`
	Name     string `json:"name"`
	Size     int64  `json:"size,omitempty"`
	Buffered bool   `json:"buffered,omitempty"`
	// Off is where an SCRead starts.
	Off int64 `json:"off,omitempty"`
}

// ShortCircuitReply answers one request. Status is 0 on success; otherwise
// it and Kind are the HTTP status and HeaderError value the HTTP API would
// have answered with, so the client builds the very same error
// (NewStatusError). A successful open carries the descriptor and Layout.
type ShortCircuitReply struct {
	Status int          `json:"status,omitempty"`
	Kind   string       `json:"kind,omitempty"`
	Msg    string       `json:"msg,omitempty"`
	Layout *ShardLayout `json:"layout,omitempty"`
	// Sum is a stored shard's checksum, in the reply to SCPut.
	Sum uint64 `json:"sum,omitempty"`
	// Size is how many bytes follow the reply to SCRead.
	Size int64 `json:"size,omitempty"`
}

// ShardLayout says where a shard's bytes and block checksums sit in its
// file: Size data bytes from DataOffset, then from SumsOffset one
// little-endian xxhash64 per BlockSize block of data (the last block may be
// short). The store fills it in from the file's verified header, so a client
// needs no knowledge of the header format.
type ShardLayout struct {
	Size       int64  `json:"size"`
	Sum        uint64 `json:"sum"`
	DataOffset int64  `json:"dataOffset"`
	BlockSize  int64  `json:"blockSize"`
	SumsOffset int64  `json:"sumsOffset"`
}

// Blocks is the number of checksummed blocks.
func (l ShardLayout) Blocks() int64 {
	if l.BlockSize <= 0 {
		return 0
	}
	return (l.Size + l.BlockSize - 1) / l.BlockSize
}

// FileSize is how long the shard file must be.
func (l ShardLayout) FileSize() int64 { return l.SumsOffset + 8*l.Blocks() }

// Check refuses a layout that is not self-consistent, so a client never
// reads with offsets a confused server sent.
func (l ShardLayout) Check() error {
	switch {
	case l.Size < 0, l.DataOffset < 0, l.BlockSize <= 0, l.BlockSize > 64<<20:
		return fmt.Errorf("shard layout %+v: out of range", l)
	case l.SumsOffset < l.DataOffset+l.Size:
		return fmt.Errorf("shard layout %+v: checksums overlap the data", l)
	}
	return nil
}

// maxFrame bounds a frame; every message is a few hundred bytes.
const maxFrame = 64 << 10
