package store_test

import (
	"testing"

	"github.com/dockyard/dockyard/chunkserver/store"
)

// The same store calls as in bench_test.go on an encrypted store
// (store.WithEncryption), for the cost of encryption at rest; compare each
// with the benchmark of the same name without "Encrypted".

func openBenchEncrypted(b *testing.B, opts ...store.DiskOption) *store.Disk {
	return openBenchDisk(b, append(opts, store.WithEncryption(newKeys(b, "bench")))...)
}

func BenchmarkDiskEncryptedPut1MiB(b *testing.B) { benchPut(b, openBenchEncrypted(b), 1<<20) }
func BenchmarkDiskEncryptedNoSyncPut1MiB(b *testing.B) {
	benchPut(b, openBenchEncrypted(b, store.WithoutSync()), 1<<20)
}
func BenchmarkDiskEncryptedReadAt1MiB(b *testing.B) {
	benchReadAt(b, openBenchEncrypted(b), 1<<20, 1<<20)
}
func BenchmarkDiskEncryptedReadAt4KiBOf1MiB(b *testing.B) {
	benchReadAt(b, openBenchEncrypted(b), 1<<20, 4<<10)
}
