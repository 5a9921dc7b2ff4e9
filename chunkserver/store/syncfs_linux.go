package store

import (
	"os"

	"golang.org/x/sys/unix"
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
	rc, err := d.f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Syncfs(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return &os.PathError{Op: "syncfs", Path: d.f.Name(), Err: serr}
	}
	return nil
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
