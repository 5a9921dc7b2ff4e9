package raftlog

import (
	"errors"
	"fmt"
)

var (
	// ErrCorrupt is matched (errors.Is) by every CorruptError.
	ErrCorrupt = errors.New("raft log corrupt")
	// ErrNotContiguous: StoreLogs was given entries that do not start right
	// after the last stored one, or that skip an index. The store keeps a
	// dense index and never holds gaps (see Store.IsMonotonic).
	ErrNotContiguous = errors.New("raft log entries not contiguous")
	// ErrUnsupportedDelete: DeleteRange asked for a range that is neither a
	// prefix nor a suffix of the log; raft never does that.
	ErrUnsupportedDelete = errors.New("raft log delete range neither a head nor a tail")
	// ErrTooLarge: an entry is bigger than a record may be (1 GiB).
	ErrTooLarge = errors.New("raft log entry too large")
	// ErrClosed: the store was closed.
	ErrClosed = errors.New("raft log closed")
	// ErrCanceled: WaitDurable gave up because its caller canceled it.
	ErrCanceled = errors.New("raft log wait canceled")
	// ErrFailed wraps the first write or sync error. After it the store
	// refuses writes until reopened: once fdatasync fails, what the page
	// cache holds says nothing about the disk, and only a fresh scan does.
	ErrFailed = errors.New("raft log failed earlier")
)

// CorruptError says which file and where the log is damaged in a way a crash
// cannot explain (a sealed segment, a segment header, the meta file).
type CorruptError struct {
	File   string
	Offset int64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("raft log corrupt: %s at offset %d: %s", e.File, e.Offset, e.Reason)
}

func (e *CorruptError) Is(target error) bool { return target == ErrCorrupt }
