package image

import (
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	const d = "sha256:ffaf8c32ec6abde2ea876e1626ae0328d7269293b848f93ea613fc6f567bdeeb"
	for _, tc := range []struct {
		in                        string
		registry, repo, tag, dgst string
		err                       string
	}{
		{in: "busybox", registry: DefaultRegistry, repo: "busybox", tag: "latest"},
		{in: "library/busybox:1.36", registry: DefaultRegistry, repo: "library/busybox", tag: "1.36"},
		{in: "127.0.0.1:5000/a/b/c:v1", registry: "127.0.0.1:5000", repo: "a/b/c", tag: "v1"},
		{in: "localhost/x", registry: "localhost", repo: "x", tag: "latest"},
		{in: "registry.example/x@" + d, registry: "registry.example", repo: "x", dgst: d},
		{in: "127.0.0.1:5000/x:t@" + d, registry: "127.0.0.1:5000", repo: "x", tag: "t", dgst: d},
		{in: "", err: "empty"},
		{in: "127.0.0.1:5000/", err: "no repository"},
		{in: "Upper/case", err: "invalid repository"},
		{in: "a//b", err: "invalid repository"},
		{in: "x:bad tag", err: "invalid tag"},
		{in: "x@sha256:short", err: "bad digest"},
	} {
		r, err := ParseRef(tc.in)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%q: err = %v, want %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if r.Registry != tc.registry || r.Repo != tc.repo || r.Tag != tc.tag || string(r.Digest) != tc.dgst {
			t.Errorf("%q: got %+v", tc.in, r)
		}
		if tc.dgst != "" && r.Reference() != tc.dgst || tc.dgst == "" && r.Reference() != tc.tag {
			t.Errorf("%q: Reference() = %q", tc.in, r.Reference())
		}
	}
}
