package e2e

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestEncryptedServe runs `dockyard serve --encryption-key-file` as an admin
// would: a file written with `dockyard cp` and one written through a FUSE
// mount read back whole, while no file under the data directory holds a
// byte pattern of either. Restarted without the key, serve refuses to start
// and says why; with it, every byte is back.
func TestEncryptedServe(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "shards.key")
	Run(t, 30*time.Second, Binary(t), "chunkserver", "keygen", key)
	c, err := StartServe(dir, "--volume-socket", "", "--encryption-key-file", key)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Stop() }()

	// A recognisable line repeated (so a shard of any size holds some of
	// it), behind random bytes that keep it from being stored inline.
	marker := fmt.Sprintf("dockyard-at-rest-%d|", time.Now().UnixNano())
	want := make([]byte, 3<<20)
	rand.Read(want[:1<<20])
	for i := 1 << 20; i < len(want); i += len(marker) {
		copy(want[i:], marker)
	}
	src := filepath.Join(dir, "plain.bin")
	if err := os.WriteFile(src, want, 0o644); err != nil {
		t.Fatal(err)
	}
	Run(t, time.Minute, Binary(t), "cp", "--meta", c.Meta, src, "dfs:/plain.bin")

	var viaMount []byte
	if os.Geteuid() == 0 {
		needFUSE(t)
		mnt := filepath.Join(dir, "mnt")
		if err := os.Mkdir(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		m := startMount(t, c.Meta, mnt)
		viaMount = bytes.Repeat([]byte(strings.ToUpper(marker)), (2<<20)/len(marker))
		if err := os.WriteFile(filepath.Join(mnt, "mounted.bin"), viaMount, 0o644); err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(mnt, "plain.bin"))
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("reading the cp'd file through the mount: %d bytes, equal %v, %v", len(got), bytes.Equal(got, want), err)
		}
		m.cmd.Process.Signal(syscall.SIGTERM)
		if err := m.wait(t); err != nil {
			t.Fatalf("dockyard mount: %v\n%s", err, m.stderr)
		}
	}

	// Nothing under the data directory (shards, metaserver, logs) holds
	// either pattern.
	data := filepath.Join(dir, "data")
	shardFiles := 0
	err = filepath.WalkDir(data, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if strings.Contains(p, string(filepath.Separator)+"shards"+string(filepath.Separator)) {
			shardFiles++
		}
		for _, pat := range []string{marker, strings.ToUpper(marker)} {
			if bytes.Contains(b, []byte(pat)) {
				t.Errorf("%s holds the plaintext %q", p, pat)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if shardFiles == 0 {
		t.Fatalf("no shard files under %s: the check above looked at nothing", data)
	}

	// Without the key the directory is refused, with a reason.
	c.Stop()
	if keyless, err := StartServe(dir, "--volume-socket", ""); err == nil {
		keyless.Stop()
		t.Fatal("serve started on an encrypted directory without its key")
	} else if !strings.Contains(err.Error(), "--encryption-key-file") {
		t.Fatalf("serve without the key failed without naming the flag: %v", err)
	}

	// With the key again, every byte reads back.
	c, err = StartServe(dir, "--volume-socket", "", "--encryption-key-file", key)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "back.bin")
	Run(t, time.Minute, Binary(t), "cp", "--meta", c.Meta, "dfs:/plain.bin", out)
	if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after a restart with the key: %d bytes, equal %v, %v", len(got), bytes.Equal(got, want), err)
	}
	if viaMount != nil {
		Run(t, time.Minute, Binary(t), "cp", "--meta", c.Meta, "dfs:/mounted.bin", out)
		if got, err := os.ReadFile(out); err != nil || !bytes.Equal(got, viaMount) {
			t.Fatalf("the file written through the mount, after a restart: %d bytes, %v", len(got), err)
		}
	}
}
