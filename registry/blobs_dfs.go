package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"syscall"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/metaserver"
)

// DFSRoot is where the registry keeps its files in the Dockyard file system:
// blobs/<alg>/<hex> and uploads/<id>.
const DFSRoot = "/.dockyard/registry"

// DFSBlobStore keeps blobs as files of the Dockyard file system, so they are
// erasure coded across chunkservers and a converted layer can read its bytes
// in place. An upload is a file under uploads/ that is renamed to its digest
// once verified: a rename is one metaserver command, which makes commit
// atomic and keeps one copy per digest whatever the number of repositories.
type DFSBlobStore struct {
	c    *fs.Client
	root string
}

var _ BlobStore = (*DFSBlobStore)(nil)

// NewDFSBlobStore creates the directory layout under DFSRoot.
func NewDFSBlobStore(ctx context.Context, c *fs.Client) (*DFSBlobStore, error) {
	s := &DFSBlobStore{c: c, root: DFSRoot}
	for _, d := range []string{"blobs/sha256", "blobs/sha512", "uploads"} {
		if _, err := c.MkdirAll(ctx, path.Join(s.root, d), 0o755); err != nil {
			return nil, fmt.Errorf("dfs blob store: %w", dfsErr(err))
		}
	}
	return s, nil
}

func (s *DFSBlobStore) blobPath(d Digest) string    { return path.Join(s.root, "blobs", d.Alg, d.Hex) }
func (s *DFSBlobStore) uploadPath(id string) string { return path.Join(s.root, "uploads", id) }

// dfsErr classifies file-system errors: a missing file is ErrBlobNotFound, no
// chunkserver with room is ErrStoreFull (507, saying so), and conditions that
// pass (no leader) are ErrStoreUnavailable so clients see 503 and retry.
func dfsErr(err error) error {
	var nl *metaserver.ErrNotLeader
	switch {
	case err == nil:
		return nil
	case errors.Is(err, syscall.ENOENT):
		return fmt.Errorf("%w: %w", ErrBlobNotFound, err)
	case errors.Is(err, metaserver.ErrNoSpace), errors.Is(err, chunkserver.ErrNoSpace):
		return fmt.Errorf("%w: %w", ErrStoreFull, err)
	case errors.As(err, &nl):
		return fmt.Errorf("%w: %w", ErrStoreUnavailable, err)
	}
	return err
}

func (s *DFSBlobStore) Stat(ctx context.Context, d Digest) (int64, error) {
	a, err := s.c.Stat(ctx, s.blobPath(d))
	if err != nil {
		return 0, fmt.Errorf("blob %s: %w", d, dfsErr(err))
	}
	return int64(a.Size), nil
}

type dfsReader struct {
	f    *fs.File
	size int64
}

func (r dfsReader) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }

// ReadData lends the bytes from the fs block cache (see sendWhole).
func (r dfsReader) ReadData(p []byte, off int64) (fs.Data, error) { return r.f.ReadDataKept(p, off) }
func (r dfsReader) Size() int64                                   { return r.size }
func (r dfsReader) Close() error                                  { return r.f.Close() }

func (s *DFSBlobStore) open(ctx context.Context, p, what string) (BlobReader, error) {
	f, err := s.c.OpenPath(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, dfsErr(err))
	}
	return dfsReader{f: f, size: int64(f.Attr().Size)}, nil
}

func (s *DFSBlobStore) Open(ctx context.Context, d Digest) (BlobReader, error) {
	return s.open(ctx, s.blobPath(d), "blob "+d.String())
}

func (s *DFSBlobStore) remove(ctx context.Context, p, what string) error {
	if err := s.c.Remove(ctx, p); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("deleting %s: %w", what, dfsErr(err))
	}
	return nil
}

func (s *DFSBlobStore) Delete(ctx context.Context, d Digest) error {
	return s.remove(ctx, s.blobPath(d), "blob "+d.String())
}

// walk lists dir and stats each entry for its size and modification time.
func (s *DFSBlobStore) walk(ctx context.Context, dir string, fn func(name string, a metaserver.Attr) error) error {
	ents, err := s.c.ReadDir(ctx, dir)
	if err != nil {
		return fmt.Errorf("listing %s: %w", dir, dfsErr(err))
	}
	for _, e := range ents {
		a, err := s.c.Stat(ctx, path.Join(dir, e.Name))
		if errors.Is(err, syscall.ENOENT) {
			continue // removed meanwhile
		} else if err != nil {
			return fmt.Errorf("stat %s: %w", e.Name, dfsErr(err))
		}
		if err := fn(e.Name, a); err != nil {
			return err
		}
	}
	return nil
}

func (s *DFSBlobStore) WalkBlobs(ctx context.Context, fn func(Digest, int64, time.Time) error) error {
	for _, alg := range []string{"sha256", "sha512"} {
		err := s.walk(ctx, path.Join(s.root, "blobs", alg), func(name string, a metaserver.Attr) error {
			d, err := ParseDigest(alg + ":" + name)
			if err != nil {
				return nil // not a blob of ours
			}
			return fn(d, int64(a.Size), time.Unix(0, a.Mtime))
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *DFSBlobStore) CreateUpload(ctx context.Context, id string) error {
	f, err := s.c.CreateFile(ctx, s.uploadPath(id), 0o644, true)
	if err != nil {
		return fmt.Errorf("creating upload %s: %w", id, dfsErr(err))
	}
	return f.Close()
}

// dfsWriter writes sequentially from an offset through the file's buffered
// WriteAt; Close flushes and commits the extents. As an io.ReaderFrom it
// reads a stream straight into the file's chunk buffers (fs.File.WriteFrom),
// which is how an upload body arrives.
type dfsWriter struct {
	ctx context.Context
	f   *fs.File
	off int64
}

func (w *dfsWriter) Write(p []byte) (int, error) {
	n, err := w.f.WriteAt(p, w.off)
	w.off += int64(n)
	return n, dfsErr(err)
}

func (w *dfsWriter) ReadFrom(r io.Reader) (int64, error) {
	n, err := w.f.WriteFrom(w.ctx, r, w.off)
	w.off += n
	return n, dfsErr(err)
}

// Close makes the bytes written durable, then releases the file. The
// registry acknowledges each PATCH with the range it now holds, and the
// upload may be finished by another registry process (or this one after a
// restart), whose commit cannot know which chunkservers took these bytes.
func (w *dfsWriter) Close() error {
	err := w.f.Sync(w.ctx)
	if cerr := w.f.Close(); err == nil {
		err = cerr
	}
	return dfsErr(err)
}

func (s *DFSBlobStore) WriteUpload(ctx context.Context, id string, offset int64) (io.WriteCloser, error) {
	f, err := s.c.OpenPath(ctx, s.uploadPath(id))
	if err != nil {
		return nil, fmt.Errorf("upload %s: %w", id, dfsErr(err))
	}
	if int64(f.Attr().Size) > offset {
		// A failed request left bytes past what the session recorded.
		if err := f.Truncate(ctx, uint64(offset)); err != nil {
			f.Close()
			return nil, fmt.Errorf("upload %s: %w", id, dfsErr(err))
		}
	}
	return &dfsWriter{ctx: ctx, f: f, off: offset}, nil
}

func (s *DFSBlobStore) ReadUpload(ctx context.Context, id string) (BlobReader, error) {
	return s.open(ctx, s.uploadPath(id), "upload "+id)
}

func (s *DFSBlobStore) CommitUpload(ctx context.Context, id string, size int64, d Digest) error {
	p := s.uploadPath(id)
	a, err := s.c.Stat(ctx, p)
	if err != nil {
		return fmt.Errorf("upload %s: %w", id, dfsErr(err))
	}
	if int64(a.Size) != size {
		f, err := s.c.OpenPath(ctx, p)
		if err != nil {
			return fmt.Errorf("upload %s: %w", id, dfsErr(err))
		}
		err = f.Truncate(ctx, uint64(size))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("upload %s: %w", id, dfsErr(err))
		}
	}
	// Shards are written buffered: the blob must be durable before the
	// rename makes it visible and the push is acknowledged. Every writer
	// syncs at Close, so this finds nothing left unless a truncate above
	// rewrote the last chunk.
	if err := s.c.SyncInode(ctx, a.Ino); err != nil {
		return fmt.Errorf("upload %s: making it durable: %w", id, dfsErr(err))
	}
	if err := s.c.Rename(ctx, p, s.blobPath(d)); err != nil {
		return fmt.Errorf("committing upload %s as %s: %w", id, d, dfsErr(err))
	}
	return nil
}

func (s *DFSBlobStore) DeleteUpload(ctx context.Context, id string) error {
	return s.remove(ctx, s.uploadPath(id), "upload "+id)
}

func (s *DFSBlobStore) WalkUploads(ctx context.Context, fn func(string, time.Time) error) error {
	return s.walk(ctx, path.Join(s.root, "uploads"), func(name string, a metaserver.Attr) error {
		return fn(name, time.Unix(0, a.Mtime))
	})
}

// NewOnDFS builds a registry whose blobs and records both live in the
// cluster c talks to: blobs as files under DFSRoot, records in the
// metaserver's KV. It is what `dockyard serve` and `dockyard registry` run.
func NewOnDFS(ctx context.Context, cfg Config, c *fs.Client) (*Registry, error) {
	blobs, err := NewDFSBlobStore(ctx, c)
	if err != nil {
		return nil, err
	}
	return New(cfg, blobs, c.Meta())
}
