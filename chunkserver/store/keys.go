package store

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Encryption at rest. A key file holds one or more named 256-bit master keys;
// the first encrypts new shards, the others only decrypt shards written while
// they were first, so a key can be rotated without rewriting the store at
// once. The file format is text, one key a line:
//
//	# comments and blank lines are ignored
//	ID 64-hex-digits
//
// IDs are 1-64 characters of [A-Za-z0-9._-]. keygen (GenerateKey,
// WriteKeyFile) writes such files with mode 0600, and LoadKeys refuses one
// that group or others may read or write: the key is the whole protection.

// KeySize is the length of a master key.
const KeySize = 32

// Key is one named master key.
type Key struct {
	ID     string
	secret [KeySize]byte
}

// Fingerprint identifies the key in shard headers and the data directory's
// marker without revealing it: the first 8 bytes of an HMAC-SHA256 of a
// fixed label under the key.
func (k Key) Fingerprint() [8]byte {
	m := hmac.New(sha256.New, k.secret[:])
	m.Write([]byte("dockyard shard key fingerprint v1"))
	return [8]byte(m.Sum(nil))
}

// Keys is a parsed key file: the primary key first.
type Keys struct {
	list []Key
	byFP map[[8]byte]int // fingerprint -> index in list
	// primaryFP is the primary key's fingerprint, which every Put writes.
	primaryFP [8]byte
}

// Primary is the key new shards are encrypted with.
func (k *Keys) Primary() Key { return k.list[0] }

// IDs lists the keys' IDs, primary first.
func (k *Keys) IDs() []string {
	ids := make([]string, len(k.list))
	for i, key := range k.list {
		ids[i] = key.ID
	}
	return ids
}

// byFingerprint finds the key with fingerprint fp.
func (k *Keys) byFingerprint(fp [8]byte) (Key, bool) {
	i, ok := k.byFP[fp]
	if !ok {
		return Key{}, false
	}
	return k.list[i], true
}

func (k *Keys) byID(id string) (Key, bool) {
	for _, key := range k.list {
		if key.ID == id {
			return key, true
		}
	}
	return Key{}, false
}

// NewKeys builds a key set, primary first. It refuses an empty list,
// repeated IDs and repeated keys.
func NewKeys(keys ...Key) (*Keys, error) {
	if len(keys) == 0 {
		return nil, errors.New("no keys")
	}
	ks := &Keys{list: keys, byFP: make(map[[8]byte]int, len(keys))}
	ids := map[string]bool{}
	for i, key := range keys {
		if err := checkKeyID(key.ID); err != nil {
			return nil, err
		}
		if ids[key.ID] {
			return nil, fmt.Errorf("key ID %q appears twice", key.ID)
		}
		ids[key.ID] = true
		if key.secret == ([KeySize]byte{}) {
			return nil, fmt.Errorf("key %q is all zeros", key.ID)
		}
		fp := key.Fingerprint()
		if _, dup := ks.byFP[fp]; dup {
			return nil, fmt.Errorf("key %q repeats the key of %q", key.ID, keys[ks.byFP[fp]].ID)
		}
		ks.byFP[fp] = i
	}
	ks.primaryFP = keys[0].Fingerprint()
	return ks, nil
}

func checkKeyID(id string) error {
	if id == "" || len(id) > 64 {
		return fmt.Errorf("key ID %q: want 1 to 64 characters", id)
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("key ID %q: only letters, digits, '.', '_' and '-'", id)
		}
	}
	return nil
}

// GenerateKey makes a random key named id; an empty id becomes one from
// today's date and random digits (e.g. 2026-11-27-3fa9c1).
func GenerateKey(id string) (Key, error) {
	var k Key
	if _, err := rand.Read(k.secret[:]); err != nil {
		return Key{}, err
	}
	if id == "" {
		var r [3]byte
		_, _ = rand.Read(r[:])
		id = time.Now().UTC().Format("2006-01-02") + "-" + hex.EncodeToString(r[:])
	}
	if err := checkKeyID(id); err != nil {
		return Key{}, err
	}
	k.ID = id
	return k, nil
}

// ParseKeys reads a key file's contents.
func ParseKeys(b []byte) (*Keys, error) {
	var keys []Key
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		fields := strings.Fields(text)
		if len(fields) != 2 {
			return nil, fmt.Errorf("line %d: want \"ID HEXKEY\"", line)
		}
		raw, err := hex.DecodeString(fields[1])
		if err != nil || len(raw) != KeySize {
			return nil, fmt.Errorf("line %d: key %q: want %d hex digits", line, fields[0], 2*KeySize)
		}
		keys = append(keys, Key{ID: fields[0], secret: [KeySize]byte(raw)})
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("no keys in it")
	}
	return NewKeys(keys...)
}

// LoadKeys reads the key file at path. It refuses a file that users other
// than its owner may read or write.
func LoadKeys(path string) (*Keys, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("encryption key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("encryption key file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("encryption key file %s: mode %04o lets others at the keys; chmod 600 it", path, perm)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("encryption key file: %w", err)
	}
	keys, err := ParseKeys(b)
	if err != nil {
		return nil, fmt.Errorf("encryption key file %s: %w", path, err)
	}
	return keys, nil
}

// FormatKeys renders keys as a key file, primary first.
func FormatKeys(keys *Keys) []byte {
	var b bytes.Buffer
	b.WriteString("# Dockyard shard encryption keys (dockyard chunkserver keygen). Keep this file secret\n" +
		"# and backed up apart from the disks: without it the shards cannot be read.\n" +
		"# One key a line, ID then 64 hex digits. The first key encrypts new shards;\n" +
		"# the others only read shards written under them.\n")
	for _, k := range keys.list {
		fmt.Fprintf(&b, "%s %s\n", k.ID, hex.EncodeToString(k.secret[:]))
	}
	return b.Bytes()
}

// WriteKeyFile writes keys to path with mode 0600, replacing the file
// atomically (a crash leaves the old file or the new one, never half of
// one).
func WriteKeyFile(path string, keys *Keys) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp.")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a successful rename there is nothing to remove
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(FormatKeys(keys)); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

// AddPrimary returns keys with k in front, as the new primary key.
func (k *Keys) AddPrimary(key Key) (*Keys, error) {
	return NewKeys(append([]Key{key}, k.list...)...)
}
