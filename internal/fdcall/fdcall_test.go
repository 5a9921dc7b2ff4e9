//go:build unix

package fdcall

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

func TestRetry(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	// Interrupted twice, then done: retried until it is.
	calls := 0
	err = Retry(f, "op", func(fd int) error {
		calls++
		if fd != int(f.Fd()) {
			t.Errorf("called with fd %d, want %d", fd, f.Fd())
		}
		if calls < 3 {
			return syscall.EINTR
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Fatalf("Retry = %v after %d calls, want nil after 3", err, calls)
	}

	// Any other error is returned once, naming the operation and file.
	calls = 0
	err = Retry(f, "fdatasync", func(int) error { calls++; return syscall.EIO })
	var pe *os.PathError
	if !errors.As(err, &pe) || pe.Op != "fdatasync" || pe.Path != f.Name() || !errors.Is(err, syscall.EIO) || calls != 1 {
		t.Fatalf("Retry = %v after %d calls, want a PathError fdatasync %s: EIO after 1", err, calls, f.Name())
	}

	// A closed file fails before the call.
	f.Close()
	if err := Retry(f, "op", func(int) error { t.Error("called on a closed file"); return nil }); err == nil {
		t.Fatal("Retry on a closed file succeeded")
	}
}
