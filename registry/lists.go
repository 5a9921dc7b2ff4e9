package registry

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/labstack/echo/v4"
)

// pageParams parses n and last. n < 0 means no limit.
func pageParams(c echo.Context) (n int, last string, err error) {
	n = -1
	if s := c.QueryParam("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 {
			return 0, "", ErrPaginationInvalid.With("n=%q", s)
		}
		n = v
	}
	return n, c.QueryParam("last"), nil
}

// nextLink sets the RFC 5988 Link header pointing at the next page.
func nextLink(c echo.Context, path string, n int, last string) {
	q := url.Values{"n": {strconv.Itoa(n)}, "last": {last}}
	c.Response().Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, path, q.Encode()))
}

func (r *Registry) tagsList(c echo.Context, name string) error {
	ctx := c.Request().Context()
	n, last, err := pageParams(c)
	if err != nil {
		return err
	}
	ok, err := r.rec.repoExists(ctx, name)
	if err != nil {
		return err
	}
	if !ok {
		return ErrNameUnknown.With("%s", name)
	}
	tags, more, err := r.rec.listSuffixes(ctx, tagKey(name, ""), last, n)
	if err != nil {
		return err
	}
	if tags == nil {
		tags = []string{}
	}
	if more {
		nextLink(c, "/v2/"+name+"/tags/list", n, tags[len(tags)-1])
	}
	return c.JSON(http.StatusOK, struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{name, tags})
}

func (r *Registry) catalog(c echo.Context) error {
	n, last, err := pageParams(c)
	if err != nil {
		return err
	}
	repos, more, err := r.listRepos(c, last, n)
	if err != nil {
		return err
	}
	if repos == nil {
		repos = []string{}
	}
	if more {
		nextLink(c, "/v2/_catalog", n, repos[len(repos)-1])
	}
	return c.JSON(http.StatusOK, struct {
		Repositories []string `json:"repositories"`
	}{repos})
}

// getReferrers lists the manifests whose subject is the given digest, as an
// OCI index, optionally filtered by artifactType.
func (r *Registry) getReferrers(c echo.Context, name, ref string) error {
	d, err := ParseDigest(ref)
	if err != nil {
		return err
	}
	descs, err := r.rec.referrers(c.Request().Context(), name, d)
	if err != nil {
		return err
	}
	if at := c.QueryParam("artifactType"); at != "" {
		kept := descs[:0]
		for _, x := range descs {
			if x.ArtifactType == at {
				kept = append(kept, x)
			}
		}
		descs = kept
		c.Response().Header().Set("OCI-Filters-Applied", "artifactType")
	}
	b, err := json.Marshal(struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []Descriptor `json:"manifests"`
	}{2, MediaTypeOCIIndex, descs})
	if err != nil {
		return fmt.Errorf("encoding referrers: %w", err)
	}
	return c.Blob(http.StatusOK, MediaTypeOCIIndex, b)
}

// listRepos pages through the repositories the request may pull (all of
// them without auth): at most n (n < 0: all) after last.
func (r *Registry) listRepos(c echo.Context, last string, n int) ([]string, bool, error) {
	ctx := c.Request().Context()
	if r.auth == nil {
		return r.rec.listSuffixes(ctx, "r/", last, n)
	}
	var out []string
	for {
		names, more, err := r.rec.listSuffixes(ctx, "r/", last, catalogScanBatch)
		if err != nil {
			return nil, false, err
		}
		for _, name := range names {
			ok, err := r.mayList(c, name)
			if err != nil {
				return nil, false, err
			}
			if !ok {
				continue
			}
			if n >= 0 && len(out) == n {
				return out, true, nil
			}
			out = append(out, name)
		}
		if !more {
			return out, false, nil
		}
		last = names[len(names)-1]
	}
}

// catalogScanBatch is how many repository records a filtered catalog
// reads at a time.
const catalogScanBatch = 500
