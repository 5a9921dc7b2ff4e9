package server

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	ms "github.com/dockyard/dockyard/metaserver"
)

// maxRequestBody bounds one request; a CreateTree of a large layer is the
// biggest thing sent.
const maxRequestBody = 64 << 20

func (n *Node) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/op/{op}", n.serveOp)
	mux.HandleFunc("GET "+ms.WatchPath, n.serveWatch)
	mux.HandleFunc("GET /healthz", n.serveHealth)
	mux.Handle("GET /metrics", promhttp.HandlerFor(n.met.reg, promhttp.HandlerOpts{}))
	return mux
}

func (n *Node) serveOp(w http.ResponseWriter, r *http.Request) {
	op := r.PathValue("op")
	start := time.Now()
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxRequestBody))
	var reply []byte
	if err != nil {
		err = fmt.Errorf("%w: reading request: %v", ms.ErrBadRequest, err)
	} else {
		ctx := r.Context()
		if r.Header.Get(ms.ConsistencyHeader) == "stale" {
			ctx = ms.AllowStale(ctx)
		}
		reply, err = n.Exec(ctx, op, r.Header.Get(ms.RequestIDHeader), body)
	}
	n.met.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	if err != nil {
		we := ms.ToWire(err)
		n.met.ops.WithLabelValues(op, we.Kind).Inc()
		writeError(w, we)
		return
	}
	n.met.ops.WithLabelValues(op, "ok").Inc()
	w.Header().Set("Content-Type", "application/json")
	if len(reply) == 0 {
		reply = []byte("null")
	}
	_, _ = w.Write(reply) // the client sees a broken reply and retries
}

func statusOf(we *ms.WireError) int {
	switch we.Kind {
	case ms.KindErrno:
		switch we.Errno {
		case syscall.ENOENT:
			return http.StatusNotFound
		case syscall.EEXIST:
			return http.StatusConflict
		}
		return http.StatusUnprocessableEntity
	case ms.KindNotLeader:
		return http.StatusMisdirectedRequest
	case ms.KindNoSpace:
		return http.StatusInsufficientStorage
	case ms.KindConflict:
		return http.StatusConflict
	case ms.KindUnavailable:
		return http.StatusServiceUnavailable
	case ms.KindInvalid:
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

func writeError(w http.ResponseWriter, we *ms.WireError) {
	w.Header().Set("Content-Type", "application/json")
	if we.Kind == ms.KindNotLeader && we.Leader != "" {
		w.Header().Set("Location", "http://"+we.Leader)
	}
	w.WriteHeader(statusOf(we))
	_ = json.NewEncoder(w).Encode(struct {
		Error *ms.WireError `json:"error"`
	}{we})
}

// serveHealth is 200 while the node is part of a cluster with a known
// leader, 503 otherwise.
func (n *Node) serveHealth(w http.ResponseWriter, _ *http.Request) {
	st := n.raft.State()
	leader := n.Leader()
	if st == raft.Shutdown || leader == "" {
		writeError(w, ms.ToWire(fmt.Errorf("%w: state %s, no leader", ms.ErrUnavailable, st)))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"state": st.String(), "leader": leader, "applied": n.fsm.AppliedIndex()})
}
