package converter

import (
	"context"
	"fmt"
	"path"
	"sort"
	"strings"
	"syscall"

	"github.com/dockyard/dockyard/metaserver"
)

// OCI whiteout names (image-spec layer.md).
const (
	whiteoutPrefix = ".wh."
	whiteoutOpaque = ".wh..wh..opq"
	whiteoutMeta   = ".wh..wh."
)

// ImageLayer is one layer of an image with where its blob lives in the DFS.
type ImageLayer struct {
	Index *Index
	Blob  metaserver.Ino
}

// Tree is an image's merged root file system: every layer applied in order,
// whiteouts and opaque directories removing what lower layers had.
type Tree struct {
	layers []ImageLayer
	root   *Node
}

// Node is one path of a merged tree.
type Node struct {
	Name     string
	Entry    *Entry // nil for directories no layer lists (implicit parents)
	Layer    int    // which layer Entry comes from
	entryIdx int    // Entry's index in that layer's index
	children map[string]*Node
	size     int // nodes in this subtree, set by countNodes
}

// Children returns the node's children sorted by name.
func (n *Node) Children() []*Node {
	out := make([]*Node, 0, len(n.children))
	for _, c := range n.children {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Mode is the node's mode with type bits.
func (n *Node) Mode() uint32 {
	if n.Entry == nil {
		return syscall.S_IFDIR | 0755
	}
	return n.Entry.Mode
}

func (n *Node) isDir() bool { return n.Mode()&syscall.S_IFMT == syscall.S_IFDIR }

// linkKey identifies the inode a node names: hard links share their target's.
type linkKey struct{ layer, entry int }

func (n *Node) key() (linkKey, bool) {
	if n.Entry == nil || n.isDir() {
		return linkKey{}, false
	}
	if n.Entry.IsHardLink() {
		return linkKey{n.Layer, n.Entry.LinkIdx - 1}, true
	}
	return linkKey{n.Layer, n.entryIdx}, true
}

// MergeLayers applies layers bottom first. Per the OCI image spec, a layer's
// whiteouts hide paths of the layers below it, never its own entries, so each
// layer's whiteouts are applied before its entries are added.
func MergeLayers(layers []ImageLayer) (*Tree, error) {
	t := &Tree{layers: layers, root: &Node{children: map[string]*Node{}}}
	for li, l := range layers {
		entries := l.Index.Entries
		for i := range entries {
			e := &entries[i]
			dir, base := path.Split(e.Path)
			dir = strings.TrimSuffix(dir, "/")
			if dir == "" {
				dir = "."
			}
			switch {
			case base == whiteoutOpaque:
				if d := t.lookup(dir); d != nil && d.isDir() {
					clear(d.children)
				}
			case strings.HasPrefix(base, whiteoutMeta):
				// Reserved for future use by the spec; not a path.
			case strings.HasPrefix(base, whiteoutPrefix):
				name := base[len(whiteoutPrefix):]
				if name == "" || name == "." || name == ".." {
					return nil, entryErr(e.Path, fmt.Errorf("%w: whiteout of %q", ErrPathEscape, name))
				}
				if d := t.lookup(dir); d != nil && d.isDir() {
					delete(d.children, name)
				}
			}
		}
		for i := range entries {
			e := &entries[i]
			if strings.HasPrefix(path.Base(e.Path), whiteoutPrefix) {
				continue
			}
			if err := t.add(li, i, e); err != nil {
				return nil, fmt.Errorf("layer %s: %w", l.Index.Digest, err)
			}
		}
	}
	return t, nil
}

// lookup finds a node without following symlinks.
func (t *Tree) lookup(p string) *Node {
	n := t.root
	if p == "." {
		return n
	}
	for _, c := range strings.Split(p, "/") {
		if n = n.children[c]; n == nil {
			return nil
		}
	}
	return n
}

func (t *Tree) add(layer, idx int, e *Entry) error {
	if e.Path == "." {
		t.root.Entry, t.root.Layer, t.root.entryIdx = e, layer, idx
		return nil
	}
	comps := strings.Split(e.Path, "/")
	n := t.root
	for i, c := range comps[:len(comps)-1] {
		next := n.children[c]
		switch {
		case next == nil:
			next = &Node{Name: c, Layer: layer, children: map[string]*Node{}}
			n.children[c] = next
		case next.Mode()&syscall.S_IFMT == syscall.S_IFLNK:
			return entryErr(e.Path, fmt.Errorf("%w: %q is a symlink in a lower layer", ErrSymlinkTraversal, strings.Join(comps[:i+1], "/")))
		case !next.isDir():
			return entryErr(e.Path, fmt.Errorf("%w: %q", ErrNotDir, strings.Join(comps[:i+1], "/")))
		}
		n = next
	}
	name := comps[len(comps)-1]
	if old := n.children[name]; old != nil && old.isDir() && e.Type() == syscall.S_IFDIR {
		// A directory over a directory merges: new attributes, old children.
		old.Entry, old.Layer, old.entryIdx = e, layer, idx
		return nil
	}
	nn := &Node{Name: name, Entry: e, Layer: layer, entryIdx: idx}
	if e.Type() == syscall.S_IFDIR {
		nn.children = map[string]*Node{}
	}
	n.children[name] = nn
	return nil
}

// Root is the root directory node; its Entry holds the attributes a layer
// gave "." (nil when none did).
func (t *Tree) Root() *Node { return t.root }

// Walk visits every node but the root, parents before children, siblings by
// name. p is the node's path relative to the root.
func (t *Tree) Walk(fn func(p string, n *Node)) {
	var walk func(prefix string, n *Node)
	walk = func(prefix string, n *Node) {
		for _, c := range n.Children() {
			p := prefix + c.Name
			fn(p, c)
			if c.isDir() {
				walk(p+"/", c)
			}
		}
	}
	walk("", t.root)
}

// Len is the number of nodes, the root excluded.
func (t *Tree) Len() int { return countNodes(t.root) - 1 }

func countNodes(n *Node) int {
	s := 1
	for _, c := range n.children {
		s += countNodes(c)
	}
	n.size = s
	return s
}

// Batch is one CreateTree call. Entries name their parent by index into the
// batch, -1 meaning Parent: the global index (creation order over all
// batches) of an entry created by an earlier batch, or -1 for the tree root.
type Batch struct {
	Parent  int
	Entries []metaserver.TreeEntry
	// Global is the global index of each entry.
	Global []int
}

// DeferredLink is a hard link whose target was created by an earlier batch:
// it becomes a Link call after all batches.
type DeferredLink struct {
	Target, Parent int // global indexes; Parent -1 = the tree root
	Name           string
}

// Batches cuts the tree into CreateTree batches of at most max entries
// (max <= 0: one batch). A subtree that fits goes whole into one batch; a
// bigger directory is created alone and its children form batches of their
// own, so every batch has a single parent that already exists.
func (t *Tree) Batches(max int) ([]Batch, []DeferredLink) {
	countNodes(t.root)
	if max <= 0 {
		max = t.root.size
	}
	type item struct {
		n      *Node
		parent int // index into the batch, -1 = batch parent
	}
	type rawBatch struct {
		parentNode *Node
		items      []item
	}
	var raws []rawBatch
	var plan func(dir *Node)
	plan = func(dir *Node) {
		cur := rawBatch{parentNode: dir}
		flush := func() {
			if len(cur.items) > 0 {
				raws = append(raws, cur)
			}
			cur = rawBatch{parentNode: dir}
		}
		var big []*Node
		var addSubtree func(n *Node, parent int)
		addSubtree = func(n *Node, parent int) {
			cur.items = append(cur.items, item{n, parent})
			me := len(cur.items) - 1
			for _, c := range n.Children() {
				addSubtree(c, me)
			}
		}
		for _, c := range dir.Children() {
			if c.size <= max {
				if len(cur.items)+c.size > max {
					flush()
				}
				addSubtree(c, -1)
				continue
			}
			if len(cur.items)+1 > max {
				flush()
			}
			cur.items = append(cur.items, item{c, -1})
			big = append(big, c)
		}
		flush()
		for _, c := range big {
			plan(c)
		}
	}
	plan(t.root)

	global := map[*Node]int{t.root: -1}
	primary := map[linkKey]int{} // global index of the node that creates the inode
	var batches []Batch
	var links []DeferredLink
	next := 0
	for _, rb := range raws {
		b := Batch{Parent: global[rb.parentNode]}
		start := next                       // entries of this batch have global indexes start, start+1, ...
		local := make([]int, len(rb.items)) // item -> index in b.Entries
		for i, it := range rb.items {
			parentGlobal := b.Parent
			parentLocal := -1
			if it.parent >= 0 {
				parentLocal = local[it.parent]
				parentGlobal = b.Global[parentLocal]
			}
			te := t.treeEntry(it.n)
			te.ParentIdx = parentLocal
			if k, ok := it.n.key(); ok {
				if p, seen := primary[k]; seen {
					if p >= start {
						te.LinkToIdx = p - start + 1
					} else {
						links = append(links, DeferredLink{Target: p, Parent: parentGlobal, Name: it.n.Name})
						local[i] = -2 // never a parent: hard links are not directories
						continue
					}
				} else {
					primary[k] = next
				}
			}
			local[i] = len(b.Entries)
			global[it.n] = next
			b.Entries = append(b.Entries, te)
			b.Global = append(b.Global, next)
			next++
		}
		batches = append(batches, b)
	}
	return batches, links
}

// treeEntry describes n for CreateTree (ParentIdx and LinkToIdx are set by
// the caller).
func (t *Tree) treeEntry(n *Node) metaserver.TreeEntry {
	te := metaserver.TreeEntry{CreateIn: metaserver.CreateIn{Name: n.Name, Mode: n.Mode()}}
	e := n.Entry
	if e == nil {
		return te
	}
	te.Uid, te.Gid = e.Uid, e.Gid
	te.Xattrs = e.Xattrs
	te.Mtime = e.Mtime
	switch e.Type() {
	case syscall.S_IFLNK:
		te.Target = e.Linkname
		te.Size = uint64(len(e.Linkname))
	case syscall.S_IFCHR, syscall.S_IFBLK:
		te.Rdev = e.Rdev()
	case syscall.S_IFREG:
		te.Size = uint64(e.Size)
		if e.Size > 0 {
			l := t.layers[n.Layer]
			te.Layer = &metaserver.LayerRef{Blob: l.Blob, Digest: l.Index.Digest, Offset: uint64(e.Offset)}
		}
	}
	return te
}

// TreeCreator is the part of metaserver.API a tree is applied with.
type TreeCreator interface {
	CreateTree(ctx context.Context, parent metaserver.Ino, entries []metaserver.TreeEntry) ([]metaserver.Ino, error)
	Link(ctx context.Context, ino metaserver.Ino, newParent metaserver.Ino, newName string) (metaserver.Attr, error)
}

// Apply creates the tree under root in batches of at most maxBatch entries
// (a few Raft entries for a whole image) and returns how many nodes it made.
func (t *Tree) Apply(ctx context.Context, ns TreeCreator, root metaserver.Ino, maxBatch int) (int, error) {
	batches, links := t.Batches(maxBatch)
	var inos []metaserver.Ino
	ino := func(g int) metaserver.Ino {
		if g < 0 {
			return root
		}
		return inos[g]
	}
	for _, b := range batches {
		got, err := ns.CreateTree(ctx, ino(b.Parent), b.Entries)
		if err != nil {
			return len(inos), fmt.Errorf("creating image tree: %w", err)
		}
		if len(got) != len(b.Entries) {
			return len(inos), fmt.Errorf("creating image tree: %d inodes for %d entries", len(got), len(b.Entries))
		}
		inos = append(inos, got...)
	}
	for _, l := range links {
		if _, err := ns.Link(ctx, ino(l.Target), ino(l.Parent), l.Name); err != nil {
			return len(inos), fmt.Errorf("linking %q in image tree: %w", l.Name, err)
		}
	}
	return len(inos) + len(links), nil
}
