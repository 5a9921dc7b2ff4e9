package fuse

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/dockyard/dockyard/metaserver"
)

// OrphanDir is where mounts keep the extra links of files unlinked while
// open, one directory per mount: /.dockyard/orphans/<host>-<pid>-<nonce>.
const OrphanDir = "orphans"

// orphanage holds the orphan links of one mount (see the package comment).
type orphanage struct {
	m    *mountState
	name string // this mount's directory name under /.dockyard/orphans

	mu    sync.Mutex
	dir   metaserver.Ino            // 0 until first needed
	links map[metaserver.Ino]string // inode -> its name in dir
}

func newOrphanage(m *mountState) *orphanage {
	host, _ := os.Hostname()
	host = strings.NewReplacer("/", "_", "-", "_").Replace(host)
	if host == "" {
		host = "host"
	}
	return &orphanage{
		m:     m,
		name:  fmt.Sprintf("%s-%d-%08x", host, os.Getpid(), rand.Uint32()),
		links: map[metaserver.Ino]string{},
	}
}

// mkdir returns the inode of dir/name, creating it (mode 0700, root) when
// missing; a concurrent creator winning the race is fine.
func (o *orphanage) mkdir(ctx context.Context, dir metaserver.Ino, name string, mode uint32) (metaserver.Ino, error) {
	a, err := o.m.meta.Lookup(ctx, dir, name)
	if err == nil {
		return a.Ino, nil
	}
	if !isNotFound(err) {
		return 0, err
	}
	a, err = o.m.meta.Create(ctx, metaserver.CreateIn{Parent: dir, Name: name, Mode: syscall.S_IFDIR | mode, Exclusive: true})
	if errors.Is(err, syscall.EEXIST) {
		a, err = o.m.meta.Lookup(ctx, dir, name)
	}
	return a.Ino, err
}

// dirLocked returns this mount's orphan directory, creating it on first use.
// o.mu is held.
func (o *orphanage) dirLocked(ctx context.Context) (metaserver.Ino, error) {
	if o.dir != 0 {
		return o.dir, nil
	}
	ino := metaserver.RootIno
	for _, name := range []string{ReservedName, OrphanDir, o.name} {
		var err error
		if ino, err = o.mkdir(ctx, ino, name, 0o700); err != nil {
			return 0, fmt.Errorf("orphan directory: %w", err)
		}
	}
	o.dir = ino
	return ino, nil
}

// hold links ino into the orphan directory unless a link is held already.
func (o *orphanage) hold(ctx context.Context, ino metaserver.Ino) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.links[ino]; ok {
		return nil
	}
	dir, err := o.dirLocked(ctx)
	if err != nil {
		return err
	}
	name := strconv.FormatUint(uint64(ino), 10)
	if _, err := o.m.meta.Link(ctx, ino, dir, name); err != nil && !errors.Is(err, syscall.EEXIST) {
		return fmt.Errorf("keeping open file %d: %w", ino, err)
	}
	o.links[ino] = name
	return nil
}

// createTemp creates a nameless (O_TMPFILE) file in the orphan directory.
func (o *orphanage) createTemp(ctx context.Context, in metaserver.CreateIn) (metaserver.Attr, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	dir, err := o.dirLocked(ctx)
	if err != nil {
		return metaserver.Attr{}, err
	}
	in.Parent = dir
	in.Exclusive = true
	in.Name = fmt.Sprintf("tmp-%016x", rand.Uint64())
	a, err := o.m.meta.Create(ctx, in)
	if err != nil {
		return a, err
	}
	// Named by inode like every orphan, so release finds it.
	name := strconv.FormatUint(uint64(a.Ino), 10)
	if err := o.m.meta.Rename(ctx, dir, in.Name, dir, name, 0); err != nil {
		return a, err
	}
	o.links[a.Ino] = name
	return a, nil
}

// held returns how many links to ino are orphan links of this mount.
func (o *orphanage) held(ino metaserver.Ino) uint32 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.links[ino]; ok {
		return 1
	}
	return 0
}

// release removes the orphan link of ino, if any: its last handle is closed.
func (o *orphanage) release(ctx context.Context, ino metaserver.Ino) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	name, ok := o.links[ino]
	if !ok {
		return nil
	}
	delete(o.links, ino)
	if err := o.m.meta.Unlink(ctx, o.dir, name); err != nil && !isNotFound(err) {
		return fmt.Errorf("removing orphan %d: %w", ino, err)
	}
	return nil
}

// close removes every orphan link left and the directory itself; it runs
// after unmount, when the kernel has released every handle.
func (o *orphanage) close(ctx context.Context) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.dir == 0 {
		return nil
	}
	var errs []error
	for ino, name := range o.links {
		if err := o.m.meta.Unlink(ctx, o.dir, name); err != nil && !isNotFound(err) {
			errs = append(errs, err)
		}
		delete(o.links, ino)
	}
	if err := o.removeDir(ctx, o.dir, o.name); err != nil {
		errs = append(errs, err)
	}
	o.dir = 0
	return errors.Join(errs...)
}

// removeDir empties and removes the orphan directory name (inode dir).
func (o *orphanage) removeDir(ctx context.Context, dir metaserver.Ino, name string) error {
	for {
		ents, err := o.m.meta.ReadDir(ctx, dir, "", dirPage, false)
		if err != nil {
			return err
		}
		for _, e := range ents {
			if err := o.m.meta.Unlink(ctx, dir, e.Name); err != nil && !isNotFound(err) {
				return err
			}
		}
		if len(ents) < dirPage {
			break
		}
	}
	parent, err := o.m.meta.ResolvePath(ctx, "/"+ReservedName+"/"+OrphanDir)
	if err != nil {
		return err
	}
	if err := o.m.meta.Rmdir(ctx, parent.Ino, name); err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// sweep removes the orphan directories of mounts on this host whose process
// is gone: they crashed or were killed before they could clean up.
func (o *orphanage) sweep(ctx context.Context) error {
	parent, err := o.m.meta.ResolvePath(ctx, "/"+ReservedName+"/"+OrphanDir)
	if isNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	host, _, _ := strings.Cut(o.name, "-")
	ents, err := o.m.meta.ReadDir(ctx, parent.Ino, "", 0, false)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		parts := strings.Split(e.Name, "-")
		if len(parts) != 3 || parts[0] != host {
			continue
		}
		pid, err := strconv.Atoi(parts[1])
		if err != nil || processAlive(pid) {
			continue
		}
		if err := o.removeDir(ctx, e.Ino, e.Name); err != nil {
			errs = append(errs, fmt.Errorf("sweeping orphans of %s: %w", e.Name, err))
		}
	}
	return errors.Join(errs...)
}

// processAlive reports whether a process with this pid exists on this host.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
