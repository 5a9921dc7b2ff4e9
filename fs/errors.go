package fs

import (
	"errors"
	"fmt"
	"strings"
	"syscall"

	"github.com/dockyard/dockyard/metaserver"
)

// ErrUnreadable matches (errors.Is) every read that failed because too few
// shards of a chunk could be read; the error itself is a *ChunkError.
var ErrUnreadable = errors.New("not enough shards readable")

// ErrClosed is returned by operations on a closed File.
var ErrClosed = errors.New("file already closed")

// ChunkError says a chunk could not be read: only Readable of the Need shards
// required to rebuild the requested bytes answered. Errs holds what the others
// answered; errors.Is finds chunkserver.ErrNotFound / ErrCorrupt among them.
type ChunkError struct {
	Chunk    metaserver.ChunkID
	Readable int
	Need     int
	Errs     []error
}

func (e *ChunkError) Error() string {
	msgs := make([]string, 0, len(e.Errs))
	for _, err := range e.Errs {
		msgs = append(msgs, err.Error())
	}
	return fmt.Sprintf("chunk %d: only %d of %d shards readable: %s", e.Chunk, e.Readable, e.Need, strings.Join(msgs, "; "))
}

// Unwrap lets errors.Is match ErrUnreadable and the per-shard causes.
func (e *ChunkError) Unwrap() []error { return append([]error{ErrUnreadable}, e.Errs...) }

// errLayerNoOpener is what reading a layer-backed file gives when the client
// has no LayerOpener: EIO, as a mount would report it.
var errLayerNoOpener = fmt.Errorf("file bytes live in a layer blob and no layer opener is configured: %w", syscall.EIO)
