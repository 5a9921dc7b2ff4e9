package store_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/chunkserver/store"
	"github.com/dockyard/dockyard/chunkserver/store/storetest"
)

func newKeys(t testing.TB, ids ...string) *store.Keys {
	t.Helper()
	var list []store.Key
	for _, id := range ids {
		k, err := store.GenerateKey(id)
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, k)
	}
	keys, err := store.NewKeys(list...)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func openEncrypted(t *testing.T, dir string, keys *store.Keys, opts ...store.DiskOption) *store.Disk {
	t.Helper()
	d, err := store.OpenDisk(dir, 0, append(opts, store.WithEncryption(keys))...)
	if err != nil {
		t.Fatalf("OpenDisk with keys %v: %v", keys.IDs(), err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// The whole store contract holds for an encrypted store: round trips at
// every block boundary, ranged reads, corruption (here a flipped byte of
// ciphertext, caught by the block's tag), capacity, buffered Puts.
func TestDiskEncryptedConformance(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts []store.DiskOption
	}{
		{"aligned", nil},
		{"packed", []store.DiskOption{store.WithPackedFormat()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			storetest.Run(t, func(t *testing.T, capacity int64) storetest.Harness {
				dir := t.TempDir()
				d, err := store.OpenDisk(dir, capacity, append(tc.opts, store.WithEncryption(newKeys(t, "k1")))...)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { d.Close() })
				return storetest.Harness{
					Store:     d,
					Corrupt:   func(name string, off int64) error { return flipData(d.Path(name), off) },
					Leftovers: func() ([]string, error) { return tempFiles(dir) },
				}
			})
		})
	}
}

// pattern is plaintext easy to look for in the files.
func pattern(n int) []byte {
	return bytes.Repeat([]byte("dockyard-plaintext-"), n/19+1)[:n]
}

func TestEncryptedFilesHoldNoPlaintext(t *testing.T) {
	dir := t.TempDir()
	d := openEncrypted(t, dir, newKeys(t, "k1"))
	small, big := pattern(1000), pattern(3*store.BlockSize+77)
	for n, data := range map[string][]byte{"0000000000000001.0": small, "0000000000000001.1": big} {
		if _, err := d.Put(n, data); err != nil {
			t.Fatal(err)
		}
	}
	var files int
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		if bytes.Contains(b, []byte("dockyard-plaintext")) {
			t.Errorf("%s holds plaintext", path)
		}
		// Nor the plaintext's checksums, which would let a guess of the
		// contents be confirmed.
		for _, data := range [][]byte{small, big} {
			var sum [8]byte
			binary.LittleEndian.PutUint64(sum[:], chunkserver.Sum(data))
			if bytes.Contains(b, sum[:]) {
				t.Errorf("%s holds the checksum of a shard's plaintext", path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files != 3 { // two shards and the marker
		t.Errorf("found %d files, want 2 shards and the marker", files)
	}
	// The store still reports the plaintext checksum, as the metaserver
	// expects, and reads the plaintext back.
	info, err := d.Stat("0000000000000001.1")
	if err != nil || info.Sum != chunkserver.Sum(big) || info.Size != int64(len(big)) {
		t.Errorf("Stat = %+v, %v; want size %d sum %016x", info, err, len(big), chunkserver.Sum(big))
	}
}

func TestEncryptedRangedReadsAtOddOffsets(t *testing.T) {
	d := openEncrypted(t, t.TempDir(), newKeys(t, "k1"))
	size := 5*store.BlockSize + 4321
	data := pattern(size)
	for i := range data {
		data[i] ^= byte(i * 7) // no two blocks alike
	}
	n := "00000000000000aa.3"
	if _, err := d.Put(n, data); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int{1, 4095, store.BlockSize - 3, store.BlockSize + 17, 2*store.BlockSize - 1, 4*store.BlockSize + 9} {
		for _, l := range []int{1, 7, 4096, store.BlockSize, store.BlockSize + 5, 2*store.BlockSize + 13} {
			l = min(l, size-off)
			p := make([]byte, l)
			if got, err := d.ReadAt(n, p, int64(off)); err != nil || got != l {
				t.Fatalf("ReadAt(off %d, len %d) = %d, %v", off, l, got, err)
			}
			if !bytes.Equal(p, data[off:off+l]) {
				t.Errorf("ReadAt(off %d, len %d): wrong bytes", off, l)
			}
		}
	}
	// A reopened store reads them too, and knows the plaintext checksum.
	dir := filepath.Dir(filepath.Dir(filepath.Dir(d.Path(n))))
	keys := d.Keys()
	d.Close()
	d2 := openEncrypted(t, dir, keys)
	if info, err := d2.Stat(n); err != nil || info.Sum != chunkserver.Sum(data) {
		t.Errorf("Stat after reopen = %+v, %v; want sum %016x", info, err, chunkserver.Sum(data))
	}
	p := make([]byte, 100)
	if _, err := d2.ReadAt(n, p, 3*store.BlockSize-50); err != nil || !bytes.Equal(p, data[3*store.BlockSize-50:3*store.BlockSize+50]) {
		t.Errorf("ReadAt across a block boundary after reopen: %v", err)
	}
}

func TestEncryptedTamperingDetected(t *testing.T) {
	dir := t.TempDir()
	keys := newKeys(t, "k1")
	d := openEncrypted(t, dir, keys)
	data := pattern(3 * store.BlockSize)
	names := []string{"0000000000000002.0", "0000000000000002.1", "0000000000000002.2", "0000000000000002.3"}
	for _, n := range names {
		if _, err := d.Put(n, data); err != nil {
			t.Fatal(err)
		}
	}
	off, err := store.ShardDataOffset(d.Path(names[0]))
	if err != nil {
		t.Fatal(err)
	}
	// A flipped bit of ciphertext in block 1.
	if err := flipByte(d.Path(names[0]), off+store.BlockSize+100); err != nil {
		t.Fatal(err)
	}
	// A flipped bit of block 2's tag.
	if err := flipByte(d.Path(names[1]), off+int64(len(data))+2*16+3); err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 10)
	if _, err := d.ReadAt(names[0], p, store.BlockSize+95); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("ReadAt of tampered ciphertext = %v, want ErrCorrupt", err)
	}
	if _, err := d.ReadAt(names[0], p, 0); err != nil {
		t.Errorf("ReadAt of an intact block of the same shard: %v", err)
	}
	if _, err := d.ReadAt(names[1], p, 2*store.BlockSize); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("ReadAt of a block whose tag was changed = %v, want ErrCorrupt", err)
	}
	// A file copied over another shard's name is refused: the name is
	// bound into every block.
	b, err := os.ReadFile(d.Path(names[3]))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.Path(names[2]), b, 0o644); err != nil {
		t.Fatal(err)
	}
	d.Close()
	d2 := openEncrypted(t, dir, keys)
	if _, err := d2.ReadAt(names[2], p, 0); !errors.Is(err, store.ErrCorrupt) {
		t.Errorf("ReadAt of another shard's file under this name = %v, want ErrCorrupt", err)
	}
	if _, err := d2.ReadAt(names[3], p, 0); err != nil {
		t.Errorf("ReadAt of the original: %v", err)
	}
}

func TestEncryptionRefusesMixing(t *testing.T) {
	data := pattern(5000)
	wantErr := func(t *testing.T, dir string, opts []store.DiskOption, want string) {
		t.Helper()
		d, err := store.OpenDisk(dir, 0, opts...)
		if err == nil {
			d.Close()
			t.Fatalf("OpenDisk succeeded, want an error containing %q", want)
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("OpenDisk: %v\nwant it to say %q", err, want)
		}
	}

	t.Run("encrypted without key", func(t *testing.T) {
		dir := t.TempDir()
		d := openEncrypted(t, dir, newKeys(t, "k1"))
		d.Close()
		wantErr(t, dir, nil, "encrypted (keys k1): give its key file")
	})
	t.Run("encrypted shards without marker", func(t *testing.T) {
		dir := t.TempDir()
		d := openEncrypted(t, dir, newKeys(t, "k1"))
		if _, err := d.Put("0000000000000003.0", data); err != nil {
			t.Fatal(err)
		}
		d.Close()
		if err := os.Remove(filepath.Join(dir, "shards", "encryption.json")); err != nil {
			t.Fatal(err)
		}
		wantErr(t, dir, nil, "1 shards are encrypted")
	})
	t.Run("wrong key of the same ID", func(t *testing.T) {
		dir := t.TempDir()
		d := openEncrypted(t, dir, newKeys(t, "k1"))
		d.Close()
		wantErr(t, dir, []store.DiskOption{store.WithEncryption(newKeys(t, "k1"))}, `key "k1" in the key file is not the key`)
	})
	t.Run("wrong key file", func(t *testing.T) {
		dir := t.TempDir()
		d := openEncrypted(t, dir, newKeys(t, "k1"))
		d.Close()
		wantErr(t, dir, []store.DiskOption{store.WithEncryption(newKeys(t, "k2"))}, "wrong key file: the data directory was encrypted with keys k1, the key file holds k2")
	})
	t.Run("plaintext shards with a key", func(t *testing.T) {
		dir := t.TempDir()
		d := openDisk(t, dir, 0)
		if _, err := d.Put("0000000000000003.0", data); err != nil {
			t.Fatal(err)
		}
		d.Close()
		wantErr(t, dir, []store.DiskOption{store.WithEncryption(newKeys(t, "k1"))}, "holds 1 unencrypted shards")
	})
	t.Run("empty plaintext directory becomes encrypted", func(t *testing.T) {
		dir := t.TempDir()
		openDisk(t, dir, 0).Close()
		d := openEncrypted(t, dir, newKeys(t, "k1"))
		if !d.Encrypted() {
			t.Error("store opened with a key is not encrypted")
		}
	})
}

func TestEncryptionKeyRotation(t *testing.T) {
	dir := t.TempDir()
	old := newKeys(t, "old")
	d := openEncrypted(t, dir, old)
	a, b := pattern(3*store.BlockSize+1), pattern(1234)
	if _, err := d.Put("0000000000000004.0", a); err != nil {
		t.Fatal(err)
	}
	d.Close()

	// A new primary key: new shards use it, old ones stay readable.
	newKey, err := store.GenerateKey("new")
	if err != nil {
		t.Fatal(err)
	}
	rotated, err := old.AddPrimary(newKey)
	if err != nil {
		t.Fatal(err)
	}
	d = openEncrypted(t, dir, rotated)
	if _, err := d.Put("0000000000000004.1", b); err != nil {
		t.Fatal(err)
	}
	for n, want := range map[string][]byte{"0000000000000004.0": a, "0000000000000004.1": b} {
		p := make([]byte, len(want))
		if _, err := d.ReadAt(n, p, 0); err != nil || !bytes.Equal(p, want) {
			t.Errorf("ReadAt(%s) after rotation: %v", n, err)
		}
	}
	if ids := markerKeys(t, dir); ids != "new,old" {
		t.Errorf("marker lists keys %s, want new,old", ids)
	}
	d.Close()

	// The old key cannot go while a shard uses it...
	onlyNew, err := store.NewKeys(newKey)
	if err != nil {
		t.Fatal(err)
	}
	if d, err := store.OpenDisk(dir, 0, store.WithEncryption(onlyNew)); err == nil {
		d.Close()
		t.Fatal("OpenDisk without the key of a stored shard succeeded")
	} else if !strings.Contains(err.Error(), `encrypted with key "old"`) {
		t.Errorf("OpenDisk without the old key: %v", err)
	}
	// ...and can once the shard has been rewritten under the new one.
	d = openEncrypted(t, dir, rotated)
	if _, err := d.Put("0000000000000004.0", a); err != nil {
		t.Fatal(err)
	}
	d.Close()
	d = openEncrypted(t, dir, onlyNew)
	if ids := markerKeys(t, dir); ids != "new" {
		t.Errorf("marker lists keys %s after the old key retired, want new", ids)
	}
	p := make([]byte, len(a))
	if _, err := d.ReadAt("0000000000000004.0", p, 0); err != nil || !bytes.Equal(p, a) {
		t.Errorf("ReadAt of the rewritten shard: %v", err)
	}
}

func markerKeys(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "shards", "encryption.json"))
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, line := range strings.Split(string(b), "\n") {
		if _, v, ok := strings.Cut(line, `"id": "`); ok {
			ids = append(ids, strings.TrimSuffix(strings.TrimSpace(v), `",`))
		}
	}
	return strings.Join(ids, ",")
}

func TestEncryptedShardNotHandedOut(t *testing.T) {
	d := openEncrypted(t, t.TempDir(), newKeys(t, "k1"))
	if _, err := d.Put("0000000000000005.0", pattern(100)); err != nil {
		t.Fatal(err)
	}
	if f, _, err := d.OpenShard("0000000000000005.0"); !errors.Is(err, store.ErrEncrypted) {
		if f != nil {
			f.Close()
		}
		t.Errorf("OpenShard of an encrypted shard = %v, want ErrEncrypted", err)
	}
}

func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "keys")
	keys := newKeys(t, "b", "a")
	if err := store.WriteKeyFile(path, keys); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %04o, want 0600", fi.Mode().Perm())
	}
	got, err := store.LoadKeys(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got.IDs(), ",") != "b,a" || got.Primary().Fingerprint() != keys.Primary().Fingerprint() {
		t.Errorf("loaded keys %v, primary %x; want b,a with primary %x", got.IDs(), got.Primary().Fingerprint(), keys.Primary().Fingerprint())
	}
	if err := os.Chmod(path, 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := store.LoadKeys(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("LoadKeys of a group-readable file: %v, want a refusal", err)
	}
	hexKey := strings.Repeat("ab", 32)
	for _, tc := range []struct{ in, want string }{
		{"", "no keys"},
		{"# only a comment\n", "no keys"},
		{"k1\n", `want "ID HEXKEY"`},
		{"k1 abcd\n", "want 64 hex digits"},
		{"k1 " + hexKey + "\nk1 " + strings.Repeat("cd", 32) + "\n", "appears twice"},
		{"k1 " + hexKey + "\nk2 " + hexKey + "\n", "repeats the key"},
		{"k/1 " + hexKey + "\n", "only letters"},
		{"k1 " + strings.Repeat("00", 32) + "\n", "all zeros"},
	} {
		if _, err := store.ParseKeys([]byte(tc.in)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseKeys(%q) = %v, want an error saying %q", tc.in, err, tc.want)
		}
	}
}
