// Command indexstat measures the converter's layer index on real layer blobs:
// how long indexing takes, how many checkpoints it finds and how far apart,
// how many of them are byte-aligned deflate block boundaries, how big the
// index is next to the layer, and how long a cold read of one small file
// takes (decompressing from the nearest checkpoint).
//
//	go run ./bench/lazyrun/indexstat [-spacing 4MiB] LAYER...
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"syscall"
	"time"

	"github.com/dockyard/dockyard/converter"
)

func main() {
	spacing := flag.Int64("spacing", converter.DefaultCheckpointSpacing, "checkpoint spacing in bytes of uncompressed stream")
	every := flag.Bool("every-boundary", false, "also count every deflate block boundary (spacing 1) to measure how many are byte-aligned")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "indexstat: usage: indexstat [-spacing N] LAYER...")
		os.Exit(2)
	}
	for _, p := range flag.Args() {
		if err := measure(p, *spacing, *every); err != nil {
			fmt.Fprintln(os.Stderr, "indexstat:", err)
			os.Exit(1)
		}
	}
}

func measure(p string, spacing int64, every bool) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	ctx := context.Background()
	start := time.Now()
	idx, err := converter.BuildIndex(ctx, f, st.Size(), "sha256:measure", converter.Options{CheckpointSpacing: spacing})
	if err != nil {
		return err
	}
	took := time.Since(start)
	enc, err := idx.MarshalBinary()
	if err != nil {
		return err
	}
	var aligned int
	var gaps []int64
	for i, c := range idx.Checkpoints {
		if c.Bits == 0 {
			aligned++
		}
		if i > 0 {
			gaps = append(gaps, c.Out-idx.Checkpoints[i-1].Out)
		}
	}
	slices.Sort(gaps)
	fmt.Printf("%s: %s, blob %.1f MiB, stream %.1f MiB, %d entries\n", p, idx.Format, mib(idx.CompressedSize), mib(idx.Size), len(idx.Entries))
	fmt.Printf("  indexing: %.2fs (%.0f MiB/s of stream)\n", took.Seconds(), mib(idx.Size)/took.Seconds())
	fmt.Printf("  checkpoints: %d (%d byte-aligned), spacing asked %.1f MiB", len(idx.Checkpoints), aligned, mib(spacing))
	if len(gaps) > 0 {
		fmt.Printf(", got median %.2f MiB, max %.2f MiB", mib(gaps[len(gaps)/2]), mib(gaps[len(gaps)-1]))
	}
	fmt.Println()
	fmt.Printf("  index: %d bytes = %.2f%% of the blob\n", len(enc), 100*float64(len(enc))/float64(idx.CompressedSize))

	// Cold reads of small files spread over the layer: fresh cache each time.
	var small []*converter.Entry
	for i := range idx.Entries {
		e := &idx.Entries[i]
		if e.Type() == syscall.S_IFREG && e.Size > 0 && e.Size < 16<<10 {
			small = append(small, e)
		}
	}
	if len(small) > 0 {
		var total time.Duration
		var read int64
		n := min(20, len(small))
		for i := 0; i < n; i++ {
			e := small[i*len(small)/n]
			c := &countingReaderAt{r: f}
			lr := converter.NewLayerReader(c, idx, converter.NewSpanCache(64<<20))
			t0 := time.Now()
			if _, err := io.Copy(io.Discard, lr.File(e)); err != nil {
				return fmt.Errorf("%s: %w", e.Path, err)
			}
			total += time.Since(t0)
			read += c.n
		}
		fmt.Printf("  cold read of one small file: mean %.1f ms, %.2f MiB of blob read (mean of %d files)\n",
			float64(total.Microseconds())/1000/float64(n), mib(read/int64(n)), n)
	}
	if every && idx.Format == converter.FormatGzip {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		all, err := converter.BuildIndex(ctx, f, st.Size(), "sha256:measure", converter.Options{CheckpointSpacing: 1})
		if err != nil {
			return err
		}
		var al int
		for _, c := range all.Checkpoints[1:] {
			if c.Bits == 0 {
				al++
			}
		}
		nb := len(all.Checkpoints) - 1
		fmt.Printf("  deflate block boundaries: %d, byte-aligned %d (%.1f%%), one every %.0f KiB of stream on average\n",
			nb, al, 100*float64(al)/float64(max(nb, 1)), float64(all.Size)/1024/float64(max(nb, 1)))
	}
	return nil
}

type countingReaderAt struct {
	r io.ReaderAt
	n int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.n += int64(n)
	return n, err
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
