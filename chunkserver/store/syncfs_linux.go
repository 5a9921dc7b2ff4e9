package store

import (
	"os"

	"golang.org/x/sys/unix"

	"github.com/dockyard/dockyard/internal/fdcall"
)

// dirFlusher flushes the file system of a directory with syncfs(2), which
// writes back every dirty page and inode of that file system, commits its
// journal and flushes the device cache, and (since Linux 5.8) reports a
// writeback error that happened since the directory was opened.
type dirFlusher struct{ f *os.File }

func openFlusher(dir string) (fsFlusher, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	return dirFlusher{f}, nil
}

func (d dirFlusher) flush() error {
	return fdcall.Retry(d.f, "syncfs", unix.Syncfs)
}

func (d dirFlusher) close() error { return d.f.Close() }

// groupCommit reports whether Puts may use the group commit; see syncGroup.
const groupCommit = true

func deviceOf(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, &os.PathError{Op: "stat", Path: dir, Err: err}
	}
	return uint64(st.Dev), nil
}
