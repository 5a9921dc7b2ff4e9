package converter

import (
	"errors"
	"fmt"
)

// Sentinel errors for hostile or broken layers. Indexing failures wrap one of
// them, usually inside an *EntryError naming the offending tar entry, so
// callers match with errors.Is and report the path with errors.As.
var (
	// ErrPathEscape: an entry name or link target with a ".." component.
	ErrPathEscape = errors.New("path escapes the layer root")
	// ErrAbsolutePath: an entry name starting with "/".
	ErrAbsolutePath = errors.New("absolute path in layer")
	// ErrSymlinkTraversal: an entry whose parent path resolves through a
	// symlink, i.e. extracting it would write outside its directory.
	ErrSymlinkTraversal = errors.New("entry written through a symlink")
	// ErrNotDir: an entry whose parent is a non-directory (and not a symlink).
	ErrNotDir = errors.New("parent of entry is not a directory")
	// ErrBadHardLink: a hard link whose target is outside the layer, missing,
	// or a directory.
	ErrBadHardLink = errors.New("bad hard link target")
	// ErrTruncated: the layer (or its compressed stream) ends early.
	ErrTruncated = errors.New("truncated layer")
	// ErrCorrupt: a malformed tar header or compressed stream.
	ErrCorrupt = errors.New("corrupt layer")
	// ErrHeaderTooLarge: PAX records, names, link targets or xattrs beyond the
	// configured limits.
	ErrHeaderTooLarge = errors.New("tar header too large")
	// ErrBomb: the uncompressed stream grew past the configured ratio or size
	// limit.
	ErrBomb = errors.New("decompression bomb")
	// ErrUnsupported: an entry type the converter cannot represent (e.g. GNU
	// sparse files).
	ErrUnsupported = errors.New("unsupported tar entry")
	// ErrBadIndex: a stored layer index that cannot be decoded.
	ErrBadIndex = errors.New("bad layer index")
	// ErrNoIndex: no stored index for a layer (returned by Store
	// implementations; the Indexer then builds it).
	ErrNoIndex = errors.New("layer index not found")
	// ErrNoPlatform: an image index has no manifest for the wanted platform.
	ErrNoPlatform = errors.New("no manifest for platform")
	// ErrMediaType: a manifest or layer media type the converter does not handle.
	ErrMediaType = errors.New("unsupported media type")
)

// EntryError says which tar entry (or merged path) made indexing or merging
// fail.
type EntryError struct {
	Path string
	Err  error
}

func (e *EntryError) Error() string { return fmt.Sprintf("entry %q: %v", e.Path, e.Err) }

// Unwrap exposes the sentinel.
func (e *EntryError) Unwrap() error { return e.Err }

func entryErr(path string, err error) error { return &EntryError{Path: path, Err: err} }
