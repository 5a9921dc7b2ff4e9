//go:build unix

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
	// One recvmsg usually brings the whole frame: each side sends one
	// frame and waits for the answer, so nothing of a next frame can be
	// queued behind it. The descriptor rides on the frame's first bytes;
	// every read keeps whatever control data came with it.
	buf := make([]byte, 512)
	have, want := 0, -1
	for want < 0 || have < want {
		if have == len(buf) {
			buf = append(buf, make([]byte, len(buf))...)
		}
		limit := len(buf)
		if want > 0 {
			limit = min(limit, want)
		}
		n, oobn, flags, _, err := c.ReadMsgUnix(buf[have:limit], oob)
		n, oobn = max(n, 0), max(oobn, 0) // -1 on some errors
		if oobn > 0 {
			got, perr := parseRights(oob[:oobn])
			fds = append(fds, got...)
			if perr != nil {
				return fail(perr)
			}
		}
		if flags&syscall.MSG_CTRUNC != 0 {
			return fail(errors.New("short-circuit frame: control data truncated"))
		}
		have += n
		if want < 0 && have >= 4 {
			size := binary.LittleEndian.Uint32(buf)
			if size > maxFrame {
				return fail(fmt.Errorf("short-circuit frame of %d bytes exceeds %d", size, maxFrame))
			}
			want = 4 + int(size)
			if have > want {
				return fail(errors.New("short-circuit frame: peer sent more than one frame"))
			}
			if want > len(buf) {
				buf = append(buf, make([]byte, want-len(buf))...)
			}
		}
		if want >= 0 && have >= want {
			break
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				if have == 0 {
					return fail(io.EOF)
				}
				return fail(io.ErrUnexpectedEOF)
			}
			return fail(err)
		}
		if n == 0 {
			return fail(io.ErrUnexpectedEOF)
		}
	}
	body := buf[4:want]
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

// ReadShortCircuitRequest reads one frame without looking for descriptors,
// from a reader that may buffer: the server reads requests this way, and the
// data of a put straight after its frame from the same reader.
func ReadShortCircuitRequest(r io.Reader, v any) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	size := binary.LittleEndian.Uint32(hdr[:])
	if size > maxFrame {
		return fmt.Errorf("short-circuit frame of %d bytes exceeds %d", size, maxFrame)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			return io.ErrUnexpectedEOF
		}
		return err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("short-circuit frame: %w", err)
	}
	return nil
}

// WriteShortCircuitPut sends a put request followed by its data in one
// writev.
func WriteShortCircuitPut(c *net.UnixConn, req ShortCircuitRequest, data []byte) error {
	return WriteShortCircuitData(c, req, data)
}

// WriteShortCircuitData sends v as one frame followed by data, in one
// writev: a put request, or the reply to a read.
func WriteShortCircuitData(c *net.UnixConn, v any, data []byte) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	frame := binary.LittleEndian.AppendUint32(make([]byte, 0, 4+len(body)), uint32(len(body)))
	frame = append(frame, body...)
	bufs := net.Buffers{frame, data}
	_, err = bufs.WriteTo(c)
	return err
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

// unlinked reports whether the file is gone from the store's directory.
func (h *scFile) unlinked() bool {
	var st syscall.Stat_t
	raw, err := h.f.SyscallConn()
	if err != nil {
		return true
	}
	var serr error
	if err := raw.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil || serr != nil {
		return true
	}
	return st.Nlink == 0
}
