//go:build unix

// Package fdcall runs a system call on the descriptor of an *os.File,
// retrying it when a signal interrupts it, for the durability calls (syncfs,
// fdatasync) the standard library does not wrap.
package fdcall

import (
	"os"
	"syscall"
)

// Retry calls call with f's descriptor until it returns anything but EINTR.
// A failure of the call comes back as an *os.PathError naming op and f.
func Retry(f *os.File, op string, call func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = call(int(fd))
			if serr != syscall.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: op, Path: f.Name(), Err: serr}
	}
	return nil
}
