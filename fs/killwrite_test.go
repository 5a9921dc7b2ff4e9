package fs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"syscall"
	"testing"
	"time"
)

// killingReader hands out src and runs kill once, after the first at bytes
// have been read, so a chunkserver dies while the writer is in the middle of
// the file: some chunks stored, some encoding, some in flight.
type killingReader struct {
	src  io.Reader
	at   int64
	read int64
	once sync.Once
	kill func()
}

func (r *killingReader) Read(p []byte) (int, error) {
	if r.read >= r.at {
		r.once.Do(r.kill)
	}
	if rest := r.at - r.read; rest > 0 && int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := r.src.Read(p)
	r.read += int64(n)
	return n, err
}

// TestRealKillDuringWrite stops a chunkserver halfway through a write. The
// metaserver still counts it as up for a while, so placements keep naming
// it: the write must route around it and succeed, and every byte must read
// back.
func TestRealKillDuringWrite(t *testing.T) {
	opt := Options{ChunkSize: testChunk}
	rc := newRaftCluster(t, 7, 0)
	want := randBytes(21, 24*testChunk+123)
	victim := rc.servers[3].Addr()
	r := &killingReader{src: bytes.NewReader(want), at: int64(len(want) / 2), kill: func() { rc.kill(victim) }}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := rc.client(opt).WriteFile(ctx, "/f", r, 0o644); err != nil {
		t.Fatalf("write with a chunkserver killed halfway: %v", err)
	}
	if got := readAll(t, rc.client(opt), "/f"); !bytes.Equal(got, want) {
		t.Fatalf("read back differs at %d", firstDiff(got, want))
	}
	for _, ch := range rc.chunksOf("/f") {
		if !ch.Committed {
			t.Fatalf("chunk %d of the file is not committed", ch.ID)
		}
	}
}

// TestRealKillTooManyDuringWrite leaves fewer chunkservers than a chunk's
// redundancy needs halfway through a write: the write fails with an error
// (never a hang, never success), and what was on the file system before is
// untouched: a file written earlier reads back whole and the failed file,
// if it exists at all, holds only committed, readable bytes.
func TestRealKillTooManyDuringWrite(t *testing.T) {
	opt := Options{ChunkSize: testChunk}
	rc := newRaftCluster(t, 7, 0)
	before := randBytes(22, 3*testChunk+5)
	if _, err := rc.client(opt).WriteFile(context.Background(), "/before", bytes.NewReader(before), 0o644); err != nil {
		t.Fatal(err)
	}
	want := randBytes(23, 16*testChunk)
	// Five of seven die: two remain, fewer than even m+1 = 3 replicas.
	r := &killingReader{src: bytes.NewReader(want), at: int64(len(want) / 2), kill: func() {
		for _, s := range rc.servers[:5] {
			rc.kill(s.Addr())
		}
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	_, err := rc.client(opt).WriteFile(ctx, "/f", r, 0o644)
	if err == nil {
		t.Fatal("write succeeded with 2 of 7 chunkservers left")
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("write hung until the test's deadline: %v", err)
	}
	t.Logf("write failed as expected: %v", err)

	// The failed file holds a prefix of what was written, all of it
	// committed: the size the metaserver has never covers bytes whose
	// chunk was not stored.
	if a, err := rc.meta.ResolvePath(context.Background(), "/f"); err == nil {
		for _, ch := range rc.chunksOf("/f") {
			if !ch.Committed {
				t.Fatalf("failed write left chunk %d uncommitted in the file", ch.ID)
			}
		}
		if a.Size > uint64(len(want)) {
			t.Fatalf("failed file is %d bytes, more than the %d written", a.Size, len(want))
		}
	} else if !errors.Is(err, syscall.ENOENT) {
		t.Fatal(err)
	}
	// Bring nothing back: /before's chunks may have lost up to m shards
	// with the five servers, so only those whose shards survive can be
	// checked. Every chunk either reads exactly or fails as unreadable.
	f, err := rc.client(opt).OpenPath(context.Background(), "/before")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, len(before))
	if _, err := f.ReadAt(got, 0); err != nil && !errors.Is(err, ErrUnreadable) {
		t.Fatalf("reading an older file after the kill: %v (want its bytes or ErrUnreadable)", err)
	} else if err == nil && !bytes.Equal(got, before) {
		t.Fatalf("older file reads back wrong bytes at %d", firstDiff(got, before))
	}
}
