package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// RunOptions describe one container run.
type RunOptions struct {
	// Lower is the read-only image tree (a lazy Dockyard mount, or any
	// directory); the container writes to an overlay upper dir on local disk.
	Lower string
	// StateDir holds the bundle, the overlay's upper and work dirs and the
	// runtime's state; it is created and removed by Run.
	StateDir string
	// ID names the container for the runtime; unique per StateDir.
	ID     string
	Image  ocispec.ImageConfig
	Spec   SpecOptions
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Runtime is the OCI runtime binary, "runc" by default.
	Runtime string
	// Keep leaves StateDir in place (for debugging); the overlay is unmounted
	// either way.
	Keep bool
}

// ExitError reports a container process that exited non-zero (or was killed:
// Code is then 128+signal, as a shell reports it).
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("container exited with status %d", e.Code) }

// Run mounts an overlay over o.Lower, writes an OCI bundle and runs it to
// completion with the runtime. It returns nil when the process exits 0, an
// *ExitError with its status otherwise, or another error when the container
// could not be started. Everything it set up is torn down before it returns.
func Run(ctx context.Context, o RunOptions) (err error) {
	if o.Runtime == "" {
		o.Runtime = "runc"
	}
	if o.ID == "" {
		return errors.New("container: empty ID")
	}
	runtime, err := exec.LookPath(o.Runtime)
	if err != nil {
		return fmt.Errorf("container runtime %q not found: %w", o.Runtime, err)
	}
	if fi, err := os.Stat(o.Lower); err != nil || !fi.IsDir() {
		return fmt.Errorf("image tree %s is not a directory: %v", o.Lower, err)
	}
	bundle, err := filepath.Abs(filepath.Join(o.StateDir, o.ID))
	if err != nil {
		return err
	}
	rootfs := filepath.Join(bundle, "rootfs")
	upper := filepath.Join(bundle, "upper")
	work := filepath.Join(bundle, "work")
	runtimeRoot := filepath.Join(bundle, "runtime")
	for _, d := range []string{rootfs, upper, work, runtimeRoot} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("creating bundle: %w", err)
		}
	}
	defer func() {
		if !o.Keep {
			if rerr := os.RemoveAll(bundle); rerr != nil && err == nil {
				err = fmt.Errorf("removing bundle: %w", rerr)
			}
		}
	}()

	// The image tree is read-only and lazily fetched; the overlay keeps every
	// write on local disk and is discarded with the bundle.
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", escapeOverlay(o.Lower), escapeOverlay(upper), escapeOverlay(work))
	if err := syscall.Mount("overlay", rootfs, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mounting overlay over %s: %w", o.Lower, err)
	}
	defer func() {
		if uerr := unmount(rootfs); uerr != nil && err == nil {
			err = uerr
		}
	}()

	spec, err := Spec(o.Image, rootfs, o.Spec)
	if err != nil {
		return err
	}
	cfg, err := json.MarshalIndent(spec, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(bundle, "config.json"), cfg, 0o600); err != nil {
		return err
	}

	cmd := exec.Command(runtime, "--root", runtimeRoot, "run", "--bundle", bundle, o.ID)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = o.Stdin, o.Stdout, o.Stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", o.Runtime, err)
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	var runErr error
	select {
	case runErr = <-waited:
	case <-ctx.Done():
		// runc run relays signals to the container's init process.
		cmd.Process.Signal(syscall.SIGTERM)
		runErr = <-waited
	}
	// runc removes a container it ran to completion; delete is for the case
	// where it was itself killed midway.
	exec.Command(runtime, "--root", runtimeRoot, "delete", "--force", o.ID).Run()

	if runErr == nil {
		return ctx.Err()
	}
	var ee *exec.ExitError
	if errors.As(runErr, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return &ExitError{Code: 128 + int(ws.Signal())}
		}
		return &ExitError{Code: ee.ExitCode()}
	}
	return fmt.Errorf("running %s: %w", o.Runtime, runErr)
}

// escapeOverlay escapes the characters overlayfs treats as separators in
// its option string.
func escapeOverlay(p string) string {
	return strings.NewReplacer(`\`, `\\`, `,`, `\,`, `:`, `\:`).Replace(p)
}

// unmount detaches a mount point, lazily when something still holds it busy
// (the runtime may linger for a moment after the process exits).
func unmount(dir string) error {
	err := syscall.Unmount(dir, 0)
	if errors.Is(err, syscall.EBUSY) {
		err = syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	if err != nil && !errors.Is(err, syscall.EINVAL) {
		return fmt.Errorf("unmounting %s: %w", dir, err)
	}
	return nil
}
