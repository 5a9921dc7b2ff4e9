package registry

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strconv"
	"testing"
)

func TestSearch(t *testing.T) {
	env := newTestEnv(t, Config{})
	for _, repo := range []string{"web/frontend", "web/api", "tools/webhook", "db/postgres", "alpine"} {
		env.pushBlob(repo, []byte("layer of "+repo))
	}
	type want struct {
		names             []string
		total, pages, pge int
		size              int
	}
	for _, tc := range []struct {
		query string
		want  want
	}{
		{"q=web", want{[]string{"tools/webhook", "web/api", "web/frontend"}, 3, 1, 1, 25}},
		{"q=WEB", want{[]string{"tools/webhook", "web/api", "web/frontend"}, 3, 1, 1, 25}},
		{"q=web/", want{[]string{"web/api", "web/frontend"}, 2, 1, 1, 25}},
		{"q=web/api", want{[]string{"web/api"}, 1, 1, 1, 25}},
		{"q=s/web", want{[]string{"tools/webhook"}, 1, 1, 1, 25}},
		{"q=alp", want{[]string{"alpine"}, 1, 1, 1, 25}},
		{"q=o", want{[]string{"db/postgres", "tools/webhook", "web/frontend"}, 3, 1, 1, 25}},
		{"q=o&n=2", want{[]string{"db/postgres", "tools/webhook"}, 3, 2, 1, 2}},
		{"q=o&n=2&page=2", want{[]string{"web/frontend"}, 3, 2, 2, 2}},
		{"q=o&n=2&page=3", want{[]string{}, 3, 2, 3, 2}},
		{"q=e&n=100", want{[]string{"alpine", "db/postgres", "tools/webhook", "web/api", "web/frontend"}, 5, 1, 1, 100}},
		{"q=nothing", want{[]string{}, 0, 0, 1, 25}},
		{"q=+web+", want{[]string{"tools/webhook", "web/api", "web/frontend"}, 3, 1, 1, 25}},
	} {
		t.Run(tc.query, func(t *testing.T) {
			r := env.must(env.do("GET", "/v1/search?"+tc.query, nil, nil), http.StatusOK)
			if ct := r.header.Get("Content-Type"); ct != "application/json" && ct != "application/json; charset=UTF-8" {
				t.Errorf("Content-Type %q", ct)
			}
			var got SearchResults
			if err := json.Unmarshal(r.body, &got); err != nil {
				t.Fatalf("%v: %s", err, r.body)
			}
			names := []string{}
			for _, res := range got.Results {
				names = append(names, res.Name)
				if res.Description != "" || res.StarCount != 0 || res.IsOfficial || res.IsAutomated {
					t.Errorf("result %+v claims what Dockyard does not keep", res)
				}
			}
			g := want{names, got.NumResults, got.NumPages, got.Page, got.PageSize}
			if !reflect.DeepEqual(g, tc.want) {
				t.Errorf("got %+v, want %+v", g, tc.want)
			}
		})
	}
	// The wire format is docker's: every key present, results never null.
	r := env.must(env.do("GET", "/v1/search?q=nothing", nil, nil), http.StatusOK)
	var raw map[string]any
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"num_results", "num_pages", "page", "page_size", "query", "results"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("answer lacks %q: %s", k, r.body)
		}
	}
	if raw["results"] == nil || raw["query"] != "nothing" {
		t.Errorf("answer %s", r.body)
	}
}

func TestSearchScansInBatches(t *testing.T) {
	env := newTestEnv(t, Config{})
	n := searchScanBatch + 30
	for i := range n {
		env.pushBlob("many/r"+strconv.Itoa(10000+i), []byte{byte(i)})
	}
	env.pushBlob("zz/r10001-last", []byte("last"))
	var got SearchResults
	r := env.must(env.do("GET", "/v1/search?q=r1&n=100&page=11", nil, nil), http.StatusOK)
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	if got.NumResults != n+1 || got.NumPages != (n+1+99)/100 || len(got.Results) != 31 {
		t.Fatalf("got %d results of %d in %d pages", len(got.Results), got.NumResults, got.NumPages)
	}
	if got.Results[0].Name != "many/r11000" || got.Results[30].Name != "zz/r10001-last" {
		t.Errorf("page 11 runs from %s to %s", got.Results[0].Name, got.Results[30].Name)
	}
}

func TestSearchBadParameters(t *testing.T) {
	env := newTestEnv(t, Config{})
	long := make([]byte, searchMaxQuery+1)
	for i := range long {
		long[i] = 'a'
	}
	for _, tc := range []struct{ query, code string }{
		{"", "SEARCH_INVALID"},
		{"q=", "SEARCH_INVALID"},
		{"q=+", "SEARCH_INVALID"},
		{"q=" + string(long), "SEARCH_INVALID"},
		{"q=a&n=0", "PAGINATION_NUMBER_INVALID"},
		{"q=a&n=101", "PAGINATION_NUMBER_INVALID"},
		{"q=a&n=-1", "PAGINATION_NUMBER_INVALID"},
		{"q=a&n=ten", "PAGINATION_NUMBER_INVALID"},
		{"q=a&page=0", "PAGINATION_NUMBER_INVALID"},
		{"q=a&page=x", "PAGINATION_NUMBER_INVALID"},
	} {
		r := env.do("GET", "/v1/search?"+tc.query, nil, nil)
		if r.status != http.StatusBadRequest || r.code() != tc.code {
			t.Errorf("%q: %d %s, want 400 %s", tc.query, r.status, r.body, tc.code)
		}
	}
}

func TestPing(t *testing.T) {
	env := newTestEnv(t, Config{})
	for _, m := range []string{"GET", "HEAD"} {
		r := env.must(env.do(m, "/v1/_ping", nil, nil), http.StatusOK)
		if h := r.header.Get("X-Docker-Registry-Standalone"); h != "true" {
			t.Errorf("%s: X-Docker-Registry-Standalone %q", m, h)
		}
		if m == "GET" && string(r.body) != `{"standalone":true}` {
			t.Errorf("body %s", r.body)
		}
	}
	// The rest of the V1 API is not served.
	env.must(env.do("GET", "/v1/repositories/x/images", nil, nil), http.StatusNotFound)
	env.must(env.do("POST", "/v1/search?q=a", nil, nil), http.StatusMethodNotAllowed)
}
