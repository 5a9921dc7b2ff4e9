package registry

import (
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"hash"
	"regexp"
	"strings"
)

// The spec's grammar. Names are several slash-separated components, which is
// why /v2/* is split here and not by Echo's router.
var (
	nameRe = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRe  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	// uploadIDRe matches the ids this registry hands out; anything else is an
	// unknown upload, not a path to resolve.
	uploadIDRe = regexp.MustCompile(`^[a-f0-9]{32}$`)
)

// MaxNameLen bounds a repository name. The spec asks clients to keep
// host+name under 255 bytes; refusing longer names early keeps KV keys small.
const MaxNameLen = 255

// ValidName reports whether name is a repository name per the spec grammar.
func ValidName(name string) bool {
	return len(name) <= MaxNameLen && nameRe.MatchString(name)
}

// ValidTag reports whether tag matches the spec's tag grammar.
func ValidTag(tag string) bool { return tagRe.MatchString(tag) }

// Digest is a validated "alg:hex" content digest. Only sha256 and sha512 are
// accepted: they are what the spec requires and what clients produce.
type Digest struct {
	Alg string
	Hex string
}

func (d Digest) String() string { return d.Alg + ":" + d.Hex }

// IsZero reports whether d is the zero Digest.
func (d Digest) IsZero() bool { return d.Alg == "" }

// ParseDigest validates s as a sha256 or sha512 digest.
func ParseDigest(s string) (Digest, error) {
	alg, hx, ok := strings.Cut(s, ":")
	if !ok {
		return Digest{}, ErrDigestInvalid.With("digest %q has no algorithm", s)
	}
	var n int
	switch alg {
	case "sha256":
		n = sha256.Size * 2
	case "sha512":
		n = sha512.Size * 2
	default:
		return Digest{}, ErrDigestInvalid.With("unsupported digest algorithm %q", alg)
	}
	if len(hx) != n || strings.ToLower(hx) != hx {
		return Digest{}, ErrDigestInvalid.With("digest %q: want %d lowercase hex characters", s, n)
	}
	if _, err := hex.DecodeString(hx); err != nil {
		return Digest{}, ErrDigestInvalid.With("digest %q is not hex", s)
	}
	return Digest{Alg: alg, Hex: hx}, nil
}

// newHash returns a fresh hash for a digest algorithm.
func newHash(alg string) hash.Hash {
	if alg == "sha512" {
		return sha512.New()
	}
	return sha256.New()
}

// digestOf returns the digest of b with alg.
func digestOf(alg string, b []byte) Digest {
	h := newHash(alg)
	h.Write(b)
	return Digest{Alg: alg, Hex: hex.EncodeToString(h.Sum(nil))}
}

// route is a parsed /v2/ path.
type route struct {
	kind string // "base", "catalog", "tags", "manifest", "blob", "upload", "referrers"
	name string
	ref  string // manifest reference, blob digest, upload id or referrers subject
}

// parseRoute splits the tail of a /v2/ path (without the "/v2/" prefix) by
// matching the fixed endpoint suffixes from the right, so a name may itself
// contain segments such as "blobs" or "manifests". It reports false for a
// path that is no endpoint; a recognised endpoint with an invalid name still
// parses, so the handler can answer NAME_INVALID.
func parseRoute(tail string) (route, bool) {
	switch tail {
	case "":
		return route{kind: "base"}, true
	case "_catalog":
		return route{kind: "catalog"}, true
	}
	if name, ok := strings.CutSuffix(tail, "/tags/list"); ok && name != "" {
		return route{kind: "tags", name: name}, true
	}
	if name, ok := strings.CutSuffix(tail, "/blobs/uploads/"); ok && name != "" {
		return route{kind: "upload", name: name}, true
	}
	if name, ok := strings.CutSuffix(tail, "/blobs/uploads"); ok && name != "" {
		return route{kind: "upload", name: name}, true
	}
	for _, p := range []struct{ sep, kind string }{
		{"/blobs/uploads/", "upload"},
		{"/manifests/", "manifest"},
		{"/blobs/", "blob"},
		{"/referrers/", "referrers"},
	} {
		i := strings.LastIndex(tail, p.sep)
		if i <= 0 {
			continue
		}
		ref := tail[i+len(p.sep):]
		if ref == "" || strings.Contains(ref, "/") {
			continue
		}
		return route{kind: p.kind, name: tail[:i], ref: ref}, true
	}
	return route{}, false
}
