package e2e

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mountProc is a running `dockyard mount`.
type mountProc struct {
	dir    string
	cmd    *exec.Cmd
	stderr *bytes.Buffer
	exited chan struct{}
	err    error
}

// isMounted reports whether dir is a Dockyard FUSE mount right now.
func isMounted(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && fields[4] == dir && strings.Contains(sc.Text(), " - fuse.dockyard ") {
			return true
		}
	}
	return false
}

func needFUSE(t *testing.T) {
	t.Helper()
	f, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		Missing(t, "FUSE is not available: %v", err)
	}
	f.Close()
}

// startMount runs `dockyard mount --meta META [FLAGS] DIR` and waits until
// the mount is up. The mount is taken down when the test ends, whatever
// happens.
func startMount(t *testing.T, meta, dir string, flags ...string) *mountProc {
	t.Helper()
	m := &mountProc{dir: dir, stderr: &bytes.Buffer{}, exited: make(chan struct{})}
	args := append([]string{"mount", "--meta", meta}, flags...)
	m.cmd = exec.Command(Binary(t), append(args, dir)...)
	m.cmd.Stdout, m.cmd.Stderr = m.stderr, m.stderr
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.err = m.cmd.Wait(); close(m.exited) }()
	t.Cleanup(func() {
		select {
		case <-m.exited:
		default:
			m.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-m.exited:
			case <-time.After(20 * time.Second):
				m.cmd.Process.Kill()
				<-m.exited
			}
		}
		if isMounted(t, dir) {
			// The server is gone; only the kernel's mount is left.
			exec.Command("umount", "-l", dir).Run()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for !isMounted(t, dir) {
		select {
		case <-m.exited:
			t.Fatalf("dockyard mount exited: %v\n%s", m.err, m.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockyard mount did not mount %s within 30s\n%s", dir, m.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return m
}

// wait waits for the mount process to exit and returns its error.
func (m *mountProc) wait(t *testing.T) error {
	t.Helper()
	select {
	case <-m.exited:
		return m.err
	case <-time.After(30 * time.Second):
		t.Fatalf("dockyard mount still running 30s after it was asked to stop\n%s", m.stderr)
		return nil
	}
}

// oneLineFailure checks a command failed with exactly one line on stderr
// containing want.
func oneLineFailure(t *testing.T, what, out string, err error, want string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s succeeded, want a failure; output %q", what, out)
		return
	}
	out = strings.TrimSpace(out)
	if strings.Count(out, "\n") != 0 || !strings.Contains(out, want) {
		t.Errorf("%s: got %q, want one line containing %q", what, out, want)
	}
}

// TestMountCommand drives `dockyard mount` and `dockyard umount` against
// `dockyard serve`: data written through one mount is read through another,
// the user's mistakes fail with one clear line, and both ways of stopping a
// mount (umount, SIGTERM) leave nothing mounted.
func TestMountCommand(t *testing.T) {
	needFUSE(t)
	c := SharedCluster(t)
	bin := Binary(t)
	a, b := t.TempDir(), t.TempDir()
	ma := startMount(t, c.Meta, a)
	mb := startMount(t, c.Meta, b)

	want := bytes.Repeat([]byte("dockyard mount "), 100000)
	if err := os.MkdirAll(filepath.Join(a, "e2e-mount"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(a, "e2e-mount/f"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(b, "e2e-mount/f"))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read through the second mount: %d bytes, %v", len(got), err)
	}

	out, err := RunErr(30*time.Second, bin, "mount", "--meta", c.Meta, a)
	oneLineFailure(t, "mount on a mounted directory", out, err, "already a mount point")
	out, err = RunErr(30*time.Second, bin, "mount", "--meta", c.Meta, filepath.Join(a+"-missing"))
	oneLineFailure(t, "mount on a missing directory", out, err, "no such file or directory")
	out, err = RunErr(30*time.Second, bin, "umount", t.TempDir())
	oneLineFailure(t, "umount of a plain directory", out, err, "not a dockyard mount")

	f, err := os.Open(filepath.Join(a, "e2e-mount/f"))
	if err != nil {
		t.Fatal(err)
	}
	out, err = RunErr(30*time.Second, bin, "umount", a)
	oneLineFailure(t, "umount with a file open", out, err, "busy")
	f.Close()
	Run(t, 30*time.Second, bin, "umount", a)
	if err := ma.wait(t); err != nil {
		t.Errorf("dockyard mount after umount: %v\n%s", err, ma.stderr)
	}
	if isMounted(t, a) {
		t.Errorf("%s still mounted after dockyard umount", a)
	}

	mb.cmd.Process.Signal(syscall.SIGTERM)
	if err := mb.wait(t); err != nil {
		t.Errorf("dockyard mount after SIGTERM: %v\n%s", err, mb.stderr)
	}
	if isMounted(t, b) {
		t.Errorf("%s still mounted after SIGTERM", b)
	}
}

// TestMountSIGTERMWhileBusy: SIGTERM with a file still open detaches the
// mount at once, keeps serving the open file and exits when it is closed.
func TestMountSIGTERMWhileBusy(t *testing.T) {
	needFUSE(t)
	c := SharedCluster(t)
	dir := t.TempDir()
	m := startMount(t, c.Meta, dir)
	want := []byte("still readable after the mount is detached")
	if err := os.WriteFile(filepath.Join(dir, "e2e-busy"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "e2e-busy"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m.cmd.Process.Signal(syscall.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for isMounted(t, dir) {
		if time.Now().After(deadline) {
			t.Fatalf("still mounted 30s after SIGTERM\n%s", m.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := make([]byte, len(want))
	if _, err := f.ReadAt(got, 0); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("reading the open file after the detach: %q, %v", got, err)
	}
	select {
	case <-m.exited:
		t.Fatalf("dockyard mount exited while a file was open: %v\n%s", m.err, m.stderr)
	default:
	}
	f.Close()
	if err := m.wait(t); err != nil {
		t.Errorf("dockyard mount exit: %v\n%s", err, m.stderr)
	}
}
