//go:build !linux

package main

import (
	"errors"
	"os"
)

// readPasswordNoEcho is not implemented off Linux; scripts and other
// systems pipe the password in.
func readPasswordNoEcho(*os.File) (string, error) {
	return "", errors.New("prompting for a password works on Linux only: give --password-stdin and pipe the password in")
}
