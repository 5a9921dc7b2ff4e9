package store

import (
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// writeParts writes bufs to f in order with writev, one system call for a
// shard's header, data and trailer instead of three.
func writeParts(f *os.File, bufs ...[]byte) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	err = rc.Write(func(fd uintptr) bool {
		for len(bufs) > 0 {
			n, err := unix.Writev(int(fd), bufs)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				werr = &os.PathError{Op: "writev", Path: f.Name(), Err: err}
				return true
			}
			if n == 0 {
				werr = &os.PathError{Op: "writev", Path: f.Name(), Err: io.ErrShortWrite}
				return true
			}
			bufs = advance(bufs, n)
		}
		return true // a regular file never asks to wait for the poller
	})
	if err != nil {
		return err
	}
	return werr
}

// advance drops the first n bytes from bufs, after a short write.
func advance(bufs [][]byte, n int) [][]byte {
	for len(bufs) > 0 && n >= len(bufs[0]) {
		n -= len(bufs[0])
		bufs = bufs[1:]
	}
	if len(bufs) > 0 {
		bufs[0] = bufs[0][n:]
	}
	return bufs
}
