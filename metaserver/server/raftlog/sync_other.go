//go:build !linux

package raftlog

import "os"

// datasync falls back to a full fsync where fdatasync is not available.
func datasync(f *os.File) error { return f.Sync() }

// allocated cannot tell a sparse file here; every file counts as written.
func allocated(fi os.FileInfo) int64 { return fi.Size() }
