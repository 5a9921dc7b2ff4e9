package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// LocalBlobStore keeps blobs in a local directory: blobs/<alg>/<hex> and
// uploads/<id>. It serves unit tests and single-host set-ups; production
// registries store blobs in the Dockyard file system (DFSBlobStore).
type LocalBlobStore struct {
	root string
}

var _ BlobStore = (*LocalBlobStore)(nil)

// NewLocalBlobStore creates the directory layout under root.
func NewLocalBlobStore(root string) (*LocalBlobStore, error) {
	for _, d := range []string{"blobs/sha256", "blobs/sha512", "uploads"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, fmt.Errorf("local blob store: %w", err)
		}
	}
	return &LocalBlobStore{root: root}, nil
}

func (s *LocalBlobStore) blobPath(d Digest) string {
	return filepath.Join(s.root, "blobs", d.Alg, d.Hex)
}

func (s *LocalBlobStore) uploadPath(id string) string {
	return filepath.Join(s.root, "uploads", id)
}

func notFound(err error, what string) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: %w", what, ErrBlobNotFound)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (s *LocalBlobStore) Stat(_ context.Context, d Digest) (int64, error) {
	fi, err := os.Stat(s.blobPath(d))
	if err != nil {
		return 0, notFound(err, "blob "+d.String())
	}
	return fi.Size(), nil
}

type localReader struct {
	*os.File
	size int64
}

func (r localReader) Size() int64 { return r.size }

func openLocal(path, what string) (BlobReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, notFound(err, what)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return localReader{File: f, size: fi.Size()}, nil
}

func (s *LocalBlobStore) Open(_ context.Context, d Digest) (BlobReader, error) {
	return openLocal(s.blobPath(d), "blob "+d.String())
}

func (s *LocalBlobStore) Delete(_ context.Context, d Digest) error {
	if err := os.Remove(s.blobPath(d)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting blob %s: %w", d, err)
	}
	return nil
}

func (s *LocalBlobStore) WalkBlobs(ctx context.Context, fn func(Digest, int64, time.Time) error) error {
	for _, alg := range []string{"sha256", "sha512"} {
		ents, err := os.ReadDir(filepath.Join(s.root, "blobs", alg))
		if err != nil {
			return fmt.Errorf("listing blobs: %w", err)
		}
		for _, e := range ents {
			if err := ctx.Err(); err != nil {
				return err
			}
			d, err := ParseDigest(alg + ":" + e.Name())
			if err != nil {
				continue // not a blob of ours
			}
			fi, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			if err := fn(d, fi.Size(), fi.ModTime()); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *LocalBlobStore) CreateUpload(_ context.Context, id string) error {
	f, err := os.OpenFile(s.uploadPath(id), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("creating upload %s: %w", id, err)
	}
	return f.Close()
}

type localWriter struct {
	f *os.File
}

func (w localWriter) Write(p []byte) (int, error) { return w.f.Write(p) }

func (w localWriter) Close() error {
	if err := w.f.Sync(); err != nil {
		w.f.Close()
		return err
	}
	return w.f.Close()
}

func (s *LocalBlobStore) WriteUpload(_ context.Context, id string, offset int64) (io.WriteCloser, error) {
	f, err := os.OpenFile(s.uploadPath(id), os.O_WRONLY, 0)
	if err != nil {
		return nil, notFound(err, "upload "+id)
	}
	if err := f.Truncate(offset); err != nil {
		f.Close()
		return nil, fmt.Errorf("upload %s: %w", id, err)
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("upload %s: %w", id, err)
	}
	return localWriter{f}, nil
}

func (s *LocalBlobStore) ReadUpload(_ context.Context, id string) (BlobReader, error) {
	return openLocal(s.uploadPath(id), "upload "+id)
}

func (s *LocalBlobStore) CommitUpload(_ context.Context, id string, size int64, d Digest) error {
	p := s.uploadPath(id)
	if err := os.Truncate(p, size); err != nil {
		return notFound(err, "upload "+id)
	}
	if err := os.Rename(p, s.blobPath(d)); err != nil {
		return fmt.Errorf("committing upload %s as %s: %w", id, d, err)
	}
	return nil
}

func (s *LocalBlobStore) DeleteUpload(_ context.Context, id string) error {
	if err := os.Remove(s.uploadPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting upload %s: %w", id, err)
	}
	return nil
}

func (s *LocalBlobStore) WalkUploads(ctx context.Context, fn func(string, time.Time) error) error {
	ents, err := os.ReadDir(filepath.Join(s.root, "uploads"))
	if err != nil {
		return fmt.Errorf("listing uploads: %w", err)
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return err
		}
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue
		}
		if err := fn(e.Name(), fi.ModTime()); err != nil {
			return err
		}
	}
	return nil
}
