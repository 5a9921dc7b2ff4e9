package fuse

import (
	"sync"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/metaserver"
)

// inoState is what one mount shares about an inode across every node object
// that names it. go-fuse may briefly hold two node objects for one inode
// number (two creates racing on one name, a hard link found under a second
// name), so state that must be unique per inode lives here, keyed by inode
// number, not in the node.
type inoState struct {
	// users counts the goroutines holding or waiting for mu; guarded by
	// mountState.smu. The entry is dropped when it has no users and no
	// open file.
	users int
	mu    sync.Mutex
	// open is the file shared by every handle of the inode in this mount.
	open *openFile
	// pt counts the passthrough handles among them, all reading ptCopy;
	// ptGone is closed when the last one is released (passthrough.go).
	pt     int
	ptCopy *fileCopy
	ptGone chan struct{}
	// idle, when a waiter made it, is closed when open becomes nil.
	idle chan struct{}
}

// openFile is the one *fs.File an inode has in this mount while any handle
// is open, so all descriptors of a file see each other's buffered writes.
type openFile struct {
	f    *dfs.File
	refs int
}

// lockIno returns ino's shared state, locked. Holding it across the
// metaserver calls of an open, a release or an unlink keeps them from
// interleaving for that inode (an open slipping between the "is it open?"
// check of an unlink and the unlink itself).
func (m *mountState) lockIno(ino metaserver.Ino) *inoState {
	m.smu.Lock()
	s := m.states[ino]
	if s == nil {
		s = &inoState{}
		m.states[ino] = s
	}
	s.users++
	m.smu.Unlock()
	s.mu.Lock()
	return s
}

// unlockIno unlocks s and drops the entry when nobody needs it any more.
func (m *mountState) unlockIno(ino metaserver.Ino, s *inoState) {
	s.mu.Unlock()
	m.smu.Lock()
	defer m.smu.Unlock()
	s.users--
	if s.users > 0 {
		return
	}
	// Nobody else can take s.mu now: they would have to count themselves
	// in users under smu first.
	s.mu.Lock()
	idle := s.open == nil
	s.mu.Unlock()
	if idle {
		delete(m.states, ino)
	}
}

// openFile returns the file open on ino in this mount, or nil.
func (m *mountState) openFile(ino metaserver.Ino) *dfs.File {
	m.smu.Lock()
	s := m.states[ino]
	m.smu.Unlock()
	if s == nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		return nil
	}
	return s.open.f
}
