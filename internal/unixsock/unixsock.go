// Package unixsock binds the owner-only Unix sockets Dockyard serves to other
// processes of this host: a chunkserver's short-circuit socket and the Docker
// volume plugin's.
package unixsock

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"time"
)

// MaxPath is the longest path a Unix socket can be bound to (sun_path is 108
// bytes with its terminating NUL).
const MaxPath = 107

// Listen binds a socket at path with mode 0600. A socket left there by a
// process that died without closing it is replaced; anything else at path,
// or a socket on which something still answers, is refused, the error naming
// who would be answering. Until the chmod the socket has the umask's mode, so
// a server that must admit only its own user also checks each peer.
func Listen(path, who string) (*net.UnixListener, error) {
	if len(path) > MaxPath {
		return nil, fmt.Errorf("socket path %s is longer than %d bytes", path, MaxPath)
	}
	if err := removeStale(path, who); err != nil {
		return nil, err
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, 0o600); err != nil {
		_ = ln.Close()
		return nil, err
	}
	return ln, nil
}

// removeStale removes a socket left by a process that died without closing
// it, and refuses to touch anything else at path.
func removeStale(path, who string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket", path)
	}
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		_ = c.Close()
		return fmt.Errorf("another %s answers on %s", who, path)
	}
	return os.Remove(path)
}
