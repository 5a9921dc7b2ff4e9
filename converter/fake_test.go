package converter

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"syscall"

	"github.com/dockyard/dockyard/metaserver"
)

// fakeNS is an in-memory namespace with CreateTree and Link semantics as the
// metaserver contract states them, strict about batch ordering.
type fakeNS struct {
	mu    sync.Mutex
	next  metaserver.Ino
	nodes map[metaserver.Ino]*fakeNode
	calls int
}

type fakeNode struct {
	te       metaserver.TreeEntry
	nlink    int
	children map[string]metaserver.Ino
}

func newFakeNS() *fakeNS {
	ns := &fakeNS{next: metaserver.RootIno + 1, nodes: map[metaserver.Ino]*fakeNode{}}
	ns.nodes[metaserver.RootIno] = &fakeNode{te: metaserver.TreeEntry{CreateIn: metaserver.CreateIn{Mode: syscall.S_IFDIR | 0755}}, children: map[string]metaserver.Ino{}}
	return ns
}

func (ns *fakeNS) dir(ino metaserver.Ino) (*fakeNode, error) {
	n := ns.nodes[ino]
	if n == nil {
		return nil, metaserver.Errf("create", syscall.ENOENT, "inode %d", ino)
	}
	if n.children == nil {
		return nil, metaserver.Errf("create", syscall.ENOTDIR, "inode %d", ino)
	}
	return n, nil
}

func (ns *fakeNS) CreateTree(ctx context.Context, parent metaserver.Ino, entries []metaserver.TreeEntry) ([]metaserver.Ino, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	ns.calls++
	inos := make([]metaserver.Ino, len(entries))
	for i, te := range entries {
		p := parent
		if te.ParentIdx >= 0 {
			if te.ParentIdx >= i {
				return nil, fmt.Errorf("entry %d names parent %d: not parent-before-child", i, te.ParentIdx)
			}
			p = inos[te.ParentIdx]
		}
		d, err := ns.dir(p)
		if err != nil {
			return nil, err
		}
		if _, dup := d.children[te.Name]; dup {
			return nil, metaserver.Errf("create", syscall.EEXIST, "%s", te.Name)
		}
		if te.LinkToIdx > 0 {
			if te.LinkToIdx-1 >= i {
				return nil, fmt.Errorf("entry %d links forward", i)
			}
			inos[i] = inos[te.LinkToIdx-1]
			ns.nodes[inos[i]].nlink++
		} else {
			inos[i] = ns.next
			ns.next++
			n := &fakeNode{te: te, nlink: 1}
			if te.Mode&syscall.S_IFMT == syscall.S_IFDIR {
				n.children = map[string]metaserver.Ino{}
			}
			ns.nodes[inos[i]] = n
		}
		d.children[te.Name] = inos[i]
	}
	return inos, nil
}

func (ns *fakeNS) Link(ctx context.Context, ino, newParent metaserver.Ino, name string) (metaserver.Attr, error) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	d, err := ns.dir(newParent)
	if err != nil {
		return metaserver.Attr{}, err
	}
	n := ns.nodes[ino]
	if n == nil || n.children != nil {
		return metaserver.Attr{}, metaserver.Errf("link", syscall.EPERM, "inode %d", ino)
	}
	if _, dup := d.children[name]; dup {
		return metaserver.Attr{}, metaserver.Errf("link", syscall.EEXIST, "%s", name)
	}
	d.children[name] = ino
	n.nlink++
	return metaserver.Attr{Ino: ino, Nlink: uint32(n.nlink)}, nil
}

// paths lists every path under dir with its inode, sorted.
func (ns *fakeNS) paths(dir metaserver.Ino) map[string]metaserver.Ino {
	out := map[string]metaserver.Ino{}
	var walk func(prefix string, d metaserver.Ino)
	walk = func(prefix string, d metaserver.Ino) {
		names := make([]string, 0)
		for name := range ns.nodes[d].children {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			ino := ns.nodes[d].children[name]
			out[prefix+name] = ino
			if ns.nodes[ino].children != nil {
				walk(prefix+name+"/", ino)
			}
		}
	}
	walk("", dir)
	return out
}
