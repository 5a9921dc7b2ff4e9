package store

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// How a shard is encrypted (format versions 3 and 4, see Disk).
//
// Each Put draws a random 16-byte salt, kept in the header, and derives with
// HKDF-SHA256 from the primary master key and that salt a 256-bit key for
// this one file plus an 8-byte mask. Every BlockSize block of data is sealed
// on its own with AES-256-GCM: the nonce is the block's index, the
// additional data the shard's name, size and checksum, and the 16-byte tag
// goes into the trailer where an unencrypted shard keeps the block's
// xxhash64. So:
//
//   - the data stays where it was (same offsets, same page alignment) and a
//     ranged read still reads and checks only the blocks it touches; a
//     block's tag takes the place of its checksum, and a block failing it is
//     ErrCorrupt exactly as a block failing its checksum is, whether the
//     cause is a bad sector or a deliberate edit;
//   - a file's key is used for one file only, written once, so block-index
//     nonces never repeat under a key, and no two files share a keystream
//     even when they hold the same bytes (a rewrite of a shard gets a new salt);
//   - the name and size in the additional data stop a file from being passed
//     off as another shard or truncated with a rewritten header;
//   - the whole-shard xxhash64 (what Stat reports and the metaserver keeps)
//     is stored masked, since an unkeyed hash of the plaintext would let
//     anyone holding the disk confirm a guess of a shard's contents, and it
//     is authenticated by every block's tag;
//   - the header names the master key by its fingerprint (Key.Fingerprint),
//     so shards written under an older key stay readable after rotation.
//
// What the header still shows in clear: the shard's name (the file's name),
// its size and which key encrypted it. docs/security.md has the rest.

// tagSize is the length of a block's GCM tag in an encrypted shard's trailer.
const tagSize = 16

const (
	// formatPackedEncrypted (version 3) is version 1 encrypted.
	formatPackedEncrypted = 3
	// formatAlignedEncrypted (version 4) is version 2 encrypted.
	formatAlignedEncrypted = 4
)

// hkdfInfo labels the derivation, so these keys can never collide with
// keys derived from the same master key for another purpose.
const hkdfInfo = "dockyard shard AES-256-GCM v1"

// ErrEncrypted is returned by OpenShard for an encrypted shard: a reader
// given the file would read ciphertext.
var ErrEncrypted = errors.New("shard is encrypted at rest; read it through the store")

// shardHeader is a parsed shard file header.
type shardHeader struct {
	size int64
	sum  uint64 // as stored: masked when enc
	off  int64  // where the data starts
	enc  bool
	salt [16]byte
	fp   [8]byte // fingerprint of the master key
}

// entrySize is the length of a trailer entry: a checksum or a tag.
func (h shardHeader) entrySize() int64 {
	if h.enc {
		return tagSize
	}
	return 8
}

// fileSize is the length of the file the header describes.
func (h shardHeader) fileSize() int64 {
	return h.off + h.size + h.entrySize()*int64(numBlocks(h.size))
}

// shardCipher seals and opens the blocks of one shard file.
type shardCipher struct {
	aead cipher.AEAD
	mask uint64
	aad  []byte // name | size | plaintext checksum
	hdr  shardHeader
}

// newShardCipher derives the cipher of a shard from its master key and its
// header. hdr.sum must be the stored (masked) checksum.
func newShardCipher(key Key, name string, hdr shardHeader) (*shardCipher, error) {
	c, err := deriveCipher(key, hdr.salt)
	if err != nil {
		return nil, err
	}
	c.bind(name, hdr)
	return c, nil
}

// fileKeys derives a file's AES key and checksum mask from the master key
// and the file's salt. Indexing a store at start needs only the mask, so it
// stops here rather than set up a cipher per shard.
func fileKeys(key Key, salt [16]byte) (aesKey []byte, mask uint64, err error) {
	okm, err := hkdf.Key(sha256.New, key.secret[:], salt[:], hkdfInfo, KeySize+8)
	if err != nil {
		return nil, 0, err
	}
	return okm[:KeySize], binary.LittleEndian.Uint64(okm[KeySize:]), nil
}

// deriveCipher derives a file's cipher and mask from the master key and the
// file's salt; bind must follow.
func deriveCipher(key Key, salt [16]byte) (*shardCipher, error) {
	aesKey, mask, err := fileKeys(key, salt)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(aesKey)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &shardCipher{aead: aead, mask: mask}, nil
}

// bind ties the cipher to the shard: its name, size and checksum become
// the blocks' additional data. hdr.sum is the stored (masked) checksum.
func (c *shardCipher) bind(name string, hdr shardHeader) {
	c.hdr = hdr
	c.aad = make([]byte, 0, len(name)+16)
	c.aad = append(c.aad, name...)
	c.aad = binary.LittleEndian.AppendUint64(c.aad, uint64(hdr.size))
	c.aad = binary.LittleEndian.AppendUint64(c.aad, hdr.sum^c.mask)
}

// sum is the shard's plaintext checksum.
func (c *shardCipher) sum() uint64 { return c.hdr.sum ^ c.mask }

func blockNonce(i int64) []byte {
	var n [12]byte
	binary.BigEndian.PutUint64(n[4:], uint64(i))
	return n[:]
}

// seal encrypts data into ct (len(data) bytes, capacity at least
// len(data)+tagSize) and the blocks' tags into tags.
func (c *shardCipher) seal(ct, tags, data []byte) {
	for i := range int64(numBlocks(int64(len(data)))) {
		lo := i * BlockSize
		hi := min(lo+BlockSize, int64(len(data)))
		// Seal appends the tag after the block, over the start of the
		// next one, which is sealed only afterwards.
		out := c.aead.Seal(ct[lo:lo], blockNonce(i), data[lo:hi], c.aad)
		copy(tags[tagSize*i:], out[hi-lo:])
	}
}

// open decrypts and checks ct, whole consecutive blocks starting with block
// first, into dst (which may be ct itself) against their tags. It returns
// the index of the first block that fails, counted from ct's first, or -1.
func (c *shardCipher) open(dst, ct, tags []byte, first int64) int64 {
	bp := sealBufs.Get().(*[]byte)
	defer sealBufs.Put(bp)
	scratch := *bp
	for i := int64(0); i*BlockSize < int64(len(ct)); i++ {
		lo := i * BlockSize
		hi := min(lo+BlockSize, int64(len(ct)))
		// GCM wants the tag right after the ciphertext; on disk it sits in
		// the trailer.
		n := copy(scratch, ct[lo:hi])
		n += copy(scratch[n:], tags[tagSize*i:tagSize*(i+1)])
		if _, err := c.aead.Open(dst[lo:lo], blockNonce(first+i), scratch[:n], c.aad); err != nil {
			return i
		}
	}
	return -1
}

var sealBufs = sync.Pool{New: func() any { b := make([]byte, BlockSize+tagSize); return &b }}

// ctBufs holds the ciphertext buffers of encrypted Puts in flight.
var ctBufs sync.Pool

func getCT(n int) *[]byte {
	if bp, ok := ctBufs.Get().(*[]byte); ok && cap(*bp) >= n+tagSize {
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n, n+tagSize)
	return &b
}

// newSalt draws a shard's salt.
func newSalt() [16]byte {
	var s [16]byte
	_, _ = rand.Read(s[:])
	return s
}

// The data directory's encryption marker, shards/encryption.json: that the
// store is encrypted and which keys may have encrypted its shards. It is
// what makes a start without the key, with the wrong key, or with a key on a
// store of plaintext shards fail instead of silently mixing the two.

const markerFile = "encryption.json"

const markerFormat = "dockyard shard encryption"

type marker struct {
	Format  string      `json:"format"`
	Version int         `json:"version"`
	Cipher  string      `json:"cipher"`
	Keys    []markerKey `json:"keys"`
}

type markerKey struct {
	ID          string `json:"id"`
	Fingerprint string `json:"fingerprint"`
}

func (d *Disk) markerPath() string { return filepath.Join(d.dir, markerFile) }

// readMarker returns the marker, or nil when there is none.
func (d *Disk) readMarker() (*marker, error) {
	b, err := os.ReadFile(d.markerPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m marker
	if err := json.Unmarshal(b, &m); err != nil || m.Format != markerFormat {
		return nil, fmt.Errorf("encryption marker %s is damaged: %v", d.markerPath(), err)
	}
	if m.Version != 1 {
		return nil, fmt.Errorf("encryption marker %s has version %d, this chunkserver knows 1", d.markerPath(), m.Version)
	}
	return &m, nil
}

func (d *Disk) writeMarker(m *marker) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(d.dir, markerFile+tmpMarker+"*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // nothing left to remove after the rename
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, d.markerPath()); err != nil {
		return err
	}
	return syncDir(d.dir)
}

func markerKeyIDs(m *marker) string {
	ids := make([]string, len(m.Keys))
	for i, k := range m.Keys {
		ids[i] = k.ID
	}
	return strings.Join(ids, ", ")
}

// loadStats is what load found in the shard headers.
type loadStats struct {
	plain   int             // unencrypted shards
	byKey   map[[8]byte]int // encrypted shards by key fingerprint
	unknown map[[8]byte]int // of those, by keys the store was not given
}

// checkEncryption compares the store's keys (nil: none) with the marker
// and the shards load found, and brings the marker up to date. It fails,
// with what to do, rather than let encrypted and plaintext shards mix or
// serve a store whose key is missing.
func (d *Disk) checkEncryption(m *marker, st loadStats) error {
	encrypted := 0
	for _, n := range st.byKey {
		encrypted += n
	}
	if d.keys == nil {
		switch {
		case m != nil:
			return fmt.Errorf("the data directory is encrypted (keys %s): give its key file (--encryption-key-file)", markerKeyIDs(m))
		case encrypted > 0:
			return fmt.Errorf("%d shards are encrypted but the data directory has no encryption marker: give the key file (--encryption-key-file)", encrypted)
		}
		return nil
	}
	if st.plain > 0 {
		return fmt.Errorf("the data directory holds %d unencrypted shards: an encrypted chunkserver would mix them with encrypted ones; "+
			"start it without --encryption-key-file, or on an empty directory and let repair or drain move the shards", st.plain)
	}
	if m != nil {
		known := false
		for _, mk := range m.Keys {
			k, ok := d.keys.byID(mk.ID)
			if !ok {
				continue
			}
			if fp := k.Fingerprint(); hex.EncodeToString(fp[:]) != mk.Fingerprint {
				return fmt.Errorf("key %q in the key file is not the key %q that encrypted this data directory (fingerprint %s, the file's is %x): wrong key file?",
					mk.ID, mk.ID, mk.Fingerprint, fp)
			}
			known = true
		}
		if !known {
			return fmt.Errorf("wrong key file: the data directory was encrypted with keys %s, the key file holds %s",
				markerKeyIDs(m), strings.Join(d.keys.IDs(), ", "))
		}
	}
	for fp, n := range st.unknown {
		id := fmt.Sprintf("fingerprint %x", fp)
		if m != nil {
			for _, mk := range m.Keys {
				if mk.Fingerprint == hex.EncodeToString(fp[:]) {
					id = fmt.Sprintf("%q (fingerprint %x)", mk.ID, fp)
				}
			}
		}
		return fmt.Errorf("%d shards are encrypted with key %s, which the key file lacks: add it back (after the primary key)", n, id)
	}
	// The marker lists the primary key (before any shard is written with
	// it) and every key a shard here still uses; a key retired from the
	// key file once no shard uses it leaves the marker too.
	want := &marker{Format: markerFormat, Version: 1, Cipher: "AES-256-GCM per 64 KiB block, HKDF-SHA256 per-shard keys"}
	for _, k := range d.keys.list {
		fp := k.Fingerprint()
		if k.ID == d.keys.Primary().ID || st.byKey[fp] > 0 {
			want.Keys = append(want.Keys, markerKey{ID: k.ID, Fingerprint: hex.EncodeToString(fp[:])})
		}
	}
	if m != nil && slices.Equal(m.Keys, want.Keys) && m.Cipher == want.Cipher {
		return nil
	}
	if err := d.writeMarker(want); err != nil {
		return fmt.Errorf("writing the encryption marker: %w", err)
	}
	return nil
}

// WithEncryption makes the store encrypt new shards with keys' primary key
// and read shards encrypted with any of them (see encrypt.go). OpenDisk
// then refuses a data directory holding unencrypted shards, and without
// this option one marked encrypted.
func WithEncryption(keys *Keys) DiskOption { return func(d *Disk) { d.keys = keys } }

// Encrypted reports whether the store encrypts its shards: their files
// hold ciphertext, so they must not be handed to readers (OpenShard
// refuses them).
func (d *Disk) Encrypted() bool { return d.keys != nil }

// cipherFor returns the cipher of shard name's file as its header hdr
// describes it, cached with the read handle h.
func (d *Disk) cipherFor(h *shardHandle, name string, hdr shardHeader) (*shardCipher, error) {
	if c := h.cipher.Load(); c != nil && c.hdr == hdr {
		return c, nil
	}
	c, err := d.newCipher(name, hdr)
	if err != nil {
		return nil, err
	}
	h.cipher.Store(c)
	return c, nil
}

func (d *Disk) newCipher(name string, hdr shardHeader) (*shardCipher, error) {
	if d.keys == nil {
		return nil, fmt.Errorf("header: encrypted, and the store has no keys: %w", ErrCorrupt)
	}
	key, ok := d.keys.byFingerprint(hdr.fp)
	if !ok {
		return nil, fmt.Errorf("header: encrypted with key fingerprint %x, not in the key file: %w", hdr.fp, ErrCorrupt)
	}
	return newShardCipher(key, name, hdr)
}

// Keys returns the store's keys, nil when it does not encrypt.
func (d *Disk) Keys() *Keys { return d.keys }
