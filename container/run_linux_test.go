package container

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// busyboxRoot builds a minimal rootfs from the host's static busybox.
func busyboxRoot(t *testing.T) string {
	t.Helper()
	bb, err := exec.LookPath("busybox")
	if err != nil {
		missing(t, "busybox (busybox-static) is not installed")
	}
	root := t.TempDir()
	for _, d := range []string{"bin", "etc", "tmp", "proc", "sys", "dev"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	data, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin/busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sh", "echo", "cat", "true", "false", "id", "touch"} {
		if err := os.Symlink("busybox", filepath.Join(root, "bin", name)); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
	writeFile(t, filepath.Join(root, "etc/group"), "root:x:0:\nnogroup:x:65534:\n")
	return root
}

func missing(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf(format+" (CI installs it)", args...)
	}
	t.Skipf(format, args...)
}

func requireRunc(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("running containers needs root")
	}
	if _, err := exec.LookPath("runc"); err != nil {
		missing(t, "runc is not installed")
	}
}

func TestRunOutputExitCodeAndCleanup(t *testing.T) {
	requireRunc(t)
	lower := busyboxRoot(t)
	state := t.TempDir()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := Run(ctx, RunOptions{
		Lower: lower, StateDir: state, ID: "t1",
		Image:  ocispec.ImageConfig{Cmd: []string{"sh", "-c", "echo hello from $NAME; id -u; touch /written && exit 7"}, Env: []string{"NAME=busybox"}},
		Stdout: &out, Stderr: &out,
	})
	var ee *ExitError
	if !errors.As(err, &ee) || ee.Code != 7 {
		t.Fatalf("err = %v, want exit status 7; output:\n%s", err, out.String())
	}
	if got := out.String(); !strings.Contains(got, "hello from busybox\n0\n") {
		t.Fatalf("output = %q", got)
	}
	// Writes went to the discarded upper dir, never to the image tree.
	if _, err := os.Stat(filepath.Join(lower, "written")); !os.IsNotExist(err) {
		t.Fatalf("the container wrote into the lower dir: %v", err)
	}
	entries, err := os.ReadDir(state)
	if err != nil || len(entries) != 0 {
		t.Fatalf("state dir not cleaned up: %v %v", entries, err)
	}
}

func TestRunAsImageUser(t *testing.T) {
	requireRunc(t)
	var out bytes.Buffer
	err := Run(context.Background(), RunOptions{Lower: busyboxRoot(t), StateDir: t.TempDir(), ID: "user",
		Image: ocispec.ImageConfig{Cmd: []string{"sh", "-c", "id -u; id -g"}, User: "nobody"}, Stdout: &out, Stderr: &out})
	if err != nil || out.String() != "65534\n65534\n" {
		t.Fatalf("err = %v, output %q; want nobody's ids", err, out.String())
	}
}

func TestRunSuccessAndMissingCommand(t *testing.T) {
	requireRunc(t)
	lower := busyboxRoot(t)
	ctx := context.Background()
	if err := Run(ctx, RunOptions{Lower: lower, StateDir: t.TempDir(), ID: "ok", Image: ocispec.ImageConfig{Cmd: []string{"true"}}}); err != nil {
		t.Fatalf("true: %v", err)
	}
	var out bytes.Buffer
	err := Run(ctx, RunOptions{Lower: lower, StateDir: t.TempDir(), ID: "nf", Image: ocispec.ImageConfig{Cmd: []string{"/no/such/binary"}}, Stdout: &out, Stderr: &out})
	if err == nil {
		t.Fatal("running a missing binary succeeded")
	}
	if err := Run(ctx, RunOptions{Lower: filepath.Join(lower, "nope"), StateDir: t.TempDir(), ID: "x", Image: ocispec.ImageConfig{Cmd: []string{"true"}}}); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Fatalf("missing lower dir: err = %v", err)
	}
}
