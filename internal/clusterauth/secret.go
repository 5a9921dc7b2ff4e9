// Package clusterauth authenticates cluster traffic between Dockyard nodes
// with one shared secret: an HTTP credential (a request MAC checked by a
// middleware, added by a RoundTripper) and a challenge-response handshake in
// front of the Raft stream.
//
// It proves that a peer holds the secret; it does not encrypt anything. Use a
// private network or TLS when the wire itself must stay confidential. The
// package uses the standard library only, so the metaserver and chunkserver
// packages can both import it; it must never import them.
package clusterauth

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// MinSecretBytes is the least entropy a secret carries: an HMAC-SHA256 key
// is no stronger than 32 random bytes, and no weaker secret is worth having.
const MinSecretBytes = 32

// Errors of secret loading, matched with errors.Is.
var (
	ErrSecretFormat      = errors.New("cluster secret is not hex or base64 text")
	ErrSecretTooShort    = fmt.Errorf("cluster secret has fewer than %d bytes", MinSecretBytes)
	ErrSecretWeak        = errors.New("cluster secret does not look random")
	ErrSecretPermissions = errors.New("cluster secret file is readable by other users")
)

// Secret is a loaded cluster secret. The zero value is not usable; a nil
// *Secret means "no authentication" wherever this package accepts one.
//
// It may hold more than one key so a cluster can change its secret without
// stopping: the first signs, every one verifies (see docs/security.md).
type Secret struct {
	httpKeys [][]byte // sign HTTP requests
	raftKeys [][]byte // answer Raft stream challenges
}

// GenerateSecret returns the text of a new random secret (hex, one line), as
// `openssl rand -hex 32` would write it.
func GenerateSecret() (string, error) {
	b := make([]byte, MinSecretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating cluster secret: %w", err)
	}
	return hex.EncodeToString(b) + "\n", nil
}

// ParseSecret reads a secret from its text: one key per line, each hex or
// base64 (standard or URL alphabet, padded or not) of at least
// MinSecretBytes bytes; blank lines and surrounding white space are ignored.
// The first key signs; the others are only accepted, for rotation. Only
// encoded random bytes are accepted because a typed password of the same
// length carries far less entropy.
func ParseSecret(text []byte) (*Secret, error) {
	s := &Secret{}
	for i, line := range bytes.Split(text, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		raw, err := parseKey(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", i+1, err)
		}
		// Separate keys per use, so a value signed for one protocol
		// never verifies in the other.
		s.httpKeys = append(s.httpKeys, derive(raw, "dockyard cluster http v1"))
		s.raftKeys = append(s.raftKeys, derive(raw, "dockyard cluster raft v1"))
	}
	if len(s.httpKeys) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrSecretFormat)
	}
	return s, nil
}

func parseKey(text []byte) ([]byte, error) {
	raw, err := decode(text)
	if err != nil {
		return nil, err
	}
	if len(raw) < MinSecretBytes {
		return nil, fmt.Errorf("%w (got %d; generate one with `openssl rand -hex 32`)", ErrSecretTooShort, len(raw))
	}
	// 32 random bytes have about 30 distinct values; fewer than half of
	// that is a placeholder such as all zeros, not a secret.
	var seen [256]bool
	distinct := 0
	for _, c := range raw {
		if !seen[c] {
			seen[c] = true
			distinct++
		}
	}
	if distinct < MinSecretBytes/2 {
		return nil, fmt.Errorf("%w (only %d distinct byte values)", ErrSecretWeak, distinct)
	}
	return raw, nil
}

func decode(s []byte) ([]byte, error) {
	if len(s) == 0 {
		return nil, fmt.Errorf("%w: empty", ErrSecretFormat)
	}
	if b, err := hex.DecodeString(string(s)); err == nil {
		return b, nil
	}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if b, err := enc.DecodeString(string(s)); err == nil {
			return b, nil
		}
	}
	return nil, ErrSecretFormat
}

func derive(raw []byte, label string) []byte {
	m := hmac.New(sha256.New, raw)
	m.Write([]byte(label))
	return m.Sum(nil)
}

// LoadSecret reads the secret file at path. Like ssh with its keys, it
// refuses a file other users may read: the secret is the whole protection.
func LoadSecret(path string) (*Secret, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cluster secret file: %w", err)
	}
	if st.Mode().Perm()&0o004 != 0 {
		return nil, fmt.Errorf("%s: %w (mode %v; chmod 600 it)", path, ErrSecretPermissions, st.Mode().Perm())
	}
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster secret file: %w", err)
	}
	s, err := ParseSecret(text)
	if err != nil {
		return nil, fmt.Errorf("cluster secret file %s: %w", path, err)
	}
	return s, nil
}

// LoadOrCreateSecret loads the secret at path, first writing a new random
// one (mode 0600) when the file does not exist. It is for single-host setups
// such as `dockyard serve`, whose processes all read the same file.
func LoadOrCreateSecret(path string) (*Secret, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		text, err := GenerateSecret()
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return nil, fmt.Errorf("cluster secret: %w", err)
		}
		// O_EXCL: a concurrent first start keeps whichever file won.
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			_, err = f.WriteString(text)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				_ = os.Remove(path)
				return nil, fmt.Errorf("writing cluster secret: %w", err)
			}
		} else if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("writing cluster secret: %w", err)
		}
	}
	return LoadSecret(path)
}
