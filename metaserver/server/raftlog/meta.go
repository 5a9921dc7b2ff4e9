package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
)

// meta is the store's small durable state outside the segments, replaced
// atomically (write, fsync, rename, fsync the directory).
type meta struct {
	// first is the first index a head DeleteRange kept; entries below it
	// may still sit in the first segment but are not part of the log. 0
	// when nothing has been deleted from the head since the log was empty.
	first uint64
	// gen increases on every open and every tail truncation; records carry
	// the gen they were written under (see Store).
	gen uint64
}

const (
	metaName  = "meta"
	metaMagic = "DYRLMETA"
	metaSize  = 8 + 8 + 8 + 4
)

func (m meta) encode() []byte {
	b := make([]byte, 0, metaSize)
	b = append(b, metaMagic...)
	b = binary.LittleEndian.AppendUint64(b, m.first)
	b = binary.LittleEndian.AppendUint64(b, m.gen)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// readMeta returns the stored meta; ok is false when there is none yet.
func readMeta(dir string) (m meta, ok bool, err error) {
	path := filepath.Join(dir, metaName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return meta{}, false, nil
	}
	if err != nil {
		return meta{}, false, fmt.Errorf("reading raft log meta: %w", err)
	}
	if len(b) != metaSize || string(b[:8]) != metaMagic ||
		binary.LittleEndian.Uint32(b[24:]) != crc32.Checksum(b[:24], castagnoli) {
		return meta{}, false, &CorruptError{File: path, Reason: "bad meta file"}
	}
	return meta{first: binary.LittleEndian.Uint64(b[8:]), gen: binary.LittleEndian.Uint64(b[16:])}, true, nil
}

func writeMeta(dir string, m meta, nosync bool) error {
	path := filepath.Join(dir, metaName)
	tmp := path + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("writing raft log meta: %w", err)
	}
	_, err = f.Write(m.encode())
	if err == nil && !nosync {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil && !nosync {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("writing raft log meta: %w", err)
	}
	return nil
}

// syncDir makes creations, renames and removals in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
