package registry

import (
	"hash"
	"io"
	"net/http"
	"sync"
)

// copyBufSize is the unit blobs are streamed in. io.Copy's default 32 KiB
// would mean one fs call per 32 KiB; 1 MiB keeps per-call overhead out of the
// throughput of multi-GiB layers while bounding memory per request.
const copyBufSize = 1 << 20

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// copyBig copies src to dst in writes of a full 1 MiB (except the last).
// A network body arrives in reads of a few KiB to 64 KiB; filling the buffer
// first turns those into few large writes, each of which costs the file
// system client a lock round and the hash a call.
func copyBig(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := io.ReadFull(src, buf)
		if n > 0 {
			w, werr := dst.Write(buf[:n])
			total += int64(w)
			if werr != nil {
				return total, werr
			}
			if w != n {
				return total, io.ErrShortWrite
			}
		}
		switch rerr {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return total, nil
		default:
			return total, rerr
		}
	}
}

// bigWriter gives a ResponseWriter a ReadFrom that copies in copyBufSize
// units, which http.ServeContent's io.CopyN then uses.
type bigWriter struct{ http.ResponseWriter }

// writerOnly hides ReadFrom so copyBig does not recurse into it.
type writerOnly struct{ io.Writer }

func (w bigWriter) ReadFrom(r io.Reader) (int64, error) {
	return copyBig(writerOnly{w.ResponseWriter}, r)
}

// copyHashed stores src in dst and feeds it to h on the way. A dst that reads
// streams itself (the DFS upload writer) gets src directly, so the bytes go
// from the request body into the file's chunk buffers with no copy in
// between; the hash sees them as they are read, before they are stored.
func copyHashed(dst io.Writer, h hash.Hash, src io.Reader) (int64, error) {
	if rf, ok := dst.(io.ReaderFrom); ok {
		return rf.ReadFrom(io.TeeReader(src, h))
	}
	return copyBig(io.MultiWriter(dst, h), src)
}
