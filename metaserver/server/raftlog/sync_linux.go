package raftlog

import (
	"os"
	"syscall"

	"github.com/dockyard/dockyard/internal/fdcall"
)

// datasync flushes f's data and only the metadata needed to read it back.
// Segments are zero-filled ahead of use, so for an append inside one that
// is the data blocks alone: no inode or extent change goes to the journal.
func datasync(f *os.File) error {
	return fdcall.Retry(f, "fdatasync", syscall.Fdatasync)
}

// allocated is how many bytes of the file have disk blocks: a sparse file
// (made under NoSync) has fewer than its size.
func allocated(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Blocks * 512
	}
	return fi.Size()
}
