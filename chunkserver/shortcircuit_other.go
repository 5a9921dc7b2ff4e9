//go:build !unix

package chunkserver

import (
	"errors"
	"io"
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

// ReadShortCircuitRequest fails: descriptors cannot be passed here.
func ReadShortCircuitRequest(io.Reader, any) error { return errNoShortCircuit }

// WriteShortCircuitPut fails: descriptors cannot be passed here.
func WriteShortCircuitPut(*net.UnixConn, ShortCircuitRequest, []byte) error { return errNoShortCircuit }

// WriteShortCircuitData fails: descriptors cannot be passed here.
func WriteShortCircuitData(*net.UnixConn, any, []byte) error { return errNoShortCircuit }

func (h *scFile) unlinked() bool { return true }
