package chunkserver

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/cespare/xxhash/v2"
)

// The reads of a shard file that the store and a short-circuit client both
// make: the layout is ShardLayout's, the checks are the same on both sides.

// ReadFullAt reads exactly len(p) bytes of the shard file f at off; a file
// that ends first is damaged, so that is ErrCorrupt.
func ReadFullAt(f *os.File, p []byte, off int64) error {
	_, err := f.ReadAt(p, off)
	if errors.Is(err, io.EOF) {
		return fmt.Errorf("file truncated: %w", ErrCorrupt)
	}
	return err
}

// BadBlock checks data, consecutive checksummed blocks of blockSize bytes
// (the last may be short), against sums, their xxhash64s as a shard file's
// trailer holds them, starting with data's first block. It returns the index
// of the first block that fails, counted from data's first, or -1.
func BadBlock(data []byte, blockSize int64, sums []byte) int64 {
	for i := int64(0); i*blockSize < int64(len(data)); i++ {
		s := i * blockSize
		e := min(s+blockSize, int64(len(data)))
		if xxhash.Sum64(data[s:e]) != binary.LittleEndian.Uint64(sums[8*i:]) {
			return i
		}
	}
	return -1
}
