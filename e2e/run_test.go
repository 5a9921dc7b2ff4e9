package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// busyboxLayer writes a gzip layer with a static busybox and a few applet
// links, the smallest image that runs a shell.
func busyboxLayer(t *testing.T) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		Missing(t, "busybox (busybox-static) is not installed")
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	add := func(h *tar.Header, body []byte) {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"bin/", "etc/", "tmp/", "proc/", "sys/", "dev/"} {
		add(&tar.Header{Name: d, Typeflag: tar.TypeDir, Mode: 0o755}, nil)
	}
	add(&tar.Header{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(data))}, data)
	for _, a := range []string{"sh", "echo", "cat", "ls", "pwd", "id", "true", "touch"} {
		add(&tar.Header{Name: "bin/" + a, Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777}, nil)
	}
	passwd := []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
	add(&tar.Header{Name: "etc/passwd", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(passwd))}, passwd)
	add(&tar.Header{Name: "etc/motd", Typeflag: tar.TypeReg, Mode: 0o644, Size: 12}, []byte("from layer!\n"))
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "busybox.tar.gz")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "dockyard run needs root (FUSE mount, overlay, runc)")
	}
}

// TestRunFromRegistry pushes an image with crane and runs it with dockyard
// run: the image's config (entrypoint, env, workdir) applies, a command given
// on the line replaces CMD, output and exit status pass through, writes stay
// in the container, and nothing is left mounted.
func TestRunFromRegistry(t *testing.T) {
	requireRoot(t)
	RequireTool(t, "crane")
	RequireTool(t, "runc")
	c := SharedCluster(t)
	layer := busyboxLayer(t)
	ref := c.Registry + "/e2e/run"
	Run(t, time.Minute, "crane", "append", "--insecure", "-f", layer, "-t", ref+":base")
	Run(t, time.Minute, "crane", "mutate", "--insecure", ref+":base", "-t", ref+":configured",
		"--entrypoint", "/bin/sh,-c", "--cmd", "echo $GREETING from $(pwd); cat /etc/motd", "-e", "GREETING=hello", "-w", "/tmp")

	bin := Binary(t)
	state := t.TempDir()
	out := Run(t, 2*time.Minute, bin, "run", "--meta", c.Meta, "--state-dir", state, ref+":configured")
	if !strings.Contains(out, "hello from /tmp\nfrom layer!\n") {
		t.Fatalf("image command output = %q", out)
	}

	// A command on the line replaces CMD (the entrypoint stays), and its exit
	// status is run's.
	out, err := RunErr(2*time.Minute, bin, "run", "--meta", c.Meta, "--state-dir", state, ref+":configured", "--",
		"touch /etc/new && cat /etc/motd && exit 42")
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 42 {
		t.Fatalf("exit status: err = %v, want 42; output:\n%s", err, out)
	}
	if !strings.Contains(out, "from layer!") {
		t.Fatalf("output = %q", out)
	}
	// The write went to the discarded overlay: a second run does not see it.
	out, err = RunErr(2*time.Minute, bin, "run", "--meta", c.Meta, "--state-dir", state, ref+":configured", "--", "test -e /etc/new")
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Fatalf("a file written by an earlier container is visible: err = %v, output %q", err, out)
	}

	entries, _ := os.ReadDir(state)
	if len(entries) != 0 {
		t.Fatalf("state dir not cleaned: %v", entries)
	}
	mounts, _ := os.ReadFile("/proc/mounts")
	if strings.Contains(string(mounts), state) {
		t.Fatalf("mounts left behind:\n%s", mounts)
	}

	// --keep leaves the bundle and the upper dir (what the container wrote)
	// for a look afterwards, and nothing mounted.
	out = Run(t, 2*time.Minute, bin, "run", "--keep", "--meta", c.Meta, "--state-dir", state, ref+":configured", "--",
		"echo kept > /etc/kept")
	upper, _ := filepath.Glob(filepath.Join(state, "*", "bundle", "*", "upper", "etc", "kept"))
	if len(upper) != 1 || !strings.Contains(out, "kept the container's bundle") {
		t.Fatalf("--keep: upper files %v, output %q", upper, out)
	}
	if b, err := os.ReadFile(upper[0]); err != nil || string(b) != "kept\n" {
		t.Fatalf("kept upper file: %q, %v", b, err)
	}
	if mounts, _ := os.ReadFile("/proc/mounts"); strings.Contains(string(mounts), state) {
		t.Fatalf("--keep left mounts behind:\n%s", mounts)
	}

	// Unknown images and tags fail with one clear line.
	out, err = RunErr(time.Minute, bin, "run", "--meta", c.Meta, "--state-dir", state, c.Registry+"/e2e/nope:1")
	if err == nil || !strings.Contains(out, "image not found") {
		t.Fatalf("unknown image: err = %v, output %q", err, out)
	}
}

// TestRunWithVolume: `dockyard run -v NAME:/path` mounts a Dockyard volume
// (created on first use) into the container; what one container writes there
// is in the file system and in the next container, and :ro refuses writes.
func TestRunWithVolume(t *testing.T) {
	requireRoot(t)
	RequireTool(t, "crane")
	RequireTool(t, "runc")
	needFUSE(t)
	c := SharedCluster(t)
	ref := c.Registry + "/e2e/run-volume:base"
	Run(t, time.Minute, "crane", "append", "--insecure", "-f", busyboxLayer(t), "-t", ref)
	bin := Binary(t)
	state := t.TempDir()
	vol := "runvol-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "greeting"), []byte("from the host\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	out := Run(t, 2*time.Minute, bin, "run", "--meta", c.Meta, "--state-dir", state, "-v", vol+":/data", "-v", hostDir+":/host:ro",
		ref, "--", "/bin/sh", "-c", "cat /host/greeting && echo kept > /data/f && mkdir /data/d")
	if !strings.Contains(out, "from the host") {
		t.Errorf("the host directory was not visible: %q", out)
	}
	if got := Run(t, time.Minute, bin, "cp", "--meta", c.Meta, "dfs:/volumes/"+vol+"/f", "-"); got != "kept\n" {
		t.Errorf("dfs:/volumes/%s/f holds %q", vol, got)
	}
	out, err := RunErr(2*time.Minute, bin, "run", "--meta", c.Meta, "--state-dir", state, "-v", vol+":/data:ro",
		ref, "--", "/bin/sh", "-c", "cat /data/f; echo more > /data/g")
	if err == nil || !strings.Contains(out, "kept") || !strings.Contains(out, "Read-only file system") {
		t.Errorf("second run, read-only: err %v, output %q", err, out)
	}
	if entries, _ := os.ReadDir(state); len(entries) != 0 {
		t.Errorf("state dir not cleaned: %v", entries)
	}
	if mounts, _ := os.ReadFile("/proc/mounts"); strings.Contains(string(mounts), state) {
		t.Errorf("mounts left behind:\n%s", mounts)
	}
	if out, err := RunErr(time.Minute, bin, "run", "--meta", c.Meta, "--state-dir", state, "-v", "../x:/data", ref, "--", "true"); err == nil || !strings.Contains(out, "invalid volume name") {
		t.Errorf("a bad volume name: err %v, output %q", err, out)
	}
	Run(t, time.Minute, bin, "rm", "-r", "--meta", c.Meta, "dfs:/volumes/"+vol)
}
