package store

import "os"

// SetSyncFileHook replaces the call that makes a buffered shard file durable,
// so a test can make a flush fail.
func SetSyncFileHook(d *Disk, fn func(*os.File) error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.syncFile = fn
}
