package webui

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/metaserver"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// StatusSource is the one metaserver call the cluster page needs;
// metaserver.API and its Client satisfy it.
type StatusSource interface {
	Status(ctx context.Context) (metaserver.Status, error)
}

// Config says where the UI gets its data. Registry and Meta are required.
type Config struct {
	// Registry is the registry's HTTP handler; the UI only calls its public
	// /v2/ API.
	Registry http.Handler
	// Meta answers the cluster page.
	Meta StatusSource
	// FS lets the volumes pages read the cluster's volumes and snapshots
	// (metadata only: listings and sizes). Without it those pages say
	// that the UI has no file system rather than failing.
	FS *dfs.Client
	// Users is the registry's account store when the registry runs with
	// auth: the volumes pages are for admins only, checked against it.
	Users Accounts
	// VolumeWalkLimit caps the directory entries read to size one volume
	// (default 100 000); past it the page shows "≥" and the partial sum.
	VolumeWalkLimit int
	// Logger receives failures the UI renders as error pages (default
	// slog.Default()).
	Logger *slog.Logger
	// PageSize is how many repositories or tags one page lists (default 50).
	PageSize int
	// Timeout bounds the work behind one page, so a stuck metaserver gives
	// an error page rather than a hung browser tab (default 10 s).
	Timeout time.Duration
	// StatusTimeout bounds the cluster page's Status call (default 4 s).
	// The metaserver client retries through leader elections until its
	// context ends; a few seconds covers an election, and a dead metaserver
	// should not keep the page blank for long.
	StatusTimeout time.Duration
	// Now is the clock for "ago" figures (default time.Now).
	Now func() time.Time
}

// UI serves the pages. Build it with New and put its routes on an Echo
// instance with Register.
type UI struct {
	cfg   Config
	reg   regClient
	pages map[string]*template.Template
}

// ErrConfig reports a Config missing a required field.
var ErrConfig = errors.New("webui: invalid config")

// New checks the config, fills in defaults and parses the templates.
func New(cfg Config) (*UI, error) {
	if cfg.Registry == nil {
		return nil, fmt.Errorf("%w: a registry handler is required", ErrConfig)
	}
	if cfg.Meta == nil {
		return nil, fmt.Errorf("%w: a metaserver is required", ErrConfig)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.PageSize <= 0 {
		cfg.PageSize = 50
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.StatusTimeout <= 0 {
		cfg.StatusTimeout = 4 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.VolumeWalkLimit <= 0 {
		cfg.VolumeWalkLimit = defaultWalkLimit
	}
	u := &UI{cfg: cfg, reg: regClient{h: cfg.Registry}, pages: map[string]*template.Template{}}
	funcs := u.funcs()
	for _, p := range []string{"repos", "repo", "image", "cluster", "volumes", "volume", "error"} {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+p+".html")
		if err != nil {
			return nil, fmt.Errorf("webui: parsing %s template: %w", p, err)
		}
		u.pages[p] = t
	}
	return u, nil
}

// Register adds the UI's routes: "/", "/ui" and everything under "/ui/".
// They never overlap the registry's /v2/ routes or /metrics.
func (u *UI) Register(e *echo.Echo) {
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	files := http.StripPrefix("/ui/static/", http.FileServer(http.FS(static)))
	// HEAD too: link checkers and uptime probes use it (the server drops the body).
	get := func(path string, h echo.HandlerFunc) { e.Match([]string{http.MethodGet, http.MethodHead}, path, h) }
	get("/", u.repos)
	get("/ui", func(c echo.Context) error { return c.Redirect(http.StatusMovedPermanently, "/ui/") })
	get("/ui/", u.repos)
	get("/ui/cluster", u.cluster)
	get("/ui/volumes", u.volumes)
	get("/ui/volumes/*", u.volumePage)
	get("/ui/r/*", u.repoOrImage)
	get("/ui/static/*", func(c echo.Context) error {
		c.Response().Header().Set("Cache-Control", "public, max-age=3600")
		files.ServeHTTP(c.Response(), c.Request())
		return nil
	})
	get("/ui/*", func(c echo.Context) error {
		return u.fail(c, fmt.Errorf("page %s: %w", c.Request().URL.Path, ErrNotFound))
	})
}

// page is what every template gets: the page's own data plus the layout's.
type page struct {
	Title string
	Nav   string
	Host  string
	Data  any
}

func (u *UI) render(c echo.Context, status int, name, title, nav string, data any) error {
	h := c.Response().Header()
	// Everything the pages need comes from this origin; a value that slipped
	// past escaping still could not load or run anything.
	h.Set("Content-Security-Policy", "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	h.Set(echo.HeaderContentType, echo.MIMETextHTMLCharsetUTF8)
	var b strings.Builder
	if err := u.pages[name].Execute(&b, page{Title: title, Nav: nav, Host: c.Request().Host, Data: data}); err != nil {
		u.cfg.Logger.Error("webui: rendering page", "page", name, "err", err)
		return c.String(http.StatusInternalServerError, "internal error rendering the page\n")
	}
	return c.HTML(status, b.String())
}

// ErrMetaserver wraps a failure to reach the metaserver: the UI answers 502,
// since it is a gateway to the cluster.
var ErrMetaserver = errors.New("metaserver unreachable")

type errorPage struct {
	Status  int
	Heading string
	Detail  string
}

// fail renders an error page: 404 for what does not exist, 502 when a
// backend cannot be reached, 500 otherwise.
func (u *UI) fail(c echo.Context, err error) error {
	ep := errorPage{Status: http.StatusInternalServerError, Heading: "Something went wrong", Detail: err.Error()}
	var re *RegistryError
	switch {
	case errors.Is(err, ErrNotFound):
		ep.Status, ep.Heading = http.StatusNotFound, "Not found"
	case errors.Is(err, ErrLogin):
		ep.Status, ep.Heading = http.StatusUnauthorized, "Log in to see this page"
		c.Response().Header().Set("WWW-Authenticate", `Basic realm="dockyard", charset="UTF-8"`)
	case errors.Is(err, ErrForbidden):
		ep.Status, ep.Heading = http.StatusForbidden, "You may not see this"
	case errors.Is(err, ErrMetaserver):
		ep.Status, ep.Heading = http.StatusBadGateway, "The metaserver cannot be reached"
	case errors.Is(err, context.DeadlineExceeded):
		ep.Status, ep.Heading = http.StatusGatewayTimeout, "The cluster did not answer in time"
	case errors.As(err, &re) && re.Status >= 500:
		ep.Status, ep.Heading = http.StatusBadGateway, "The registry could not answer"
	case errors.As(err, &re) && re.Status == http.StatusUnauthorized:
		// The registry requires users: the browser asks for the same user
		// name and password docker login takes, and sends them as Basic
		// credentials, which the registry accepts.
		ep.Status, ep.Heading = http.StatusUnauthorized, "Log in to see this registry"
		c.Response().Header().Set("WWW-Authenticate", `Basic realm="dockyard", charset="UTF-8"`)
	case errors.As(err, &re) && re.Status == http.StatusForbidden:
		ep.Status, ep.Heading = http.StatusForbidden, "You may not see this"
	}
	if ep.Status >= 500 {
		u.cfg.Logger.Warn("webui: page failed", "path", c.Request().URL.Path, "status", ep.Status, "err", err)
	}
	return u.render(c, ep.Status, "error", ep.Heading, "", ep)
}

func (u *UI) ctx(c echo.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(withAuth(c), u.cfg.Timeout)
}

// withAuth is the request's context carrying its credentials for the
// registry calls.
func withAuth(c echo.Context) context.Context {
	ctx := c.Request().Context()
	if a := c.Request().Header.Get(echo.HeaderAuthorization); a != "" {
		ctx = context.WithValue(ctx, authKey{}, a)
	}
	return ctx
}
