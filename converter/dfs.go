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
	a, err := s.c.WriteFile(ctx, tmp, bytes.NewReader(data), 0o644)
	if err != nil {
		return s.cleanup(ctx, err, tmp)
	}
	// Its shards were written buffered; an index renamed into place marks
	// the layer done, so it must be durable first.
	if err := s.c.SyncInode(ctx, a.Ino); err != nil {
		return s.cleanup(ctx, fmt.Errorf("making index of layer %s durable: %w", d, err), tmp)
	}
	if err := s.c.Rename(ctx, tmp, final); err != nil {
		return s.cleanup(ctx, err, tmp)
	}
	return nil
}

// cleanup removes a temporary file after err, reporting both failures.
func (s *DFSStore) cleanup(ctx context.Context, err error, tmp string) error {
	if rerr := s.c.Remove(ctx, tmp); rerr != nil && !errors.Is(rerr, syscall.ENOENT) {
		return errors.Join(err, fmt.Errorf("removing %s: %w", tmp, rerr))
	}
	return err
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
// race the rename fails with ENOTEMPTY or EEXIST: the finished tree is kept
// (both are identical) and this one is removed, as is a tree whose creation
// failed half-way.
func (s *DFSStore) WriteImageTree(ctx context.Context, manifest digest.Digest, tree *Tree) (err error) {
	final := ImageRootfsPath(manifest)
	dir := path.Dir(final)
	dirIno, err := s.c.MkdirAll(ctx, dir, 0o755)
	if err != nil {
		return err
	}
	tmpName := "rootfs.tmp-" + randomSuffix()
	tmp := dir + "/" + tmpName
	root := tree.Root()
	ino, err := s.c.MkdirAll(ctx, tmp, root.Mode()&0o7777)
	if err != nil {
		return err
	}
	published := false
	defer func() {
		if published {
			return
		}
		if rerr := removeTree(ctx, s.c.Meta(), dirIno, tmpName); rerr != nil {
			err = errors.Join(err, fmt.Errorf("removing unpublished tree %s: %w", tmp, rerr))
		}
	}()
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
	published = true
	return nil
}

// removeTree removes name under parent and everything below it.
func removeTree(ctx context.Context, meta metaserver.Namespace, parent metaserver.Ino, name string) error {
	a, err := meta.Lookup(ctx, parent, name)
	if errors.Is(err, syscall.ENOENT) {
		return nil
	}
	if err != nil {
		return err
	}
	if !a.IsDir() {
		return meta.Unlink(ctx, parent, name)
	}
	entries, err := meta.ReadDir(ctx, a.Ino, "", 0, false)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := removeTree(ctx, meta, a.Ino, e.Name); err != nil {
			return err
		}
	}
	return meta.Rmdir(ctx, parent, name)
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
