package store_test

import (
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver/store"
)

// benchPushPattern writes shards the way `dockyard serve` stores a pushed
// layer: six disk stores (one per chunkserver), chunks of six shards of the
// given size (1 MiB: 4 MiB chunks at 4+2) each put on all six stores at once,
// up to 24 chunks in flight, and a Sync of every store after each 128 MiB of
// data (one PATCH of a 128 MiB layer). Besides the wall-clock rate it reports
// the process's CPU time, user and system, per GiB of shard bytes: on a
// machine whose two cores are shared with the client and with other work,
// CPU per byte is the figure that holds still from run to run, and what the
// write path costs everyone else.
func benchPushPattern(b *testing.B, shard int, opts ...store.DiskOption) {
	const width, inFlight = 6, 24
	perSync := (128 << 20) / (4 * shard) // chunks per 128 MiB PATCH
	stores := make([]*store.Disk, width)
	for i := range stores {
		stores[i] = openBenchDisk(b, append([]store.DiskOption{store.WithFlushInterval(0)}, opts...)...)
	}
	data := make([][]byte, inFlight*width)
	for i := range data {
		data[i] = randData(shard)
		data[i][0] = byte(i)
	}
	var (
		sem  = make(chan struct{}, inFlight)
		wg   sync.WaitGroup
		errs = make(chan error, 1)
	)
	fail := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	sync6 := func() {
		var sw sync.WaitGroup
		for _, s := range stores {
			sw.Go(func() {
				if err := s.Sync(); err != nil {
					fail(err)
				}
			})
		}
		sw.Wait()
	}
	written := 0
	b.SetBytes(int64(shard * width))
	b.ReportAllocs()
	u0, s0 := cpuTimes()
	for i := 0; b.Loop(); i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var cw sync.WaitGroup
			for j, s := range stores {
				cw.Go(func() {
					if _, err := s.PutBuffered(fmt.Sprintf("%016x.%d", i, j), data[(i%inFlight)*width+j]); err != nil {
						fail(err)
					}
				})
			}
			cw.Wait()
		}()
		if written++; written%perSync == 0 {
			wg.Wait()
			sync6()
			// Keep the disk from filling: the chunks of the PATCH before
			// this one go, as a registry's garbage would.
			if written >= 2*perSync {
				for c := written - 2*perSync; c < written-perSync; c++ {
					for j, s := range stores {
						if err := s.Delete(fmt.Sprintf("%016x.%d", c, j)); err != nil {
							fail(err)
						}
					}
				}
			}
		}
	}
	wg.Wait()
	sync6()
	u1, s1 := cpuTimes()
	select {
	case err := <-errs:
		b.Fatal(err)
	default:
	}
	gib := float64(written*width*shard) / (1 << 30)
	b.ReportMetric((u1-u0).Seconds()/gib, "user-s/GiB")
	b.ReportMetric((s1-s0).Seconds()/gib, "sys-s/GiB")
}

func cpuTimes() (user, sys time.Duration) {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0, 0
	}
	return time.Duration(ru.Utime.Nano()), time.Duration(ru.Stime.Nano())
}

func BenchmarkDiskPushPattern4x2x1MiB(b *testing.B) { benchPushPattern(b, 1<<20) }

// The same in the packed format (data at offset 64, not page-aligned), to
// measure what the aligned format saves the kernel's page-cache writes.
func BenchmarkDiskPushPatternPacked4x2x1MiB(b *testing.B) {
	benchPushPattern(b, 1<<20, store.WithPackedFormat())
}

func BenchmarkDiskPushPatternNoEarlyWriteback4x2x1MiB(b *testing.B) {
	benchPushPattern(b, 1<<20, store.WithoutEarlyWriteback())
}

// With 16 MiB chunks (4 MiB shards) a push makes a quarter of the files.
func BenchmarkDiskPushPattern4x2x4MiB(b *testing.B) { benchPushPattern(b, 4<<20) }
