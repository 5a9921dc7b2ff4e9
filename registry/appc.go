package registry

import (
	"fmt"
	"html"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
)

// appc image discovery and ACI serving (github.com/appc/spec, discovery.md
// and aci.md).
//
// A client looking for HOST/REPO asks GET /REPO?ac-discovery=1. Those paths
// are the web UI's and the repository names' own, so discovery is answered
// by a pre-routing middleware that only looks at requests carrying the
// ac-discovery parameter; everything else goes on to the routes. The page
// points at templates under /appc/, a prefix of its own:
//
//	/appc/{name}/{version}/{os}/{arch}.{ext}
//
// {name} is the whole AC name, host included, because that is what the
// spec substitutes. Slashes separate the labels (not the "-" of the spec's
// examples) because repository names and tags may contain "-" and could
// then not be told apart; a tag never contains "/", so the path splits
// unambiguously from its end. The version is the tag; a second template
// without {version} serves "latest", for clients that ask for no version.
//
// ACIs are served unsigned: they are built on request, and the registry
// holds no key that could vouch for them, so .aci.asc answers 404 with
// SIGNATURE_UNKNOWN and the page names no ac-discovery-pubkeys.

// appcPrefix is where ACIs are served.
const appcPrefix = "/appc/"

// discoveryMiddleware answers ?ac-discovery=1 before routing.
func (r *Registry) discoveryMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if (req.Method != http.MethodGet && req.Method != http.MethodHead) || req.URL.Query().Get("ac-discovery") != "1" {
			return next(c)
		}
		return r.observe(r.discover)(c)
	}
}

// discover serves the discovery page of a repository.
func (r *Registry) discover(c echo.Context) error {
	c.Set(routeKey, "appc-discovery")
	req := c.Request()
	repo := strings.Trim(req.URL.Path, "/")
	if repo == "" || !ValidName(repo) {
		// The client walks up the name's parents on a 4xx; the root and
		// namespaces that are not repositories have no images.
		return ErrNameUnknown.With("%q is not a repository", "/"+repo)
	}
	if err := r.authorizePull(c, repo); err != nil {
		return err
	}
	ok, err := r.rec.repoExists(req.Context(), repo)
	if err != nil {
		return err
	}
	if !ok {
		return ErrNameUnknown.With("%s", repo)
	}
	host := strings.ToLower(req.Host)
	prefix := host + "/" + repo
	base := c.Scheme() + "://" + host + appcPrefix + "{name}/"
	tmpls := []string{base + "{version}/{os}/{arch}.{ext}", base + "latest/{os}/{arch}.{ext}"}
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html>\n<head>\n<meta charset=\"utf-8\">\n")
	for _, t := range tmpls {
		fmt.Fprintf(&b, "<meta name=\"ac-discovery\" content=\"%s %s\">\n", html.EscapeString(prefix), html.EscapeString(t))
	}
	fmt.Fprintf(&b, "<title>%s</title>\n</head>\n<body>\n", html.EscapeString(prefix))
	fmt.Fprintf(&b, "<p>App Container images of <code>%s</code> are served unsigned at <code>%s</code>.</p>\n</body>\n</html>\n",
		html.EscapeString(prefix), html.EscapeString(tmpls[0]))
	c.Response().Header().Set("Cache-Control", "no-cache")
	if req.Method == http.MethodHead {
		c.Response().Header().Set(echo.HeaderContentType, echo.MIMETextHTMLCharsetUTF8)
		return c.NoContent(http.StatusOK)
	}
	return c.HTML(http.StatusOK, b.String())
}

// parseACIPath splits the tail of /appc/HOST/REPO/VERSION/OS/ARCH.EXT.
func parseACIPath(tail string) (q aciRequest, ext string, err error) {
	segs := strings.Split(tail, "/")
	if len(segs) < 5 {
		return q, "", ErrNotFound.With("%s%s: want %s{name}/{version}/{os}/{arch}.aci", appcPrefix, tail, appcPrefix)
	}
	n := len(segs)
	last := segs[n-1]
	switch {
	case strings.HasSuffix(last, ".aci.asc"):
		ext = "aci.asc"
	case strings.HasSuffix(last, ".aci"):
		ext = "aci"
	default:
		return q, "", ErrNotFound.With("%s%s: the extension must be .aci or .aci.asc", appcPrefix, tail)
	}
	q = aciRequest{
		repo:    strings.Join(segs[1:n-3], "/"),
		version: segs[n-3],
		os:      segs[n-2],
		arch:    strings.TrimSuffix(last, "."+ext),
	}
	if segs[0] == "" {
		return q, "", ErrNotFound.With("%s%s: the name lacks its host", appcPrefix, tail)
	}
	if !ValidName(q.repo) {
		return q, "", ErrNameInvalid.With("%q", q.repo)
	}
	q.acName = strings.ToLower(segs[0]) + "/" + q.repo
	return q, ext, nil
}

// serveACI streams an ACI built from the image, or answers .aci.asc.
func (r *Registry) serveACI(c echo.Context) error {
	c.Set(routeKey, "appc-aci")
	req := c.Request()
	q, ext, err := parseACIPath(strings.TrimPrefix(req.URL.Path, appcPrefix))
	if err != nil {
		return err
	}
	if err := r.authorizePull(c, q.repo); err != nil {
		return err
	}
	if ext == "aci.asc" {
		return ErrSignatureUnknown.With("%s:%s", q.repo, q.version)
	}
	if r.cfg.OnTransfer != nil {
		defer r.cfg.OnTransfer()()
	}
	img, err := r.prepareACI(req.Context(), q)
	if err != nil {
		return err
	}
	defer img.Close()
	mb, err := img.manifestJSON()
	if err != nil {
		return err
	}
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "application/x-tar")
	h.Set("Docker-Content-Digest", img.manifestDigest.String())
	if req.Method == http.MethodHead {
		return c.NoContent(http.StatusOK)
	}
	c.Response().WriteHeader(http.StatusOK)
	// Headers are out: a failure now can only cut the stream, which the
	// client sees as a truncated tar; the error handler logs it.
	return img.writeACI(c.Response(), mb)
}
