// Package converter turns container image layers into lazily readable file
// trees. It indexes a layer blob (plain, gzip or zstd tar) in one streaming
// pass: every tar entry with its metadata and, for regular files, the offset of
// their bytes in the uncompressed stream, plus decompression checkpoints so a
// read of any file decompresses from the nearest checkpoint instead of from the
// start of the layer. It merges an image's layer indexes into one tree
// (whiteouts and opaque directories applied) for metaserver.API.CreateTree, and
// serves file bytes from the layer blob through an io.ReaderAt with a bounded
// cache of decompressed spans.
//
// The package reads blobs only through io.ReaderAt, so it works the same over
// local files in tests and over the distributed file system in production. It
// never writes outside the trees it is given: hostile layer entries (path
// escapes, writes through symlinks, hard links to outside, truncated streams,
// oversized headers, decompression bombs) fail with typed errors.
package converter
