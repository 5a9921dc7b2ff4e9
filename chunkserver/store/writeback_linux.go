package store

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/dockyard/dockyard/internal/fdcall"
)

// startWriteback asks the kernel to start writing f's dirty pages now
// instead of when its writeback timer fires; it does not wait for them.
func startWriteback(f *os.File) error {
	return fdcall.Retry(f, "sync_file_range", func(fd int) error {
		return unix.SyncFileRange(fd, 0, 0, unix.SYNC_FILE_RANGE_WRITE)
	})
}

// syncData makes f's data, and the metadata needed to read it back,
// durable: fdatasync skips the timestamps an fsync would also write.
func syncData(f *os.File) error {
	return fdcall.Retry(f, "fdatasync", unix.Fdatasync)
}
