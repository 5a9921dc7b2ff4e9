package fuse

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// nobody is the unprivileged user the permission tests act as.
const nobody = 65534

// asNobody runs a shell command as uid/gid 65534 and returns its combined
// output and whether it succeeded.
func asNobody(t *testing.T, dir, script string) (string, bool) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody, Groups: []uint32{}}}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running %q: %v", script, err)
	}
	return strings.TrimSpace(out.String()), err == nil
}

// TestPermissions: a non-root user is held to mode, owner, sticky and
// setgid rules, as on a local file system.
func TestPermissions(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as another user")
	}
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh to run commands as another user")
	}
	c := newCluster(t)
	mnt, _ := c.mount(t, Options{AllowOther: true})
	// The test's temporary directory is private to root; nobody must be
	// able to reach the mount point.
	for d := mnt; d != "/" && d != "."; d = filepath.Dir(d) {
		if strings.HasPrefix(d, os.TempDir()) && d != os.TempDir() {
			os.Chmod(d, 0o755)
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.Chmod(mnt, 0o755))
	must(os.Mkdir(filepath.Join(mnt, "pub"), 0o777))
	must(os.Chmod(filepath.Join(mnt, "pub"), 0o777))
	must(os.Mkdir(filepath.Join(mnt, "priv"), 0o700))
	must(os.WriteFile(filepath.Join(mnt, "secret"), []byte("s"), 0o600))
	must(os.WriteFile(filepath.Join(mnt, "shared"), []byte("r"), 0o644))
	must(os.Mkdir(filepath.Join(mnt, "tmp"), 0o777))
	must(os.Chmod(filepath.Join(mnt, "tmp"), 0o777|os.ModeSticky))
	must(os.WriteFile(filepath.Join(mnt, "tmp/roots"), nil, 0o666))

	for _, tc := range []struct {
		what   string
		script string
		ok     bool
	}{
		{"create in a 0755 root-owned directory", "touch new", false},
		{"create in a 0777 directory", "touch pub/mine && test -O pub/mine", true},
		{"enter a 0700 directory", "ls priv", false},
		{"read a 0600 file", "cat secret", false},
		{"read a 0644 file", "cat shared", true},
		{"write a 0644 file of root", "echo x >> shared", false},
		{"chmod a file of root", "chmod 666 shared", false},
		{"chown a file to oneself", "chown 65534 pub/mine", true},
		{"chown a file to root", "chown 0 pub/mine", false},
		{"remove another user's file in a sticky directory", "rm -f tmp/roots", false},
		{"remove one's own file in a sticky directory", "touch tmp/own && rm tmp/own", true},
		{"rename another user's file in a sticky directory", "mv tmp/roots tmp/r2", false},
		{"set times of a file of root", "touch -d 2020-01-01 shared", false},
	} {
		out, ok := asNobody(t, mnt, tc.script)
		if ok != tc.ok {
			t.Errorf("%s (%q): succeeded=%v, want %v; output %q", tc.what, tc.script, ok, tc.ok, out)
		}
	}

	// setgid directories pass their group on to files and directories, and
	// the setgid bit to directories.
	sg := filepath.Join(mnt, "sg")
	must(os.Mkdir(sg, 0o775))
	must(os.Chown(sg, 0, 1234))
	must(os.Chmod(sg, 0o775|os.ModeSetgid))
	must(os.WriteFile(filepath.Join(sg, "f"), nil, 0o644))
	must(os.Mkdir(filepath.Join(sg, "d"), 0o755))
	var st syscall.Stat_t
	must(syscall.Stat(filepath.Join(sg, "f"), &st))
	if st.Gid != 1234 {
		t.Errorf("file in a setgid directory has gid %d, want 1234", st.Gid)
	}
	must(syscall.Stat(filepath.Join(sg, "d"), &st))
	if st.Gid != 1234 || st.Mode&syscall.S_ISGID == 0 {
		t.Errorf("directory in a setgid directory: gid %d mode %o, want gid 1234 and setgid", st.Gid, st.Mode)
	}
}
