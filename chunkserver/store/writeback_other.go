//go:build !linux

package store

import "os"

// startWriteback has no portable equivalent of sync_file_range; the data is
// written back on the kernel's schedule or by the next Sync.
func startWriteback(*os.File) error { return nil }

// syncData is fsync where fdatasync is not available.
func syncData(f *os.File) error { return f.Sync() }
