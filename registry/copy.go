package registry

import (
	"io"
	"net/http"
	"sync"
)

// copyBufSize is the unit blobs are streamed in. io.Copy's default 32 KiB
// would mean one fs call per 32 KiB; 1 MiB keeps per-call overhead out of the
// throughput of multi-GiB layers while bounding memory per request.
const copyBufSize = 1 << 20

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyBig is io.Copy with a pooled 1 MiB buffer.
func copyBig(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	return io.CopyBuffer(dst, src, *bp)
}

// bigWriter gives a ResponseWriter a ReadFrom that copies in copyBufSize
// units, which http.ServeContent's io.CopyN then uses.
type bigWriter struct{ http.ResponseWriter }

// writerOnly hides ReadFrom so copyBig does not recurse into it.
type writerOnly struct{ io.Writer }

func (w bigWriter) ReadFrom(r io.Reader) (int64, error) {
	return copyBig(writerOnly{w.ResponseWriter}, r)
}
