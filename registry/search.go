package registry

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// Docker V1 search. `docker search HOST/TERM` makes dockerd ping
// HOST/v1/_ping (https first, then plain http for insecure registries such
// as 127.0.0.0/8) and then GET HOST/v1/search?q=TERM&n=LIMIT. Nothing else
// of the V1 API is served: images move over /v2/ only.

// Search paging limits. docker's client sends n=25 unless told otherwise
// and refuses limits outside [1, 100] itself; the server holds the same
// bounds so other clients cannot ask for the whole catalog in one page.
const (
	searchDefaultPageSize = 25
	searchMaxPageSize     = 100
	searchMaxQuery        = 255 // longer than any repository name could match
	// searchScanBatch is how many repository names one KV listing returns
	// while a search scans the catalog, so a big catalog is never held
	// whole in memory.
	searchScanBatch = 1000
)

// SearchResult is one repository in a V1 search answer. Dockyard keeps no
// stars, descriptions or official/automated flags, so those are zero; they
// are sent because docker's client prints them as columns.
type SearchResult struct {
	Name        string `json:"name"`
	Description string `json:"description"`
	StarCount   int    `json:"star_count"`
	IsOfficial  bool   `json:"is_official"`
	IsAutomated bool   `json:"is_automated"`
}

// SearchResults is the V1 search answer.
type SearchResults struct {
	NumResults int            `json:"num_results"`
	NumPages   int            `json:"num_pages"`
	Page       int            `json:"page"`
	PageSize   int            `json:"page_size"`
	Query      string         `json:"query"`
	Results    []SearchResult `json:"results"`
}

// ping answers dockerd's V1 endpoint check. The standalone header tells it
// that this registry does its own authentication rather than deferring to a
// separate V1 index.
func (r *Registry) ping(c echo.Context) error {
	c.Set(routeKey, "v1-ping")
	c.Response().Header().Set("X-Docker-Registry-Standalone", "true")
	return c.JSONBlob(http.StatusOK, []byte(`{"standalone":true}`))
}

// searchParams parses q, n and page.
func searchParams(c echo.Context) (q string, n, page int, err error) {
	q = strings.TrimSpace(c.QueryParam("q"))
	if q == "" {
		return "", 0, 0, ErrSearchInvalid.With("the query parameter q is required")
	}
	if len(q) > searchMaxQuery {
		return "", 0, 0, ErrSearchInvalid.With("q is longer than %d bytes", searchMaxQuery)
	}
	n = searchDefaultPageSize
	if s := c.QueryParam("n"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 || v > searchMaxPageSize {
			return "", 0, 0, ErrPaginationInvalid.With("n=%q: want a page size from 1 to %d", s, searchMaxPageSize)
		}
		n = v
	}
	page = 1
	if s := c.QueryParam("page"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			return "", 0, 0, ErrPaginationInvalid.With("page=%q: want a page number from 1", s)
		}
		page = v
	}
	return q, n, page, nil
}

// search answers GET /v1/search: the repositories whose name contains q,
// case-insensitively, sorted by name. A term with a slash ("team/web") is
// matched against the whole name like any other, so it finds repositories
// under a namespace. The catalog is scanned in batches; only the names on
// the requested page are kept.
func (r *Registry) search(c echo.Context) error {
	c.Set(routeKey, "v1-search")
	if err := r.authorizePull(c, ""); err != nil {
		return err
	}
	q, n, page, err := searchParams(c)
	if err != nil {
		return err
	}
	term := strings.ToLower(q)
	first := (page - 1) * n // index of the first match on the page
	total := 0
	results := []SearchResult{}
	ctx := c.Request().Context()
	last := ""
	for {
		names, more, err := r.rec.listSuffixes(ctx, "r/", last, searchScanBatch)
		if err != nil {
			return err
		}
		for _, name := range names {
			if !strings.Contains(strings.ToLower(name), term) {
				continue
			}
			if ok, err := r.mayList(c, name); err != nil {
				return err
			} else if !ok {
				continue
			}
			if total >= first && total < first+n {
				results = append(results, SearchResult{Name: name})
			}
			total++
		}
		if !more {
			break
		}
		last = names[len(names)-1]
	}
	return c.JSON(http.StatusOK, SearchResults{
		NumResults: total,
		NumPages:   (total + n - 1) / n,
		Page:       page,
		PageSize:   n,
		Query:      q,
		Results:    results,
	})
}
