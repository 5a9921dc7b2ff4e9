package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// testBlobStore is the conformance suite every BlobStore runs: uploads,
// resumed writes that overwrite a failed request's leftovers, atomic commit,
// deduplicated replace, walking and deletion. It fails if the test leaves
// uploads or blobs behind.
func testBlobStore(t *testing.T, s BlobStore) {
	ctx := context.Background()
	data := bytes.Repeat([]byte("dockyard-"), 100_000) // 900 kB: several chunks on a DFS with small chunks
	d := digestOf("sha256", data)

	if _, err := s.Stat(ctx, d); !errors.Is(err, ErrBlobNotFound) {
		t.Fatalf("Stat of absent blob: %v", err)
	}
	if _, err := s.Open(ctx, d); !errors.Is(err, ErrBlobNotFound) {
		t.Fatalf("Open of absent blob: %v", err)
	}
	if _, err := s.WriteUpload(ctx, "0000000000000000000000000000dead", 0); !errors.Is(err, ErrBlobNotFound) {
		t.Fatalf("WriteUpload of absent upload: %v", err)
	}

	id := newID()
	if err := s.CreateUpload(ctx, id); err != nil {
		t.Fatal(err)
	}
	write := func(off int64, b []byte) {
		t.Helper()
		w, err := s.WriteUpload(ctx, id, off)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(w, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	write(0, data[:300_000])
	// A failed request wrote garbage past the recorded end...
	write(300_000, bytes.Repeat([]byte{0xff}, 500_000))
	// ...which the retry, starting at the recorded end, replaces.
	write(300_000, data[300_000:600_000])
	write(600_000, data[600_000:])
	ur, err := s.ReadUpload(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, ur); !bytes.Equal(got, data) {
		t.Fatalf("upload reads %d bytes, want %d equal bytes", len(got), len(data))
	}
	found := false
	if err := s.WalkUploads(ctx, func(u string, mod time.Time) error {
		found = found || u == id
		return nil
	}); err != nil || !found {
		t.Fatalf("WalkUploads: found=%v err=%v", found, err)
	}
	if err := s.CommitUpload(ctx, id, int64(len(data)), d); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Stat(ctx, d); err != nil || n != int64(len(data)) {
		t.Fatalf("Stat after commit: %d %v", n, err)
	}
	br, err := s.Open(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if br.Size() != int64(len(data)) {
		t.Fatalf("Size %d", br.Size())
	}
	p := make([]byte, 9)
	if _, err := br.ReadAt(p, 450_000); err != nil || string(p) != "dockyard-" {
		t.Fatalf("ReadAt middle: %q %v", p, err)
	}
	if got := readAll(t, br); !bytes.Equal(got, data) {
		t.Fatal("blob differs from upload")
	}

	// A second upload of the same digest, committed from a longer file (the
	// session's size is what counts), replaces the first copy.
	id2 := newID()
	if err := s.CreateUpload(ctx, id2); err != nil {
		t.Fatal(err)
	}
	w, err := s.WriteUpload(ctx, id2, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(data)
	w.Write([]byte("trailing junk"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.CommitUpload(ctx, id2, int64(len(data)), d); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Stat(ctx, d); err != nil || n != int64(len(data)) {
		t.Fatalf("Stat after re-commit: %d %v", n, err)
	}

	blobs := 0
	if err := s.WalkBlobs(ctx, func(got Digest, size int64, mod time.Time) error {
		if got != d || size != int64(len(data)) || mod.IsZero() {
			t.Errorf("WalkBlobs: %s %d %v", got, size, mod)
		}
		blobs++
		return nil
	}); err != nil || blobs != 1 {
		t.Fatalf("WalkBlobs: %d blobs, %v", blobs, err)
	}

	// An empty blob.
	id3 := newID()
	if err := s.CreateUpload(ctx, id3); err != nil {
		t.Fatal(err)
	}
	empty := digestOf("sha512", nil)
	if err := s.CommitUpload(ctx, id3, 0, empty); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Stat(ctx, empty); err != nil || n != 0 {
		t.Fatalf("empty blob: %d %v", n, err)
	}

	// Cancel, delete, and leave nothing behind.
	id4 := newID()
	if err := s.CreateUpload(ctx, id4); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{s.DeleteUpload(ctx, id4), s.DeleteUpload(ctx, id4), s.Delete(ctx, d), s.Delete(ctx, d), s.Delete(ctx, empty)} {
		if err != nil {
			t.Fatalf("delete: %v", err)
		}
	}
	s.WalkBlobs(ctx, func(got Digest, _ int64, _ time.Time) error {
		t.Errorf("blob left behind: %s", got)
		return nil
	})
	s.WalkUploads(ctx, func(u string, _ time.Time) error {
		t.Errorf("upload left behind: %s", u)
		return nil
	})
}

func readAll(t *testing.T, r BlobReader) []byte {
	t.Helper()
	defer r.Close()
	b, err := io.ReadAll(io.NewSectionReader(r, 0, r.Size()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestLocalBlobStore(t *testing.T) {
	s, err := NewLocalBlobStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	testBlobStore(t, s)
}

func TestDFSBlobStore(t *testing.T) {
	testBlobStore(t, newDFSStore(t))
}
