//go:build !linux

package server

import "net"

// checkPeer relies on the socket's owner-only mode where peer credentials
// are not read.
func checkPeer(*net.UnixConn) error { return nil }
