package chunkserver_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/dockyard/dockyard/chunkserver"
)

// A chunkserver from before buffered writes ignores the buffered parameter
// (its Puts are durable) and has no sync endpoint: the client's Sync must
// take its 404 or 405 for "nothing to do", not for a failure.
func TestSyncAgainstOlderServer(t *testing.T) {
	for _, code := range []int{http.StatusNotFound, http.StatusMethodNotAllowed} {
		var mu sync.Mutex
		var queries []string
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !strings.HasPrefix(r.URL.Path, "/shards/") {
				http.Error(w, "no such endpoint", code)
				return
			}
			mu.Lock()
			queries = append(queries, r.URL.RawQuery)
			mu.Unlock()
			data, _ := io.ReadAll(r.Body)
			w.WriteHeader(http.StatusCreated)
			io.WriteString(w, `{"sum":"`+chunkserver.FormatSum(chunkserver.Sum(data))+`","size":`+strconv.Itoa(len(data))+`}`)
		}))
		addr := strings.TrimPrefix(srv.URL, "http://")
		c := chunkserver.NewClient(nil)
		ctx := context.Background()
		if _, err := c.PutBuffered(ctx, addr, "00000000000000a1.0", []byte("data")); err != nil {
			t.Fatalf("PutBuffered: %v", err)
		}
		if err := c.Sync(ctx, addr); err != nil {
			t.Errorf("Sync against a server answering %d = %v, want nil", code, err)
		}
		srv.Close()
		if len(queries) != 1 || queries[0] != chunkserver.ParamBuffered+"=true" {
			t.Errorf("buffered PUT sent query %q, want %s=true", queries, chunkserver.ParamBuffered)
		}
	}
}
