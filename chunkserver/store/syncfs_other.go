//go:build !linux

package store

import "errors"

// Without syncfs there is no call that flushes one file system as a whole,
// so Puts fsync their own file and directory (groupCommit is false).
const groupCommit = false

var errNoGroupCommit = errors.New("group commit needs syncfs (Linux)")

func openFlusher(string) (fsFlusher, error) { return nil, errNoGroupCommit }

func deviceOf(string) (uint64, error) { return 0, errNoGroupCommit }
