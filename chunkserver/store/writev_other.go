//go:build !linux

package store

import "os"

// writeParts writes bufs to f in order. Only Linux gets the one-call writev;
// elsewhere it is one write per part.
func writeParts(f *os.File, bufs ...[]byte) error {
	for _, b := range bufs {
		if _, err := f.Write(b); err != nil {
			return err
		}
	}
	return nil
}
