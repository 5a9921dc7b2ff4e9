package store

import "syscall"

// freeBytes is what an unprivileged writer can still allocate on the file
// system holding dir (f_bavail: root's reserved blocks are not ours to use).
func freeBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * int64(st.Bsize), nil
}
