package fuse

import (
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// skipPosix lists the posixtest cases that cannot pass on any file system,
// with the reason.
var skipPosix = map[string]string{
	// It expects a second descriptor of the same process to conflict with
	// the first one's POSIX lock; POSIX locks belong to the process, so ext4
	// fails it too (go-fuse skips it in its own run for the same reason).
	"FcntlFlockLocksFile": "POSIX locks are per process; the test expects them per descriptor",
}

// TestPosix runs go-fuse's POSIX conformance suite against a real mount over
// an in-process cluster.
func TestPosix(t *testing.T) {
	c := newCluster(t)
	mnt, _ := c.mount(t, Options{})
	runPosix(t, mnt, nil)
}

// skipPosixPassthrough lists the cases that cannot pass with passthrough
// on, with the reason.
var skipPosixPassthrough = map[string]string{}

// TestPosixPassthrough runs the suite with passthrough on and every file,
// however small, copied once read whole: readers opened after that are
// passthrough ones, beside which writers wait and may get ETXTBSY.
func TestPosixPassthrough(t *testing.T) {
	c := newCluster(t)
	opt := ptOptions(t, 0)
	opt.FileCacheMinSize = 1
	mnt, srv := c.mount(t, opt)
	if srv.root.(*node).m.files.Load() == nil {
		t.Skip("the kernel refuses FUSE passthrough here (needs Linux 6.9+ and root)")
	}
	runPosix(t, mnt, skipPosixPassthrough)
	st := srv.Stats()
	t.Logf("%d copies made, %d passthrough opens", st.FileCopies, st.PassthroughOpens)
}

func runPosix(t *testing.T, mnt string, skip map[string]string) {
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fn := posixtest.All[name]
		t.Run(name, func(t *testing.T) {
			if why, ok := skipPosix[name]; ok {
				t.Skip(why)
			}
			if why, ok := skip[name]; ok {
				t.Skip(why)
			}
			dir := filepath.Join(mnt, name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatalf("Mkdir: %v", err)
			}
			fn(t, dir)
			if err := os.RemoveAll(dir); err != nil {
				t.Errorf("RemoveAll: %v", err)
			}
		})
	}
}
