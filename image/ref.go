// Package image turns an image reference into something to run: it resolves
// REF against a registry over HTTP (manifest, platform, config, as any client
// does), makes sure the converter has indexed the image into a merged tree in
// the file system, and mounts that tree read-only and lazily. `dockyard run`
// and `dockyard mount --image` are thin wrappers over it. The other way round,
// it writes a directory as a layer and pushes an image with it (`dockyard
// commit`), through the same API.
//
// Manifests and configs come through the registry's public API rather than
// its records, so the run side depends on the protocol, not on how a registry
// stores things; only file bytes come straight from the file system.
package image

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
)

// DefaultRegistry is where a reference without a registry host points: the
// registry `dockyard serve` runs.
const DefaultRegistry = "127.0.0.1:5000"

// Ref is a parsed image reference: [HOST[:PORT]/]NAME[:TAG][@DIGEST].
type Ref struct {
	Registry string // host:port
	Repo     string // a/b/c
	Tag      string
	Digest   digest.Digest
}

// Reference is the tag or digest to ask the registry for (the digest wins).
func (r Ref) Reference() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

func (r Ref) String() string {
	s := r.Registry + "/" + r.Repo
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest.String()
	}
	return s
}

// Path components and tags per the OCI distribution spec's grammar.
var (
	componentRE = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*$`)
	tagRE       = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// ParseRef parses a reference the way docker does: the first path element is
// a registry host when it contains '.' or ':' or is "localhost"; otherwise
// the reference names a repository on DefaultRegistry. A missing tag means
// "latest".
func ParseRef(s string) (Ref, error) {
	var r Ref
	if s == "" {
		return r, fmt.Errorf("empty image reference")
	}
	rest := s
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		d, err := digest.Parse(rest[at+1:])
		if err != nil {
			return r, fmt.Errorf("image reference %q: bad digest: %v", s, err)
		}
		r.Digest, rest = d, rest[:at]
	}
	if first, tail, ok := strings.Cut(rest, "/"); ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		r.Registry, rest = first, tail
	} else {
		r.Registry = DefaultRegistry
	}
	if colon := strings.LastIndex(rest, ":"); colon >= 0 {
		r.Tag, rest = rest[colon+1:], rest[:colon]
		if !tagRE.MatchString(r.Tag) {
			return r, fmt.Errorf("image reference %q: invalid tag %q", s, r.Tag)
		}
	}
	if r.Tag == "" && r.Digest == "" {
		r.Tag = "latest"
	}
	if rest == "" {
		return r, fmt.Errorf("image reference %q: no repository name", s)
	}
	for _, c := range strings.Split(rest, "/") {
		if !componentRE.MatchString(c) {
			return r, fmt.Errorf("image reference %q: invalid repository name %q", s, rest)
		}
	}
	r.Repo = rest
	return r, nil
}
