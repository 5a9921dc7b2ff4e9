package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/dockyard/dockyard/metaserver"
)

// Config holds the registry's tunables. The zero value is usable; defaults
// are filled in by New, in one place.
type Config struct {
	// MaxBlobSize bounds one blob (default 64 GiB): bigger uploads fail
	// with SIZE_EXCEEDED (413) as soon as the limit is crossed.
	MaxBlobSize int64
	// MaxManifestSize bounds a manifest body (default 4 MiB, the size the
	// spec says registries should accept at least). Manifests are kept in the
	// metaserver, so they must stay small.
	MaxManifestSize int64
	// GCGrace is how long a blob or link that nothing references is kept
	// after it was last uploaded, mounted or referenced (default 1 h). It is
	// the window a push has between uploading a blob and putting the manifest
	// that references it.
	GCGrace time.Duration
	// UploadTTL is how long an upload session may sit idle before the
	// collector discards it (default 24 h).
	UploadTTL time.Duration
	// Logger receives request logs and failures (default slog.Default()).
	Logger *slog.Logger
	// Metrics is where the registry registers its Prometheus collectors. When
	// nil the registry uses a registry of its own and serves it at /metrics;
	// when set, the caller serves its metrics (and /metrics here answers from
	// MetricsGatherer if that is set).
	Metrics         prometheus.Registerer
	MetricsGatherer prometheus.Gatherer
	// OnManifestPut, when set, is called after a manifest is stored (by the
	// converter, to index new layers). It runs on the pushing request, so it
	// must return quickly and queue long work; its ctx outlives the request.
	OnManifestPut func(ctx context.Context, repo, digest, mediaType string, body []byte)
	// OnTransfer, when set, is called as a blob upload or download (GET,
	// POST, PATCH or PUT carrying blob bytes) starts, and the func it returns
	// as it ends: the converter waits for these to be over before it indexes
	// pushed layers in the background. It must be cheap.
	OnTransfer func() (done func())
	// Now is the clock (default time.Now); tests of the collector set it.
	Now func() time.Time
	// LocalDownloads is how many large blob downloads of one client on
	// this host (loopback) flow at once; the client's others wait, with
	// their headers sent, in the order it asked for them (see
	// downloadLanes). Default: the number of CPUs, at least
	// minLocalDownloads; negative: no limit.
	LocalDownloads int
	// Auth, when set, requires users and tokens (see AuthConfig); nil
	// leaves the registry open to whoever reaches it.
	Auth *AuthConfig
}

func (c *Config) setDefaults() {
	if c.MaxBlobSize <= 0 {
		c.MaxBlobSize = 64 << 30
	}
	if c.MaxManifestSize <= 0 {
		c.MaxManifestSize = 4 << 20
	}
	if c.GCGrace <= 0 {
		c.GCGrace = time.Hour
	}
	if c.UploadTTL <= 0 {
		c.UploadTTL = 24 * time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.LocalDownloads == 0 {
		c.LocalDownloads = max(runtime.NumCPU(), minLocalDownloads)
	}
}

// Registry is the OCI distribution server. It holds no state of its own
// beyond the stores, so several instances can serve one cluster.
type Registry struct {
	cfg     Config
	blobs   BlobStore
	rec     *records
	echo    *echo.Echo
	log     *slog.Logger
	metrics *metrics
	lanes   *downloadLanes // nil: downloads are not ordered
	auth    *auth          // nil: no access control
}

// New builds a registry over a blob store and the metaserver's KV.
func New(cfg Config, blobs BlobStore, meta metaserver.KV) (*Registry, error) {
	if blobs == nil || meta == nil {
		return nil, errors.New("registry: a blob store and a KV are required")
	}
	if cfg.Auth != nil && cfg.Auth.Users == nil {
		return nil, errors.New("registry: auth needs a user store")
	}
	cfg.setDefaults()
	r := &Registry{
		cfg:   cfg,
		blobs: blobs,
		rec:   &records{kv: meta, now: cfg.Now},
		log:   cfg.Logger,
	}
	m, err := newMetrics(cfg.Metrics, cfg.MetricsGatherer)
	if err != nil {
		return nil, fmt.Errorf("registry: %w", err)
	}
	r.metrics = m
	if cfg.LocalDownloads > 0 {
		r.lanes = newDownloadLanes(cfg.LocalDownloads)
	}
	if cfg.Auth != nil {
		ac := *cfg.Auth
		ac.setDefaults()
		r.auth = &auth{cfg: ac, keys: &keyring{kv: meta}, now: cfg.Now}
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = r.errorHandler
	e.Pre(r.discoveryMiddleware)
	e.Use(r.observe)
	e.Any("/v2", r.dispatch)
	e.Any("/v2/*", r.dispatch)
	e.GET("/metrics", echo.WrapHandler(m.handler))
	e.Match([]string{http.MethodGet, http.MethodHead}, "/v1/_ping", r.ping)
	e.GET("/v1/search", r.search)
	e.Match([]string{http.MethodGet, http.MethodHead}, appcPrefix+"*", r.serveACI)
	if r.auth != nil {
		e.Match([]string{http.MethodGet, http.MethodPost}, TokenPath, r.token)
	}
	r.echo = e
	return r, nil
}

// Handler returns the registry's HTTP handler (/v2/..., /v1/ search, appc
// discovery and /appc/ ACIs, /metrics, and /token when auth is on).
func (r *Registry) Handler() http.Handler { return r.echo }

// Echo returns the Echo instance, for callers that mount more routes on it
// (the web UI, health checks).
func (r *Registry) Echo() *echo.Echo { return r.echo }

// dispatch routes a /v2/ request by the spec's grammar.
func (r *Registry) dispatch(c echo.Context) error {
	req := c.Request()
	c.Response().Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	tail := strings.TrimPrefix(strings.TrimPrefix(req.URL.Path, "/v2"), "/")
	rt, ok := parseRoute(tail)
	if !ok {
		c.Set(routeKey, "unknown")
		return ErrNotFound.With("%s", req.URL.Path)
	}
	c.Set(routeKey, rt.kind)
	if rt.name != "" && !ValidName(rt.name) {
		return ErrNameInvalid.With("%q", rt.name)
	}
	if err := r.authorizeV2(c, rt); err != nil {
		return err
	}
	m := req.Method
	if r.cfg.OnTransfer != nil && isTransfer(rt.kind, m) {
		defer r.cfg.OnTransfer()()
	}
	switch rt.kind {
	case "base":
		if m == http.MethodGet || m == http.MethodHead {
			return c.JSONBlob(http.StatusOK, []byte("{}"))
		}
	case "catalog":
		if m == http.MethodGet {
			return r.catalog(c)
		}
	case "tags":
		if m == http.MethodGet {
			return r.tagsList(c, rt.name)
		}
	case "manifest":
		switch m {
		case http.MethodGet, http.MethodHead:
			return r.getManifest(c, rt.name, rt.ref)
		case http.MethodPut:
			return r.putManifest(c, rt.name, rt.ref)
		case http.MethodDelete:
			return r.deleteManifest(c, rt.name, rt.ref)
		}
	case "blob":
		switch m {
		case http.MethodGet, http.MethodHead:
			return r.getBlob(c, rt.name, rt.ref)
		case http.MethodDelete:
			return r.deleteBlob(c, rt.name, rt.ref)
		}
	case "upload":
		if rt.ref == "" {
			if m == http.MethodPost {
				return r.startUpload(c, rt.name)
			}
			break
		}
		switch m {
		case http.MethodGet:
			return r.uploadStatus(c, rt.name, rt.ref)
		case http.MethodPatch:
			return r.patchUpload(c, rt.name, rt.ref)
		case http.MethodPut:
			return r.finishUpload(c, rt.name, rt.ref)
		case http.MethodDelete:
			return r.cancelUpload(c, rt.name, rt.ref)
		}
	case "referrers":
		if m == http.MethodGet {
			return r.getReferrers(c, rt.name, rt.ref)
		}
	}
	return ErrUnsupported.With("%s %s", m, req.URL.Path)
}

// isTransfer reports whether a request moves blob bytes: the requests
// background work should step aside for. HEADs, manifests and listings are
// small and do not count.
func isTransfer(kind, method string) bool {
	switch kind {
	case "blob":
		return method == http.MethodGet
	case "upload":
		return method == http.MethodPost || method == http.MethodPatch || method == http.MethodPut
	}
	return false
}

func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // never happens on Linux
	}
	return hex.EncodeToString(b[:])
}

// readLimited reads at most limit bytes of r; more is SIZE_EXCEEDED.
func readLimited(r io.Reader, limit int64, what string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", what, err)
	}
	if int64(len(b)) > limit {
		return nil, ErrTooLarge.With("%s is larger than %d bytes", what, limit)
	}
	return b, nil
}
