package converter

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path"
	"syscall"

	digest "github.com/opencontainers/go-digest"

	"github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/metaserver"
)

// DefaultMaxBatch is how many tree entries go into one CreateTree call: about
// 3 MB of request and one Raft entry each, so a 100k-file image is a dozen
// entries rather than 100k.
const DefaultMaxBatch = 8192

// DFSStore keeps the converter's records in the distributed file system:
// layer blobs where the registry put them, indexes under /.dockyard/layers,
// image trees under /.dockyard/images.
type DFSStore struct {
	c        *fs.Client
	maxBatch int
}

// NewDFSStore makes a Store over an fs client. maxBatch <= 0 means
// DefaultMaxBatch.
func NewDFSStore(c *fs.Client, maxBatch int) *DFSStore {
	if maxBatch <= 0 {
		maxBatch = DefaultMaxBatch
	}
	return &DFSStore{c: c, maxBatch: maxBatch}
}

var _ Store = (*DFSStore)(nil)

// OpenBlob opens a registry blob. The returned Blob's ReaderAt is an
// *fs.File; closeBlob releases it.
func (s *DFSStore) OpenBlob(ctx context.Context, d digest.Digest) (Blob, error) {
	f, err := s.c.OpenPath(ctx, BlobPath(d))
	if err != nil {
		return Blob{}, fmt.Errorf("opening blob %s: %w", d, err)
	}
	return Blob{ReaderAt: f, Size: int64(f.Attr().Size), Ino: f.Ino()}, nil
}

// ReadIndex reads a stored layer index.
func (s *DFSStore) ReadIndex(ctx context.Context, d digest.Digest) ([]byte, error) {
	f, err := s.c.OpenPath(ctx, LayerIndexPath(d))
	if errors.Is(err, syscall.ENOENT) {
		return nil, fmt.Errorf("layer %s: %w", d, ErrNoIndex)
	}
	if err != nil {
		return nil, fmt.Errorf("opening index of layer %s: %w", d, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.NewSectionReader(f, 0, int64(f.Attr().Size)))
	if err != nil {
		return nil, fmt.Errorf("reading index of layer %s: %w", d, err)
	}
	return data, nil
}

// WriteIndex writes the index under a temporary name and renames it into
// place, so readers never see half an index.
func (s *DFSStore) WriteIndex(ctx context.Context, d digest.Digest, data []byte) error {
	final := LayerIndexPath(d)
	dir := path.Dir(final)
	if _, err := s.c.MkdirAll(ctx, dir, 0o755); err != nil {
		return err
	}
	tmp := dir + "/index.tmp-" + randomSuffix()
	if _, err := s.c.WriteFile(ctx, tmp, bytes.NewReader(data), 0o644); err != nil {
		return err
	}
	if err := s.c.Rename(ctx, tmp, final); err != nil {
		_ = s.c.Remove(ctx, tmp)
		return err
	}
	return nil
}

// HasImageTree reports whether the image's rootfs exists.
func (s *DFSStore) HasImageTree(ctx context.Context, manifest digest.Digest) (bool, error) {
	_, err := s.c.Stat(ctx, ImageRootfsPath(manifest))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, syscall.ENOENT):
		return false, nil
	}
	return false, err
}

// WriteImageTree builds the tree in a temporary directory and renames it to
// rootfs, so a mount never sees a partial tree. If another indexer won the
// race the rename fails with ENOTEMPTY or EEXIST and the finished tree is
// kept; the loser's temporary tree stays behind for the garbage collector
// (both are identical, so nothing is lost).
func (s *DFSStore) WriteImageTree(ctx context.Context, manifest digest.Digest, tree *Tree) error {
	final := ImageRootfsPath(manifest)
	dir := path.Dir(final)
	if _, err := s.c.MkdirAll(ctx, dir, 0o755); err != nil {
		return err
	}
	tmp := dir + "/rootfs.tmp-" + randomSuffix()
	root := tree.Root()
	ino, err := s.c.MkdirAll(ctx, tmp, root.Mode()&0o7777)
	if err != nil {
		return err
	}
	if e := root.Entry; e != nil {
		mode := e.Mode & 0o7777
		in := metaserver.SetAttrIn{Mode: &mode, Uid: &e.Uid, Gid: &e.Gid}
		if e.Mtime != 0 {
			in.Mtime = &e.Mtime
		}
		if _, err := s.c.Meta().SetAttr(ctx, ino, in); err != nil {
			return fmt.Errorf("setting rootfs attributes: %w", err)
		}
	}
	if _, err := tree.Apply(ctx, s.c.Meta(), ino, s.maxBatch); err != nil {
		return err
	}
	if err := s.c.Rename(ctx, tmp, final); err != nil {
		if errors.Is(err, syscall.ENOTEMPTY) || errors.Is(err, syscall.EEXIST) {
			return nil
		}
		return fmt.Errorf("publishing image tree: %w", err)
	}
	return nil
}

func randomSuffix() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b[:])
}

// closeBlob releases a blob handle that holds resources.
func closeBlob(b Blob) {
	if c, ok := b.ReaderAt.(io.Closer); ok {
		_ = c.Close()
	}
}
