package store_test

import (
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/dockyard/dockyard/chunkserver/store"
)

// The benchmarks measure one store call on 1 MiB shards, the shard size of a
// default 4 MiB chunk with 4+2 coding, and 4 KiB reads, the smallest a FUSE
// read asks for. Disk Put includes the two fsyncs it makes per shard.

func benchPut(b *testing.B, s store.Store, size int) {
	data := randData(size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		// Every Put makes a new shard, as the write path does; the one from
		// 64 Puts ago is deleted so the disk does not fill. (Overwriting
		// instead would measure ext4's flush-on-replace, not a Put.)
		if _, err := s.Put(fmt.Sprintf("%016x.0", i), data); err != nil {
			b.Fatal(err)
		}
		if i >= 64 {
			if err := s.Delete(fmt.Sprintf("%016x.0", i-64)); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func benchReadAt(b *testing.B, s store.Store, size, readSize int) {
	const shards = 16
	for i := range shards {
		if _, err := s.Put(fmt.Sprintf("%016x.0", i), randData(size)); err != nil {
			b.Fatal(err)
		}
	}
	p := make([]byte, readSize)
	b.SetBytes(int64(readSize))
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		off := int64(i*readSize) % int64(size-readSize+1)
		if _, err := s.ReadAt(fmt.Sprintf("%016x.0", i%shards), p, off); err != nil {
			b.Fatal(err)
		}
	}
}

func randData(n int) []byte {
	b := make([]byte, n)
	x := uint64(88172645463325252)
	for i := range b {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		b[i] = byte(x)
	}
	return b
}

func openBenchDisk(b *testing.B, opts ...store.DiskOption) *store.Disk {
	d, err := store.OpenDisk(b.TempDir(), 0, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Close() })
	return d
}

func BenchmarkDiskPut1MiB(b *testing.B) { benchPut(b, openBenchDisk(b), 1<<20) }
func BenchmarkDiskNoSyncPut1MiB(b *testing.B) {
	benchPut(b, openBenchDisk(b, store.WithoutSync()), 1<<20)
}
func BenchmarkDiskReadAt1MiB(b *testing.B)       { benchReadAt(b, openBenchDisk(b), 1<<20, 1<<20) }
func BenchmarkDiskReadAt4KiBOf1MiB(b *testing.B) { benchReadAt(b, openBenchDisk(b), 1<<20, 4<<10) }
func BenchmarkMemoryPut1MiB(b *testing.B)        { benchPut(b, store.NewMemory(0), 1<<20) }
func BenchmarkMemoryReadAt1MiB(b *testing.B)     { benchReadAt(b, store.NewMemory(0), 1<<20, 1<<20) }

// BenchmarkDiskPut1MiBx8 runs eight Puts at a time, as a chunkserver serving
// several writers does, so fsyncs of different shards overlap.
func BenchmarkDiskPut1MiBx8(b *testing.B) { benchPutx8(b, openBenchDisk(b)) }

// BenchmarkDiskGroupCommitPut1MiBx8 is the same with the Puts sharing
// file-system flushes (store.WithGroupCommit).
func BenchmarkDiskGroupCommitPut1MiBx8(b *testing.B) {
	benchPutx8(b, openBenchDisk(b, store.WithGroupCommit()))
}

func benchPutx8(b *testing.B, d *store.Disk) {
	data := randData(1 << 20)
	var seq atomic.Int64
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	b.SetParallelism(4) // x GOMAXPROCS (2 here) = 8 writers
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := seq.Add(1)
			if _, err := d.Put(fmt.Sprintf("%016x.1", i), data); err != nil {
				b.Error(err)
				return
			}
			// The Put of i-64 may still be in flight on another goroutine.
			if i > 64 {
				if err := d.Delete(fmt.Sprintf("%016x.1", i-64)); err != nil && !errors.Is(err, store.ErrNotFound) {
					b.Error(err)
					return
				}
			}
		}
	})
}

// The buffered write path: PutBuffered of 1 MiB shards with a Sync after
// every 64 (a 64 MiB file fsynced), the Sync's cost spread over its Puts.
// Without early writeback the Sync has to write all 64 MiB itself.
func BenchmarkDiskPutBuffered1MiBSyncEvery64(b *testing.B) {
	benchPutBuffered(b, openBenchDisk(b, store.WithFlushInterval(-1)))
}

func BenchmarkDiskPutBufferedNoEarlyWriteback1MiBSyncEvery64(b *testing.B) {
	benchPutBuffered(b, openBenchDisk(b, store.WithFlushInterval(-1), store.WithoutEarlyWriteback()))
}

func benchPutBuffered(b *testing.B, d *store.Disk) {
	data := randData(1 << 20)
	b.SetBytes(1 << 20)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := d.PutBuffered(fmt.Sprintf("%016x.0", i), data); err != nil {
			b.Fatal(err)
		}
		if i >= 128 {
			if err := d.Delete(fmt.Sprintf("%016x.0", i-128)); err != nil {
				b.Fatal(err)
			}
		}
		i++
		if i%64 == 0 {
			if err := d.Sync(); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := d.Sync(); err != nil {
		b.Fatal(err)
	}
}
