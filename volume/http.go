package volume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/dockyard/dockyard/internal/unixsock"
)

// Docker's volume plugin protocol: dockerd POSTs a JSON body to
// /Plugin.Activate and /VolumeDriver.<Op> and reads a JSON answer whose Err,
// when not empty, is the failure it shows the user.

// ContentType is the media type of the plugin protocol's bodies.
const ContentType = "application/vnd.docker.plugins.v1.2+json"

// requestTimeout bounds one request's work against the cluster: dockerd
// waits for a plugin with a timeout of its own, and a request that outlives
// it is only noise.
const requestTimeout = 60 * time.Second

// maxBody bounds a request body; the largest, Create with its options, is
// a few hundred bytes.
const maxBody = 1 << 20

type request struct {
	Name string            `json:"Name"`
	ID   string            `json:"ID"`
	Opts map[string]string `json:"Opts"`
}

type wireVolume struct {
	Name       string         `json:"Name"`
	Mountpoint string         `json:"Mountpoint,omitempty"`
	CreatedAt  string         `json:"CreatedAt,omitempty"`
	Status     map[string]any `json:"Status,omitempty"`
}

func (v Volume) wire(withStatus bool) wireVolume {
	w := wireVolume{Name: v.Name, Mountpoint: v.Mountpoint, CreatedAt: v.CreatedAt.Format(time.RFC3339)}
	if withStatus {
		w.Status = map[string]any{"path": "dfs:" + volPath(v.Name)}
	}
	return w
}

// Handler answers the plugin protocol for d.
func (d *Driver) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /Plugin.Activate", func(w http.ResponseWriter, _ *http.Request) {
		reply(w, nil, map[string]any{"Implements": []string{"VolumeDriver"}})
	})
	op := func(name string, fn func(ctx context.Context, req request) (map[string]any, error)) {
		mux.HandleFunc("POST /VolumeDriver."+name, func(w http.ResponseWriter, r *http.Request) {
			var req request
			body, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
			switch {
			case err != nil:
				reply(w, fmt.Errorf("reading the request: %w", err), nil)
				return
			case len(body) > maxBody:
				reply(w, errors.New("request body too large"), nil)
				return
			case len(body) > 0:
				if err := json.Unmarshal(body, &req); err != nil {
					reply(w, fmt.Errorf("malformed request: %w", err), nil)
					return
				}
			}
			ctx, cancel := context.WithTimeout(r.Context(), requestTimeout)
			defer cancel()
			res, err := fn(ctx, req)
			if err != nil {
				d.log.Warn("volume: request failed", "op", name, "volume", req.Name, "err", err)
			}
			reply(w, err, res)
		})
	}
	op("Create", func(ctx context.Context, req request) (map[string]any, error) {
		return nil, d.Create(ctx, req.Name, req.Opts)
	})
	op("Remove", func(ctx context.Context, req request) (map[string]any, error) {
		return nil, d.Remove(ctx, req.Name)
	})
	op("Mount", func(ctx context.Context, req request) (map[string]any, error) {
		p, err := d.Mount(ctx, req.Name, req.ID)
		return map[string]any{"Mountpoint": p}, err
	})
	op("Unmount", func(ctx context.Context, req request) (map[string]any, error) {
		return nil, d.Unmount(ctx, req.Name, req.ID)
	})
	op("Path", func(ctx context.Context, req request) (map[string]any, error) {
		p, err := d.Path(ctx, req.Name)
		return map[string]any{"Mountpoint": p}, err
	})
	op("Get", func(ctx context.Context, req request) (map[string]any, error) {
		v, err := d.Get(ctx, req.Name)
		if err != nil {
			return nil, err
		}
		return map[string]any{"Volume": v.wire(true)}, nil
	})
	op("List", func(ctx context.Context, _ request) (map[string]any, error) {
		vols, err := d.List(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]wireVolume, len(vols))
		for i, v := range vols {
			out[i] = v.wire(false)
		}
		return map[string]any{"Volumes": out}, nil
	})
	op("Capabilities", func(context.Context, request) (map[string]any, error) {
		// A volume lives in the cluster, not on this host: every host
		// running the plugin against the same cluster sees it.
		return map[string]any{"Capabilities": map[string]string{"Scope": "global"}}, nil
	})
	return mux
}

// reply writes res, or err as the protocol's Err with status 500.
func reply(w http.ResponseWriter, err error, res map[string]any) {
	w.Header().Set("Content-Type", ContentType)
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		_ = json.NewEncoder(w).Encode(map[string]string{"Err": err.Error()})
		return
	}
	if res == nil {
		res = map[string]any{}
	}
	res["Err"] = ""
	_ = json.NewEncoder(w).Encode(res)
}

// Listen opens the plugin's Unix socket at path, replacing a socket left by
// a plugin that is no longer running but never one that still answers. The
// socket is for dockerd (root) only.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	ln, err := unixsock.Listen(path, "plugin")
	if err != nil {
		return nil, fmt.Errorf("volume plugin socket: %w", err)
	}
	return ln, nil
}
