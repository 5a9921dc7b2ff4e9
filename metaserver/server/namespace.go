package server

import (
	"maps"
	"slices"
	"strings"
	"syscall"

	ms "github.com/dockyard/dockyard/metaserver"
)

const (
	sIFMT   = syscall.S_IFMT
	sIFDIR  = syscall.S_IFDIR
	sIFREG  = syscall.S_IFREG
	sIFLNK  = syscall.S_IFLNK
	sISGID  = syscall.S_ISGID
	permAll = 0o7777

	// maxXattrValue and maxXattrName follow Linux's limits.
	maxXattrValue = 64 << 10
	maxXattrName  = 255

	xattrCreate  = 1 // XATTR_CREATE
	xattrReplace = 2 // XATTR_REPLACE
)

func validName(op, name string) error {
	switch {
	case name == "" || name == "." || name == "..":
		return ms.Errf(op, syscall.EINVAL, "invalid name %q", name)
	case strings.ContainsAny(name, "/\x00"):
		return ms.Errf(op, syscall.EINVAL, "name %q contains '/' or NUL", name)
	case len(name) > ms.MaxNameLen:
		return ms.Errf(op, syscall.ENAMETOOLONG, "name of %d bytes", len(name))
	}
	return nil
}

func validType(mode uint32) bool {
	switch mode & sIFMT {
	case syscall.S_IFREG, syscall.S_IFDIR, syscall.S_IFLNK, syscall.S_IFIFO,
		syscall.S_IFCHR, syscall.S_IFBLK, syscall.S_IFSOCK:
		return true
	}
	return false
}

func isDir(mode uint32) bool { return mode&sIFMT == sIFDIR }

// --- reads (caller holds mu shared) ---

func (f *FSM) getInode(op string, ino ms.Ino) (*inode, error) {
	n, ok := f.inodes[ino]
	if !ok {
		return nil, ms.Errf(op, syscall.ENOENT, "inode %d", ino)
	}
	return n, nil
}

func (f *FSM) getDir(op string, ino ms.Ino) (*inode, error) {
	n, err := f.getInode(op, ino)
	if err != nil {
		return nil, err
	}
	if !isDir(n.Mode) {
		return nil, ms.Errf(op, syscall.ENOTDIR, "inode %d", ino)
	}
	return n, nil
}

func (f *FSM) entry(parent ms.Ino, name string) (dentry, bool) {
	return f.dentries.Get(dentry{Parent: parent, Name: name})
}

// child resolves name in directory parent for op: the directory, its entry
// and the entry's inode, or the errno lookup, unlink and rmdir all answer.
func (f *FSM) child(op string, parent ms.Ino, name string) (*inode, dentry, *inode, error) {
	dir, err := f.getDir(op, parent)
	if err != nil {
		return nil, dentry{}, nil, err
	}
	if err := validName(op, name); err != nil {
		return nil, dentry{}, nil, err
	}
	d, ok := f.entry(parent, name)
	if !ok {
		return nil, dentry{}, nil, ms.Errf(op, syscall.ENOENT, "%q in %d", name, parent)
	}
	return dir, d, f.inodes[d.Ino], nil
}

func (f *FSM) lookup(parent ms.Ino, name string) (ms.Attr, error) {
	_, _, n, err := f.child("lookup", parent, name)
	if err != nil {
		return ms.Attr{}, err
	}
	return n.Attr, nil
}

func (f *FSM) getAttr(ino ms.Ino) (ms.Attr, error) {
	n, err := f.getInode("getattr", ino)
	if err != nil {
		return ms.Attr{}, err
	}
	return n.Attr, nil
}

func (f *FSM) getFullInode(ino ms.Ino) (ms.Inode, error) {
	n, err := f.getInode("getinode", ino)
	if err != nil {
		return ms.Inode{}, err
	}
	out := n.Inode
	out.Xattrs = maps.Clone(n.Xattrs)
	out.Extents = slices.Clone(n.Extents)
	if n.Layer != nil {
		l := *n.Layer
		out.Layer = &l
	}
	return out, nil
}

func (f *FSM) readDir(a ms.ReadDirArgs) ([]ms.DirEntry, error) {
	if _, err := f.getDir("readdir", a.Dir); err != nil {
		return nil, err
	}
	out := []ms.DirEntry{}
	f.dentries.AscendGreaterOrEqual(dentry{Parent: a.Dir, Name: a.After}, func(d dentry) bool {
		if d.Parent != a.Dir {
			return false
		}
		if d.Name == a.After && a.After != "" {
			return true
		}
		e := ms.DirEntry{Name: d.Name, Ino: d.Ino, Mode: d.Mode}
		if a.Plus {
			at := f.inodes[d.Ino].Attr
			e.Attr = &at
		}
		out = append(out, e)
		return a.Limit <= 0 || len(out) < a.Limit
	})
	return out, nil
}

func (f *FSM) dirEmpty(dir ms.Ino) bool {
	empty := true
	f.dentries.AscendGreaterOrEqual(dentry{Parent: dir}, func(d dentry) bool {
		empty = d.Parent != dir
		return false
	})
	return empty
}

func (f *FSM) getXattr(a ms.XattrArgs) ([]byte, error) {
	n, err := f.getInode("getxattr", a.Ino)
	if err != nil {
		return nil, err
	}
	v, ok := n.Xattrs[a.Name]
	if !ok {
		return nil, ms.Errf("getxattr", syscall.ENODATA, "%q", a.Name)
	}
	return slices.Clone(v), nil
}

func (f *FSM) listXattr(ino ms.Ino) ([]string, error) {
	n, err := f.getInode("listxattr", ino)
	if err != nil {
		return nil, err
	}
	names := slices.Sorted(maps.Keys(n.Xattrs))
	if names == nil {
		names = []string{}
	}
	return names, nil
}

func (f *FSM) resolvePath(path string) (ms.Attr, error) {
	const op = "resolvepath"
	if !strings.HasPrefix(path, "/") {
		return ms.Attr{}, ms.Errf(op, syscall.EINVAL, "path %q is not absolute", path)
	}
	cur := f.inodes[ms.RootIno]
	for _, c := range strings.Split(path, "/") {
		if c == "" || c == "." {
			continue
		}
		if !isDir(cur.Mode) {
			return ms.Attr{}, ms.Errf(op, syscall.ENOTDIR, "%q: inode %d is not a directory", path, cur.Ino)
		}
		if c == ".." {
			cur = f.inodes[cur.Parent]
			continue
		}
		if len(c) > ms.MaxNameLen {
			return ms.Attr{}, ms.Errf(op, syscall.ENAMETOOLONG, "%q", path)
		}
		d, ok := f.entry(cur.Ino, c)
		if !ok {
			return ms.Attr{}, ms.Errf(op, syscall.ENOENT, "%q", path)
		}
		cur = f.inodes[d.Ino]
	}
	return cur.Attr, nil
}

func (f *FSM) statFS() ms.StatFS {
	var s ms.StatFS
	for _, cs := range f.servers {
		if cs.State == ms.StateRemoved || cs.State == ms.StateDown {
			continue
		}
		s.TotalBytes += uint64(max(cs.Capacity, 0))
		if free := cs.Capacity - cs.Used; free > 0 {
			s.FreeBytes += uint64(free)
		}
	}
	s.Files = uint64(len(f.inodes))
	// The inode table has no fixed size; report a large, stable headroom.
	const inodeLimit = 1 << 40
	s.FreeFiles = inodeLimit - s.Files
	return s
}

// --- mutations (caller holds mu) ---

func (f *FSM) touchDir(d *inode, now int64) {
	d.Mtime, d.Ctime = now, now
}

func (f *FSM) newInode(c *command, in ms.CreateIn, parent *inode) *inode {
	ino := f.nextIno
	f.nextIno++
	mode := in.Mode
	if mode&sIFMT == 0 {
		mode |= sIFREG // mknod(2) treats a zero type as a regular file
	}
	gid := in.Gid
	if parent.Mode&sISGID != 0 {
		// BSD group semantics on setgid directories: the new inode takes the
		// directory's group, and subdirectories inherit the setgid bit.
		gid = parent.Gid
		if isDir(mode) {
			mode |= sISGID
		}
	}
	n := &inode{Inode: ms.Inode{Attr: ms.Attr{
		Ino: ino, Mode: mode, Uid: in.Uid, Gid: gid, Nlink: 1, Rdev: in.Rdev,
		Atime: c.Time, Mtime: c.Time, Ctime: c.Time,
	}}}
	if len(in.Xattrs) > 0 {
		n.Xattrs = maps.Clone(in.Xattrs)
	}
	switch mode & sIFMT {
	case sIFDIR:
		n.Nlink = 2
		n.Parent = parent.Ino
		parent.Nlink++
	case sIFLNK:
		n.Target = in.Target
		n.Size = uint64(len(in.Target))
	}
	f.inodes[ino] = n
	f.dentries.ReplaceOrInsert(dentry{Parent: parent.Ino, Name: in.Name, Ino: ino, Mode: mode & sIFMT})
	f.touchDir(parent, c.Time)
	return n
}

func (f *FSM) checkCreate(op string, in ms.CreateIn) (*inode, error) {
	parent, err := f.getDir(op, in.Parent)
	if err != nil {
		return nil, err
	}
	if err := validName(op, in.Name); err != nil {
		return nil, err
	}
	if in.Mode&sIFMT != 0 && !validType(in.Mode) {
		return nil, ms.Errf(op, syscall.EINVAL, "file type %#o", in.Mode&sIFMT)
	}
	if in.Mode&sIFMT == sIFLNK && in.Target == "" {
		return nil, ms.Errf(op, syscall.ENOENT, "empty symlink target")
	}
	return parent, nil
}

func (f *FSM) applyCreate(c *command, in ms.CreateIn) (ms.Attr, error) {
	const op = "create"
	parent, err := f.checkCreate(op, in)
	if err != nil {
		return ms.Attr{}, err
	}
	if d, ok := f.entry(in.Parent, in.Name); ok {
		existing := f.inodes[d.Ino]
		regular := in.Mode&sIFMT == 0 || in.Mode&sIFMT == sIFREG
		switch {
		case in.Exclusive || !regular:
			return ms.Attr{}, ms.Errf(op, syscall.EEXIST, "%q", in.Name)
		case isDir(existing.Mode):
			return ms.Attr{}, ms.Errf(op, syscall.EISDIR, "%q", in.Name)
		case !existing.IsRegular():
			return ms.Attr{}, ms.Errf(op, syscall.EEXIST, "%q", in.Name)
		}
		// open(O_CREAT) without O_EXCL on an existing file opens it.
		return existing.Attr, nil
	}
	return f.newInode(c, in, parent).Attr, nil
}

func (f *FSM) applySetAttr(c *command, a ms.SetAttrArgs) (ms.Attr, error) {
	const op = "setattr"
	n, err := f.getInode(op, a.Ino)
	if err != nil {
		return ms.Attr{}, err
	}
	in := a.In
	if in.Size != nil {
		switch {
		case isDir(n.Mode):
			return ms.Attr{}, ms.Errf(op, syscall.EISDIR, "truncate inode %d", a.Ino)
		case !n.IsRegular():
			return ms.Attr{}, ms.Errf(op, syscall.EINVAL, "truncate inode %d of type %#o", a.Ino, n.Mode&sIFMT)
		}
	}
	if in.Mode != nil {
		n.Mode = n.Mode&sIFMT | *in.Mode&permAll
	}
	if in.Uid != nil {
		n.Uid = *in.Uid
	}
	if in.Gid != nil {
		n.Gid = *in.Gid
	}
	if in.Size != nil {
		if *in.Size < n.Size || len(n.Extents) > 0 {
			n.Extents = f.cutExtents(n.Extents, *in.Size, ^uint64(0))
		}
		if *in.Size != n.Size {
			n.Gen++
		}
		n.Size = *in.Size
		n.Mtime = c.Time
	}
	if in.Atime != nil {
		n.Atime = *in.Atime
	}
	if in.Mtime != nil {
		n.Mtime = *in.Mtime
	}
	n.Ctime = c.Time
	return n.Attr, nil
}

func (f *FSM) applyLink(c *command, a ms.LinkArgs) (ms.Attr, error) {
	const op = "link"
	n, err := f.getInode(op, a.Ino)
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
	if isDir(n.Mode) {
		return ms.Attr{}, ms.Errf(op, syscall.EPERM, "hard link to directory %d", a.Ino)
	}
	if _, ok := f.entry(a.NewParent, a.NewName); ok {
		return ms.Attr{}, ms.Errf(op, syscall.EEXIST, "%q", a.NewName)
	}
	n.Nlink++
	n.Ctime = c.Time
	f.dentries.ReplaceOrInsert(dentry{Parent: parent.Ino, Name: a.NewName, Ino: n.Ino, Mode: n.Mode & sIFMT})
	f.touchDir(parent, c.Time)
	return n.Attr, nil
}

// dropLink removes one name of a non-directory inode and frees it (and its
// chunk references) when no name is left. Open file handles are the client's
// business: the metaserver has no notion of them.
func (f *FSM) dropLink(n *inode, now int64) {
	n.Nlink--
	n.Ctime = now
	if n.Nlink == 0 {
		f.releaseExtents(n.Extents)
		delete(f.inodes, n.Ino)
	}
}

func (f *FSM) applyUnlink(c *command, a ms.NameArgs) error {
	const op = "unlink"
	parent, d, n, err := f.child(op, a.Parent, a.Name)
	if err != nil {
		return err
	}
	if isDir(n.Mode) {
		return ms.Errf(op, syscall.EISDIR, "%q", a.Name)
	}
	f.dentries.Delete(d)
	f.dropLink(n, c.Time)
	f.touchDir(parent, c.Time)
	return nil
}

func (f *FSM) applyRmdir(c *command, a ms.NameArgs) error {
	const op = "rmdir"
	parent, d, n, err := f.child(op, a.Parent, a.Name)
	if err != nil {
		return err
	}
	if !isDir(n.Mode) {
		return ms.Errf(op, syscall.ENOTDIR, "%q", a.Name)
	}
	if !f.dirEmpty(n.Ino) {
		return ms.Errf(op, syscall.ENOTEMPTY, "%q", a.Name)
	}
	f.dentries.Delete(d)
	delete(f.inodes, n.Ino)
	parent.Nlink--
	f.touchDir(parent, c.Time)
	return nil
}

// isAncestor reports whether dir a is dir b or one of b's ancestors.
func (f *FSM) isAncestor(a, b ms.Ino) bool {
	for {
		if a == b {
			return true
		}
		if b == ms.RootIno {
			return false
		}
		b = f.inodes[b].Parent
	}
}

func (f *FSM) applyRename(c *command, a ms.RenameArgs) error {
	const op = "rename"
	if a.Flags&^(ms.RenameNoreplace|ms.RenameExchange) != 0 ||
		a.Flags == ms.RenameNoreplace|ms.RenameExchange {
		return ms.Errf(op, syscall.EINVAL, "flags %#x", a.Flags)
	}
	oldDir, err := f.getDir(op, a.OldParent)
	if err != nil {
		return err
	}
	newDir, err := f.getDir(op, a.NewParent)
	if err != nil {
		return err
	}
	if err := validName(op, a.OldName); err != nil {
		return err
	}
	if err := validName(op, a.NewName); err != nil {
		return err
	}
	src, ok := f.entry(a.OldParent, a.OldName)
	if !ok {
		return ms.Errf(op, syscall.ENOENT, "%q", a.OldName)
	}
	dst, dstExists := f.entry(a.NewParent, a.NewName)
	srcNode := f.inodes[src.Ino]

	if a.Flags&ms.RenameExchange != 0 {
		if !dstExists {
			return ms.Errf(op, syscall.ENOENT, "%q", a.NewName)
		}
		return f.exchange(c, oldDir, newDir, src, dst)
	}
	if dstExists && a.Flags&ms.RenameNoreplace != 0 {
		return ms.Errf(op, syscall.EEXIST, "%q", a.NewName)
	}
	// Moving a directory under itself would cut the subtree off the root.
	if isDir(srcNode.Mode) && a.OldParent != a.NewParent && f.isAncestor(srcNode.Ino, newDir.Ino) {
		return ms.Errf(op, syscall.EINVAL, "%q into its own subtree", a.OldName)
	}
	if dstExists {
		if dst.Ino == src.Ino {
			// Two names of one inode (or the same name): rename(2) does nothing.
			return nil
		}
		dstNode := f.inodes[dst.Ino]
		switch {
		case isDir(srcNode.Mode) && !isDir(dstNode.Mode):
			return ms.Errf(op, syscall.ENOTDIR, "%q is not a directory", a.NewName)
		case !isDir(srcNode.Mode) && isDir(dstNode.Mode):
			return ms.Errf(op, syscall.EISDIR, "%q is a directory", a.NewName)
		case isDir(dstNode.Mode) && !f.dirEmpty(dstNode.Ino):
			return ms.Errf(op, syscall.ENOTEMPTY, "%q", a.NewName)
		}
		f.dentries.Delete(dst)
		if isDir(dstNode.Mode) {
			delete(f.inodes, dstNode.Ino)
			newDir.Nlink--
		} else {
			f.dropLink(dstNode, c.Time)
		}
	}
	f.dentries.Delete(src)
	f.dentries.ReplaceOrInsert(dentry{Parent: a.NewParent, Name: a.NewName, Ino: src.Ino, Mode: src.Mode})
	if isDir(srcNode.Mode) && a.OldParent != a.NewParent {
		srcNode.Parent = newDir.Ino
		oldDir.Nlink--
		newDir.Nlink++
	}
	srcNode.Ctime = c.Time
	f.touchDir(oldDir, c.Time)
	f.touchDir(newDir, c.Time)
	return nil
}

func (f *FSM) exchange(c *command, oldDir, newDir *inode, src, dst dentry) error {
	const op = "rename"
	if src.Ino == dst.Ino {
		return nil
	}
	srcNode, dstNode := f.inodes[src.Ino], f.inodes[dst.Ino]
	if oldDir.Ino != newDir.Ino {
		// Either side moving under the other would create a cycle.
		if isDir(srcNode.Mode) && f.isAncestor(srcNode.Ino, newDir.Ino) ||
			isDir(dstNode.Mode) && f.isAncestor(dstNode.Ino, oldDir.Ino) {
			return ms.Errf(op, syscall.EINVAL, "exchange %q and %q: one contains the other", src.Name, dst.Name)
		}
	}
	f.dentries.ReplaceOrInsert(dentry{Parent: src.Parent, Name: src.Name, Ino: dst.Ino, Mode: dst.Mode})
	f.dentries.ReplaceOrInsert(dentry{Parent: dst.Parent, Name: dst.Name, Ino: src.Ino, Mode: src.Mode})
	if oldDir.Ino != newDir.Ino {
		if isDir(srcNode.Mode) {
			srcNode.Parent = newDir.Ino
			oldDir.Nlink--
			newDir.Nlink++
		}
		if isDir(dstNode.Mode) {
			dstNode.Parent = oldDir.Ino
			newDir.Nlink--
			oldDir.Nlink++
		}
	}
	srcNode.Ctime, dstNode.Ctime = c.Time, c.Time
	f.touchDir(oldDir, c.Time)
	f.touchDir(newDir, c.Time)
	return nil
}

func (f *FSM) applySetXattr(c *command, a ms.XattrArgs) error {
	const op = "setxattr"
	n, err := f.getInode(op, a.Ino)
	if err != nil {
		return err
	}
	switch {
	case a.Name == "":
		return ms.Errf(op, syscall.EINVAL, "empty attribute name")
	case len(a.Name) > maxXattrName:
		return ms.Errf(op, syscall.ERANGE, "attribute name of %d bytes", len(a.Name))
	case len(a.Value) > maxXattrValue:
		return ms.Errf(op, syscall.E2BIG, "attribute value of %d bytes", len(a.Value))
	case a.Flags&^(xattrCreate|xattrReplace) != 0 || a.Flags == xattrCreate|xattrReplace:
		return ms.Errf(op, syscall.EINVAL, "flags %#x", a.Flags)
	}
	_, exists := n.Xattrs[a.Name]
	if a.Flags&xattrCreate != 0 && exists {
		return ms.Errf(op, syscall.EEXIST, "%q", a.Name)
	}
	if a.Flags&xattrReplace != 0 && !exists {
		return ms.Errf(op, syscall.ENODATA, "%q", a.Name)
	}
	if n.Xattrs == nil {
		n.Xattrs = map[string][]byte{}
	}
	v := slices.Clone(a.Value)
	if v == nil {
		v = []byte{}
	}
	n.Xattrs[a.Name] = v
	n.Ctime = c.Time
	return nil
}

func (f *FSM) applyRemoveXattr(c *command, a ms.XattrArgs) error {
	const op = "removexattr"
	n, err := f.getInode(op, a.Ino)
	if err != nil {
		return err
	}
	if _, ok := n.Xattrs[a.Name]; !ok {
		return ms.Errf(op, syscall.ENODATA, "%q", a.Name)
	}
	delete(n.Xattrs, a.Name)
	if len(n.Xattrs) == 0 {
		n.Xattrs = nil
	}
	n.Ctime = c.Time
	return nil
}

// applyCreateTree validates the whole batch before touching the state, so a
// failing batch changes nothing.
func (f *FSM) applyCreateTree(c *command, a ms.CreateTreeArgs) ([]ms.Ino, error) {
	const op = "createtree"
	root, err := f.getDir(op, a.Parent)
	if err != nil {
		return nil, err
	}
	type key struct {
		parent int
		name   string
	}
	seen := map[key]bool{}
	for i, e := range a.Entries {
		if e.ParentIdx < -1 || e.ParentIdx >= i {
			return nil, ms.Errf(op, syscall.EINVAL, "entry %d: parent index %d not before it", i, e.ParentIdx)
		}
		if e.ParentIdx >= 0 && (a.Entries[e.ParentIdx].LinkToIdx > 0 || !isDir(a.Entries[e.ParentIdx].Mode)) {
			return nil, ms.Errf(op, syscall.ENOTDIR, "entry %d: parent entry %d is not a directory", i, e.ParentIdx)
		}
		if err := validName(op, e.Name); err != nil {
			return nil, err
		}
		if e.LinkToIdx > 0 {
			if e.LinkToIdx-1 >= i {
				return nil, ms.Errf(op, syscall.EINVAL, "entry %d: link target %d not before it", i, e.LinkToIdx-1)
			}
			if t := a.Entries[e.LinkToIdx-1]; isDir(t.Mode) || t.LinkToIdx > 0 {
				return nil, ms.Errf(op, syscall.EPERM, "entry %d: hard link to a directory or to a link", i)
			}
		} else {
			if e.Mode&sIFMT != 0 && !validType(e.Mode) {
				return nil, ms.Errf(op, syscall.EINVAL, "entry %d: file type %#o", i, e.Mode&sIFMT)
			}
			if e.Mode&sIFMT == sIFLNK && e.Target == "" {
				return nil, ms.Errf(op, syscall.ENOENT, "entry %d: empty symlink target", i)
			}
			for _, x := range e.Extents {
				if err := f.checkExtent(op, x); err != nil {
					return nil, err
				}
			}
		}
		k := key{e.ParentIdx, e.Name}
		if seen[k] {
			return nil, ms.Errf(op, syscall.EEXIST, "entry %d: %q twice in one directory", i, e.Name)
		}
		seen[k] = true
		if e.ParentIdx == -1 {
			if _, ok := f.entry(a.Parent, e.Name); ok {
				return nil, ms.Errf(op, syscall.EEXIST, "%q", e.Name)
			}
		}
	}
	inos := make([]ms.Ino, len(a.Entries))
	for i, e := range a.Entries {
		parent := root
		if e.ParentIdx >= 0 {
			parent = f.inodes[inos[e.ParentIdx]]
		}
		if e.LinkToIdx > 0 {
			t := f.inodes[inos[e.LinkToIdx-1]]
			t.Nlink++
			f.dentries.ReplaceOrInsert(dentry{Parent: parent.Ino, Name: e.Name, Ino: t.Ino, Mode: t.Mode & sIFMT})
			inos[i] = t.Ino
			continue
		}
		in := e.CreateIn
		in.Parent, in.Exclusive = parent.Ino, true
		n := f.newInode(c, in, parent)
		if e.Mtime != 0 {
			n.Mtime = e.Mtime
		}
		if n.IsRegular() {
			n.Size = e.Size
			if e.Layer != nil {
				l := *e.Layer
				n.Layer = &l
			}
			if len(e.Extents) > 0 {
				n.Extents = f.insertExtents(nil, e.Extents)
				for _, x := range e.Extents {
					f.markCommitted(x.Chunk)
				}
			}
		}
		inos[i] = n.Ino
	}
	return inos, nil
}
