package server

import (
	"maps"
	"slices"
	"syscall"

	ms "github.com/dockyard/dockyard/metaserver"
)

// Clones. Chunks never change once committed and every extent holds a
// reference on its chunk, so a copy of a tree needs only its metadata: new
// inodes with the same extents, and one more reference per extent. A write
// to either side afterwards replaces extents of that side's inode
// (insertExtents, cutExtents) and gives back only that side's references,
// so the other keeps its bytes; a chunk is freed when the last extent of
// either tree lets go of it.

// cloneLimit is the most inodes one clone may copy. A variable only so
// tests can lower it; every replica runs with ms.MaxCloneInodes.
var cloneLimit = ms.MaxCloneInodes

// applyCloneTree copies the tree at a.Src to a.NewName in a.NewParent. It
// checks everything, size included, before changing anything, so a refused
// clone leaves the state as it was.
//
// What the copy keeps: type, mode, owner, rdev, size, atime, mtime, Gen,
// xattrs, symlink targets, extents and layer references. Each new inode's
// ctime is the command's time, as for any inode made now; set-group-ID
// inheritance of the destination is not applied, since the copy is to be
// the source as it was. Hard links among the tree's files stay links in the
// copy; a file with names outside the tree gets one inode in the copy,
// whose link count counts only the names inside.
//
// The walk is breadth-first over each directory's entries in name order,
// so every replica hands out the same inode numbers.
func (f *FSM) applyCloneTree(c *command, a ms.CloneTreeArgs) (ms.Attr, error) {
	const op = "clonetree"
	src, err := f.getInode(op, a.Src)
	if err != nil {
		return ms.Attr{}, err
	}
	parent, err := f.getDir(op, a.NewParent)
	if err != nil {
		return ms.Attr{}, err
	}
	if err := validName(op, a.NewName); err != nil {
		return ms.Attr{}, err
	}
	if _, ok := f.entry(a.NewParent, a.NewName); ok {
		return ms.Attr{}, ms.Errf(op, syscall.EEXIST, "%q", a.NewName)
	}
	if isDir(src.Mode) && f.isAncestor(src.Ino, parent.Ino) {
		return ms.Attr{}, ms.Errf(op, syscall.EINVAL, "directory %d into its own subtree", src.Ino)
	}
	if err := f.checkClone(op, src); err != nil {
		return ms.Attr{}, err
	}

	root := f.cloneInode(c, src, parent, a.NewName)
	f.touchDir(parent, c.Time)
	if !isDir(src.Mode) {
		return root.Attr, nil
	}
	// Copies of inodes with more than one name, so later names of the same
	// inode become links to the one copy.
	linked := map[ms.Ino]*inode{}
	type pair struct{ from, to *inode }
	queue := []pair{{src, root}}
	var ents []dentry
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		// Collect first: the B-tree must not change under Ascend.
		ents = ents[:0]
		f.dentries.AscendGreaterOrEqual(dentry{Parent: p.from.Ino}, func(d dentry) bool {
			if d.Parent != p.from.Ino {
				return false
			}
			ents = append(ents, d)
			return true
		})
		for _, d := range ents {
			s := f.inodes[d.Ino]
			if !isDir(s.Mode) && s.Nlink > 1 {
				if n, ok := linked[s.Ino]; ok {
					n.Nlink++
					f.dentries.ReplaceOrInsert(dentry{Parent: p.to.Ino, Name: d.Name, Ino: n.Ino, Mode: d.Mode})
					continue
				}
			}
			n := f.cloneInode(c, s, p.to, d.Name)
			if isDir(s.Mode) {
				queue = append(queue, pair{s, n})
			} else if s.Nlink > 1 {
				linked[s.Ino] = n
			}
		}
	}
	return root.Attr, nil
}

// checkClone counts the inodes under src, refusing the clone past
// cloneLimit, and makes sure every chunk an extent names is in the chunk
// map, so the copy can take its references without failing half-way.
func (f *FSM) checkClone(op string, src *inode) error {
	count := 0
	seen := map[ms.Ino]bool{}
	visit := func(n *inode) error {
		if !isDir(n.Mode) && n.Nlink > 1 {
			if seen[n.Ino] {
				return nil
			}
			seen[n.Ino] = true
		}
		count++
		if count > cloneLimit {
			return ms.Errf(op, syscall.E2BIG, "the tree at inode %d has more than %d inodes, the most one clone copies", src.Ino, cloneLimit)
		}
		for _, x := range n.Extents {
			if _, ok := f.chunks[x.Chunk]; !ok {
				return ms.Errf(op, syscall.EIO, "inode %d uses chunk %d, which the chunk map lacks", n.Ino, x.Chunk)
			}
		}
		return nil
	}
	if err := visit(src); err != nil {
		return err
	}
	if !isDir(src.Mode) {
		return nil
	}
	dirs := []ms.Ino{src.Ino}
	var err error
	for len(dirs) > 0 && err == nil {
		dir := dirs[len(dirs)-1]
		dirs = dirs[:len(dirs)-1]
		f.dentries.AscendGreaterOrEqual(dentry{Parent: dir}, func(d dentry) bool {
			if d.Parent != dir {
				return false
			}
			n := f.inodes[d.Ino]
			if err = visit(n); err != nil {
				return false
			}
			if isDir(n.Mode) {
				dirs = append(dirs, n.Ino)
			}
			return true
		})
	}
	return err
}

// cloneInode makes a copy of s named name in dir, taking a reference on
// the chunk of each extent.
func (f *FSM) cloneInode(c *command, s *inode, dir *inode, name string) *inode {
	n := &inode{Inode: ms.Inode{Attr: s.Attr, Target: s.Target}}
	n.Ino = f.nextIno
	f.nextIno++
	n.Ctime = c.Time
	n.Nlink = 1
	if len(s.Xattrs) > 0 {
		// Values are replaced, never changed in place: sharing them is safe.
		n.Xattrs = maps.Clone(s.Xattrs)
	}
	if len(s.Extents) > 0 {
		n.Extents = slices.Clone(s.Extents)
		for _, x := range n.Extents {
			f.incRef(x.Chunk)
		}
	}
	if s.Layer != nil {
		l := *s.Layer
		n.Layer = &l
	}
	if isDir(s.Mode) {
		n.Nlink = 2
		n.Parent = dir.Ino
		dir.Nlink++
	}
	f.inodes[n.Ino] = n
	f.dentries.ReplaceOrInsert(dentry{Parent: dir.Ino, Name: name, Ino: n.Ino, Mode: s.Mode & sIFMT})
	return n
}
