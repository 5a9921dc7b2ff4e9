package fuse

import (
	"context"
	"errors"
	"syscall"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/metaserver"
)

// toErrno maps an error from the fs client or the metaserver to the errno the
// kernel passes on to the application. Namespace errors carry their errno;
// data-path failures have none and become EIO, which is what a local file
// system reports for an unreadable block.
func toErrno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var me *metaserver.Error
	if errors.As(err, &me) {
		return me.Errno
	}
	var en syscall.Errno
	if errors.As(err, &en) {
		return en
	}
	switch {
	case errors.Is(err, metaserver.ErrNoSpace), errors.Is(err, chunkserver.ErrNoSpace):
		return syscall.ENOSPC
	case errors.Is(err, context.Canceled):
		// The kernel cancels a request when the caller got a signal.
		return syscall.EINTR
	case errors.Is(err, context.DeadlineExceeded):
		return syscall.ETIMEDOUT
	}
	return syscall.EIO
}

// expected reports whether an errno is an ordinary answer (ENOENT to a
// lookup, EEXIST to an exclusive create) rather than a failure worth logging.
func expected(e syscall.Errno) bool {
	switch e {
	case syscall.EIO, syscall.ETIMEDOUT, syscall.ENOSPC:
		return false
	}
	return true
}
