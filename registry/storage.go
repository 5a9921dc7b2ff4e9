package registry

import (
	"context"
	"errors"
	"io"
	"time"
)

// BlobStore holds the registry's bytes: committed blobs, addressed by digest
// and shared by every repository, and upload sessions being written. It knows
// nothing about repositories; visibility, reference counting and garbage
// collection live in the records. Implementations must be safe for concurrent
// use and must make CommitUpload atomic: a reader sees either no blob or the
// whole verified blob.
type BlobStore interface {
	// Stat returns a committed blob's size, or an error matching ErrBlobNotFound.
	Stat(ctx context.Context, d Digest) (int64, error)
	// Open returns a reader over a committed blob (ErrBlobNotFound if absent).
	Open(ctx context.Context, d Digest) (BlobReader, error)
	// Delete removes a committed blob; removing an absent blob is not an error.
	Delete(ctx context.Context, d Digest) error
	// WalkBlobs calls fn for every committed blob.
	WalkBlobs(ctx context.Context, fn func(d Digest, size int64, mod time.Time) error) error

	// CreateUpload starts an empty upload session.
	CreateUpload(ctx context.Context, id string) error
	// WriteUpload returns a writer that stores the upload's bytes from offset
	// on, first dropping anything at or after offset, so a retried request
	// overwrites what a failed one left behind. Close makes the bytes durable.
	WriteUpload(ctx context.Context, id string, offset int64) (io.WriteCloser, error)
	// ReadUpload opens an upload's bytes, e.g. to hash them with another
	// algorithm than the one used while streaming.
	ReadUpload(ctx context.Context, id string) (BlobReader, error)
	// CommitUpload makes the first size bytes of upload id the blob d,
	// replacing a blob of the same digest (same bytes) if one exists. The
	// caller has verified the digest.
	CommitUpload(ctx context.Context, id string, size int64, d Digest) error
	// DeleteUpload discards an upload; an absent upload is not an error.
	DeleteUpload(ctx context.Context, id string) error
	// WalkUploads calls fn for every upload session.
	WalkUploads(ctx context.Context, fn func(id string, mod time.Time) error) error
}

// BlobReader reads a blob at random offsets (for Range requests).
type BlobReader interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// ErrBlobNotFound is returned (wrapped) by a BlobStore for a missing blob or
// upload.
var ErrBlobNotFound = errors.New("blob not found in store")

// ErrStoreUnavailable marks failures of the storage back-end that a client may
// retry (no metaserver leader, too few chunkservers); they are served as 503.
var ErrStoreUnavailable = errors.New("storage unavailable")

// ErrStoreFull is returned by a BlobStore that has no room left for the data
// (every chunkserver full). It is not transient like ErrStoreUnavailable:
// an operator has to add or free capacity, so clients are told so.
var ErrStoreFull = errors.New("storage full")
