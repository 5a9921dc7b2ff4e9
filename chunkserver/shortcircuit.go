package chunkserver

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
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

// Operations of a ShortCircuitRequest.
const (
	// SCOpen asks for a read-only descriptor of the named shard's file.
	SCOpen = "open"
	// SCCorrupt tells the server that a block of the named shard failed
	// its checksum on the client's read, so the server counts and reports
	// it as it does a corrupt read over HTTP. The reply carries nothing.
	SCCorrupt = "corrupt"
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
}

// ShortCircuitRequest is a client's frame.
type ShortCircuitRequest struct {
	Op   string `json:"op"`
	Name string `json:"name"`
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

// WriteShortCircuitFrame sends v as one frame, with f's descriptor attached
// when f is not nil. The receiver gets its own descriptor; the caller still
// owns f.
func WriteShortCircuitFrame(c *net.UnixConn, v any, f *os.File) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(body) > maxFrame {
		return fmt.Errorf("short-circuit frame of %d bytes exceeds %d", len(body), maxFrame)
	}
	buf := make([]byte, 4+len(body))
	binary.LittleEndian.PutUint32(buf, uint32(len(body)))
	copy(buf[4:], body)
	var oob []byte
	if f != nil {
		raw, err := f.SyscallConn()
		if err != nil {
			return err
		}
		var cerr error
		if err := raw.Control(func(fd uintptr) {
			oob = syscall.UnixRights(int(fd))
			// The descriptor is duplicated into the receiver by
			// sendmsg itself, so f may be closed as soon as we return.
			n, oobn, werr := c.WriteMsgUnix(buf, oob, nil)
			switch {
			case werr != nil:
				cerr = werr
			case n != len(buf) || oobn != len(oob):
				cerr = fmt.Errorf("short write of a short-circuit frame: %d of %d bytes", n, len(buf))
			}
		}); err != nil {
			return err
		}
		return cerr
	}
	_, err = c.Write(buf)
	return err
}

// ReadShortCircuitFrame reads one frame into v and returns the descriptor
// that came with it, if any, as a file the caller must close. A frame with
// more than one descriptor is refused (and they are closed).
func ReadShortCircuitFrame(c *net.UnixConn, v any) (*os.File, error) {
	var fds []int
	fail := func(err error) (*os.File, error) {
		for _, fd := range fds {
			_ = syscall.Close(fd)
		}
		return nil, err
	}
	oob := make([]byte, syscall.CmsgSpace(4*4))
	// The descriptor rides on the frame's first bytes, so every read of
	// the frame goes through recvmsg and keeps what control data it got.
	readFull := func(p []byte) error {
		for len(p) > 0 {
			n, oobn, flags, _, err := c.ReadMsgUnix(p, oob)
			n, oobn = max(n, 0), max(oobn, 0) // -1 on some errors
			if oobn > 0 {
				got, perr := parseRights(oob[:oobn])
				fds = append(fds, got...)
				if perr != nil {
					return perr
				}
			}
			if flags&syscall.MSG_CTRUNC != 0 {
				return errors.New("short-circuit frame: control data truncated")
			}
			p = p[n:]
			if err != nil {
				if len(p) == 0 {
					return nil
				}
				if errors.Is(err, io.EOF) {
					return io.ErrUnexpectedEOF
				}
				return err
			}
			if n == 0 {
				return io.ErrUnexpectedEOF
			}
		}
		return nil
	}
	var hdr [4]byte
	if err := readFull(hdr[:]); err != nil {
		return fail(err)
	}
	size := binary.LittleEndian.Uint32(hdr[:])
	if size > maxFrame {
		return fail(fmt.Errorf("short-circuit frame of %d bytes exceeds %d", size, maxFrame))
	}
	body := make([]byte, size)
	if err := readFull(body); err != nil {
		return fail(err)
	}
	if len(fds) > 1 {
		return fail(fmt.Errorf("short-circuit frame carries %d descriptors, want at most one", len(fds)))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fail(fmt.Errorf("short-circuit frame: %w", err))
	}
	if len(fds) == 0 {
		return nil, nil
	}
	return os.NewFile(uintptr(fds[0]), "shard"), nil
}

func parseRights(oob []byte) ([]int, error) {
	msgs, err := syscall.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("short-circuit frame: control data: %w", err)
	}
	var fds []int
	for i := range msgs {
		got, err := syscall.ParseUnixRights(&msgs[i])
		if err != nil {
			return fds, fmt.Errorf("short-circuit frame: control data: %w", err)
		}
		fds = append(fds, got...)
	}
	return fds, nil
}
