package fs

import (
	"bytes"
	"sync"
	"testing"
)

// TestDegradedReadsShareNoBuffers: degraded reads fetch and rebuild into
// pooled buffers and hand them back. Many at once, over files with different
// bytes and with the cache off (so every read rebuilds), each return their own
// file's bytes, whatever buffers the pools hand out in between.
func TestDegradedReadsShareNoBuffers(t *testing.T) {
	cl := newCluster(t, 6)
	opt := Options{ChunkSize: testChunk, CacheBytes: -1, ReadAhead: -1}
	files := map[string][]byte{}
	for i, p := range []string{"/a", "/b", "/c"} {
		files[p] = writeRandom(t, cl.client(opt), p, 3*testChunk+1000*(i+1))
	}
	cl.servers[0].kill()
	cl.servers[3].kill()
	c := cl.client(opt)
	var wg sync.WaitGroup
	for range 4 {
		for p, want := range files {
			wg.Go(func() {
				for range 3 {
					if got := readAll(t, c, p); !bytes.Equal(got, want) {
						t.Errorf("%s read back different bytes with two servers down", p)
						return
					}
				}
			})
		}
	}
	wg.Wait()
}
