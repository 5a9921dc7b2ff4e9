package server

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	ms "github.com/dockyard/dockyard/metaserver"
)

func TestMetricsShowRedundancyAndChunkservers(t *testing.T) {
	n := startCluster(t, 1)[0]
	c := n.API()
	ctx := context.Background()
	for _, id := range []string{"cs-a", "cs-b"} {
		if _, err := c.Heartbeat(ctx, ms.Heartbeat{ID: ms.ServerID(id), Addr: "127.0.0.1:1", Capacity: 1 << 30, Used: 1 << 20}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := http.Get("http://" + n.APIAddr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`dockyard_meta_chunkservers{state="up"} 2`,
		`dockyard_meta_chunkserver_capacity_bytes{id="cs-a"} 1.073741824e+09`,
		`dockyard_meta_chunkserver_used_bytes{id="cs-b"} 1.048576e+06`,
		"dockyard_meta_chunks_lost 0",
		"dockyard_meta_chunks_degraded 0",
		"dockyard_meta_repairs_queued 0",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
