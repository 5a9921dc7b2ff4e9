package store

import (
	"errors"
	"fmt"
	"os"

	"github.com/dockyard/dockyard/chunkserver"
)

// ShardOpener is a store whose shards are files a reader on the same host
// may read itself (short-circuit reads, see chunkserver.ShortCircuit). Disk
// is one; Memory is not.
type ShardOpener interface {
	// OpenShard opens shard name's file read-only and says where its data
	// and block checksums are. The file's header has been checked and its
	// length matches it. The caller owns the file.
	OpenShard(name string) (*os.File, chunkserver.ShardLayout, error)
}

var _ ShardOpener = (*Disk)(nil)

// OpenShard implements ShardOpener. The file opened is whichever holds the
// name at the time; a Put replacing it later renames a new file over it, so
// the descriptor keeps reading the bytes it was opened on.
func (d *Disk) OpenShard(name string) (*os.File, chunkserver.ShardLayout, error) {
	fail := func(err error) (*os.File, chunkserver.ShardLayout, error) {
		return nil, chunkserver.ShardLayout{}, fmt.Errorf("open %s: %w", name, err)
	}
	if err := checkName(name); err != nil {
		return nil, chunkserver.ShardLayout{}, err
	}
	e, err := d.entry(name)
	if err != nil {
		return fail(err)
	}
	if e.corrupt {
		return fail(fmt.Errorf("header: %w", ErrCorrupt))
	}
	if d.keys != nil {
		return fail(ErrEncrypted) // no need to open what cannot be handed out
	}
	f, err := os.Open(d.Path(name))
	if errors.Is(err, os.ErrNotExist) {
		return fail(ErrNotFound) // deleted since the index lookup
	}
	if err != nil {
		return fail(err)
	}
	l, err := fileLayout(f)
	if err != nil {
		_ = f.Close()
		return fail(err)
	}
	return f, l, nil
}

// fileLayout checks an open shard file's header and length, read from the
// file itself so they belong to the same file whatever Puts ran meanwhile.
func fileLayout(f *os.File) (chunkserver.ShardLayout, error) {
	hdr, ok, err := readHeader(f)
	if err != nil {
		return chunkserver.ShardLayout{}, err
	}
	if !ok {
		return chunkserver.ShardLayout{}, fmt.Errorf("header: %w", ErrCorrupt)
	}
	if hdr.enc {
		// Whatever the store's keys, the file holds ciphertext.
		return chunkserver.ShardLayout{}, ErrEncrypted
	}
	fi, err := f.Stat()
	if err != nil {
		return chunkserver.ShardLayout{}, err
	}
	if fi.Size() != hdr.fileSize() {
		return chunkserver.ShardLayout{}, fmt.Errorf("file of %d bytes, header says %d: %w", fi.Size(), hdr.fileSize(), ErrCorrupt)
	}
	return chunkserver.ShardLayout{
		Size:       hdr.size,
		Sum:        hdr.sum,
		DataOffset: hdr.off,
		BlockSize:  BlockSize,
		SumsOffset: hdr.off + hdr.size,
	}, nil
}
