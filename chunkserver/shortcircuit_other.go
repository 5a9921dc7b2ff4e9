//go:build !unix

package chunkserver

import (
	"errors"
	"net"
	"os"
)

// Without descriptor passing there are no short-circuit reads: the socket
// path fails at once and every read goes over HTTP.
var errNoShortCircuit = errors.New("short-circuit reads need a Unix system")

// WriteShortCircuitFrame fails: descriptors cannot be passed here.
func WriteShortCircuitFrame(*net.UnixConn, any, *os.File) error { return errNoShortCircuit }

// ReadShortCircuitFrame fails: descriptors cannot be passed here.
func ReadShortCircuitFrame(*net.UnixConn, any) (*os.File, error) { return nil, errNoShortCircuit }

func (h *scFile) unlinked() bool { return true }
