package fuse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPageCacheKeptForUnchangedFile: a file read once through the mount is
// read again from the kernel's page cache, with no READ reaching the mount,
// as long as its content is unchanged: across opens, and across a failure of
// the change feed, which makes the kernel forget names and attributes but
// need not cost the pages. Once another host rewrites the file, the next
// open reads the new bytes through the mount.
func TestPageCacheKeptForUnchangedFile(t *testing.T) {
	c := newCluster(t)
	a, _ := c.mount(t, Options{})
	b, srvB, cacheB, feed := c.mountBreakable(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	v1 := randomBytes(t, 3<<20)
	if err := os.WriteFile(filepath.Join(a, "f"), v1, 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(b, "f")
	if got := readFile(t, path); !bytes.Equal(got, v1) {
		t.Fatal("first read through B differs")
	}
	first := srvB.Stats()
	if first.ReadBytes < int64(len(v1)) {
		t.Fatalf("the first read served %d bytes through the mount, file has %d", first.ReadBytes, len(v1))
	}
	reread := func(what string) {
		t.Helper()
		before := srvB.Stats()
		for range 3 {
			if got := readFile(t, path); !bytes.Equal(got, v1) {
				t.Fatalf("%s: read differs", what)
			}
		}
		if after := srvB.Stats(); after.ReadRequests != before.ReadRequests {
			t.Fatalf("%s: %d READ requests (%d bytes) reached the mount for an unchanged file; the page cache was not kept",
				what, after.ReadRequests-before.ReadRequests, after.ReadBytes-before.ReadBytes)
		}
	}
	reread("reopened")

	// The feed fails: the kernel is told to forget what it kept, which
	// need not include the pages of a file whose name the metaserver
	// confirms, neither while the feed is down nor after it recovered.
	breakFeed := func() {
		t.Helper()
		feed.broken.Store(true)
		waitFor(t, 5*time.Second, "B's cache to stop following", func() bool { return !cacheB.Stats().Live })
	}
	mendFeed := func() {
		t.Helper()
		feed.broken.Store(false)
		if err := cacheB.WaitLive(ctx); err != nil {
			t.Fatal(err)
		}
	}
	breakFeed()
	reread("while the feed is down")
	mendFeed()
	reread("after the feed recovered")

	// A name kept across a drop is still checked: A's rename while B's feed
	// is down reaches B's kernel within about a second.
	breakFeed()
	if err := os.Rename(filepath.Join(a, "f"), filepath.Join(a, "g")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "B to see the rename made while its feed was down", func() bool {
		_, err := os.Stat(path)
		return errors.Is(err, fs.ErrNotExist)
	})
	mendFeed()
	path = filepath.Join(b, "g")
	if got := readFile(t, path); !bytes.Equal(got, v1) {
		t.Fatal("B reads the renamed file wrong")
	}

	// Same size, new content: only the content generation changed.
	v2 := randomBytes(t, len(v1))
	overwrite(t, filepath.Join(a, "g"), v2)
	before := srvB.Stats()
	waitFor(t, 5*time.Second, "B to read A's new bytes", func() bool { return bytes.Equal(readFile(t, path), v2) })
	if after := srvB.Stats(); after.ReadBytes-before.ReadBytes < int64(len(v2)) {
		t.Fatalf("after A rewrote the file B served only %d bytes through the mount", after.ReadBytes-before.ReadBytes)
	}
}

// bdiReadAhead returns the mount's device read-ahead in KiB.
func bdiReadAhead(t *testing.T, dir string) int {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	major, minor := (st.Dev>>8)&0xfff|(st.Dev>>32)&^0xfff, st.Dev&0xff|(st.Dev>>12)&^0xff
	b, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", major, minor))
	if err != nil {
		t.Fatal(err)
	}
	kb, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return kb
}

// TestKernelReadAhead: the mount sets the kernel's read-ahead for its device,
// by default several 1 MiB requests deep.
func TestKernelReadAhead(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("setting a device's read_ahead_kb needs root")
	}
	c := newCluster(t)
	def, _ := c.mount(t, Options{})
	if got := bdiReadAhead(t, def); got != DefaultKernelReadAhead>>10 {
		t.Errorf("default mount: read_ahead_kb %d, want %d", got, DefaultKernelReadAhead>>10)
	}
	two, _ := c.mount(t, Options{KernelReadAhead: 2 << 20})
	if got := bdiReadAhead(t, two); got != 2048 {
		t.Errorf("KernelReadAhead 2 MiB: read_ahead_kb %d, want 2048", got)
	}
}
