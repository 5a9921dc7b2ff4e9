// Package volume is Dockyard's Docker volume plugin. A volume is a directory
// of the Dockyard file system, /volumes/NAME. When a container on a host asks
// for it, the plugin mounts that directory there with FUSE, so containers on
// every host of a cluster see the same files, and a volume outlives any one
// host. The plugin speaks Docker's volume plugin protocol (http.go) on a Unix
// socket that dockerd finds in /run/docker/plugins.
package volume

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/fs/fuse"
	"github.com/dockyard/dockyard/metaserver"
)

// Dir is the directory of the Dockyard file system that holds the volumes.
const Dir = "/volumes"

// Errors the driver's operations wrap; the protocol handler sends their text
// to dockerd, which shows it to the user.
var (
	ErrBadName  = errors.New("invalid volume name: want a letter or digit, then letters, digits, '_', '.' or '-' (2 to 255 characters)")
	ErrNotFound = errors.New("no such volume")
	ErrInUse    = errors.New("volume is in use by containers on this host")
	ErrBadOpt   = errors.New("invalid volume option")
)

// validName is the name grammar of Docker's own local volumes. It also
// keeps a name a single path component: no '/', and never "." or "..".
var validName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{1,254}$`)

// Options configure a Driver.
type Options struct {
	// MountDir is where volumes in use are mounted on this host, each on
	// MountDir/NAME (made absolute). It is created if missing; mounts a
	// crashed plugin left there are detached at start.
	MountDir string
	// FUSE applies to every volume mount; Root is set per volume.
	FUSE   fuse.Options
	Logger *slog.Logger
}

// Volume is what Get and List report of one volume.
type Volume struct {
	Name       string
	Mountpoint string // empty unless mounted on this host
	CreatedAt  time.Time
	// Ino is the volume's root directory, for readers that walk its tree
	// (the web UI sums its file sizes).
	Ino metaserver.Ino
}

// Driver manages the volumes of one cluster on one host.
type Driver struct {
	c   *dfs.Client
	opt Options
	log *slog.Logger

	mu     sync.Mutex
	mounts map[string]*volMount // by volume name, while mounted here
}

// volMount is one volume mounted on this host, with the containers using it.
type volMount struct {
	srv *fuse.Server
	ids map[string]struct{} // Docker's mount IDs, one per container
}

// New returns a driver storing volumes through c. It makes sure Dir exists
// and clears MountDir of mounts a previous run left behind.
func New(ctx context.Context, c *dfs.Client, opt Options) (*Driver, error) {
	if opt.MountDir == "" {
		return nil, errors.New("volume: no mount directory")
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	// dockerd resolves the mount points it is given from its own working
	// directory, not ours.
	abs, err := filepath.Abs(opt.MountDir)
	if err != nil {
		return nil, fmt.Errorf("volume: %w", err)
	}
	opt.MountDir = abs
	if _, err := c.MkdirAll(ctx, Dir, 0o755); err != nil {
		return nil, fmt.Errorf("volume: creating %s: %w", Dir, err)
	}
	if err := os.MkdirAll(opt.MountDir, 0o700); err != nil {
		return nil, fmt.Errorf("volume: %w", err)
	}
	d := &Driver{c: c, opt: opt, log: opt.Logger, mounts: map[string]*volMount{}}
	d.clearStale()
	return d, nil
}

// clearStale detaches and removes the mount points left in MountDir by a
// plugin that died with volumes mounted: their FUSE server is gone, so each
// answers ENOTCONN, and a container still holding one fails its I/O either
// way.
func (d *Driver) clearStale() {
	ents, err := os.ReadDir(d.opt.MountDir)
	if err != nil {
		d.log.Warn("volume: listing the mount directory", "err", err)
		return
	}
	for _, e := range ents {
		p := filepath.Join(d.opt.MountDir, e.Name())
		if err := syscall.Unmount(p, syscall.MNT_DETACH); err == nil {
			d.log.Info("volume: detached a mount left by an earlier run", "path", p)
		}
		_ = os.Remove(p)
	}
}

func checkName(name string) error {
	if !validName.MatchString(name) {
		return fmt.Errorf("%q: %w", name, ErrBadName)
	}
	return nil
}

func volPath(name string) string { return path.Join(Dir, name) }

// Create makes the volume's directory (see the package function Create).
func (d *Driver) Create(ctx context.Context, name string, opts map[string]string) error {
	created, err := Create(ctx, d.c, name, opts)
	if err != nil {
		return err
	}
	if created {
		d.log.Info("volume: created", "name", name, "from", opts["from"])
	}
	return nil
}

// Create makes volume name's directory, with or without a plugin running.
// Options: mode (octal, default 0755), uid and gid of the volume's root
// directory, so containers running as another user can write to it;
// from=VOLUME or from=VOLUME@SNAPSHOT makes the new volume a clone of that
// volume as it is now, or of that snapshot, sharing its bytes (mode, uid and
// gid then change the clone's root, which otherwise keeps the source's).
// Creating a volume that exists is no error, as Docker may ask again for a
// volume it already knows; created says whether this call made it.
func Create(ctx context.Context, c *dfs.Client, name string, opts map[string]string) (created bool, err error) {
	if err := checkName(name); err != nil {
		return false, err
	}
	var (
		set  metaserver.SetAttrIn
		from string
	)
	for k, v := range opts {
		switch k {
		case "mode":
			m, err := strconv.ParseUint(v, 8, 32)
			if err != nil || m > 0o7777 {
				return false, fmt.Errorf("%w: mode %q is not an octal permission", ErrBadOpt, v)
			}
			m32 := uint32(m)
			set.Mode = &m32
		case "uid", "gid":
			id, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return false, fmt.Errorf("%w: %s %q is not a number", ErrBadOpt, k, v)
			}
			id32 := uint32(id)
			if k == "uid" {
				set.Uid = &id32
			} else {
				set.Gid = &id32
			}
		case "from":
			if v == "" {
				return false, fmt.Errorf("%w: from is empty; want VOLUME or VOLUME@SNAPSHOT", ErrBadOpt)
			}
			from = v
		default:
			return false, fmt.Errorf("%w: %q (known: mode, uid, gid, from)", ErrBadOpt, k)
		}
	}
	if a, err := c.Stat(ctx, volPath(name)); err == nil {
		if !a.IsDir() {
			return false, fmt.Errorf("volume %s: %s is not a directory", name, volPath(name))
		}
		return false, nil
	}
	if from != "" {
		if err := cloneVolume(ctx, c, from, name); err != nil {
			return false, err
		}
		if err := cloneRootAttrs(ctx, c, name, set); err != nil {
			return false, err
		}
		return true, nil
	}
	mode := uint32(0o755)
	if set.Mode != nil {
		mode, set.Mode = *set.Mode, nil
	}
	ino, err := c.MkdirAll(ctx, volPath(name), mode)
	if err != nil {
		return false, fmt.Errorf("creating volume %s: %w", name, err)
	}
	if set.Uid != nil || set.Gid != nil {
		if _, err := c.Meta().SetAttr(ctx, ino, set); err != nil {
			return false, fmt.Errorf("creating volume %s: setting its owner: %w", name, err)
		}
	}
	return true, nil
}

// Remove deletes the volume and everything in it. A volume mounted on this
// host is refused; Docker does not remove a volume its containers use.
func (d *Driver) Remove(ctx context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	d.mu.Lock()
	m := d.mounts[name]
	d.mu.Unlock()
	if m != nil {
		return fmt.Errorf("removing %s: %w", name, ErrInUse)
	}
	if err := Remove(ctx, d.c, name); err != nil {
		return err
	}
	d.log.Info("volume: removed", "name", name)
	return nil
}

// Remove deletes volume name and everything in it, or returns ErrNotFound.
// It cannot know whether a host mounts the volume; the plugin's Remove
// refuses one mounted on its own host. Its snapshots stay.
func Remove(ctx context.Context, c *dfs.Client, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if _, err := statVolume(ctx, c, name); err != nil {
		return err
	}
	if err := c.RemoveAll(ctx, volPath(name)); err != nil {
		return fmt.Errorf("removing volume %s: %w", name, err)
	}
	return nil
}

// stat returns the volume's directory attributes, or ErrNotFound.
func (d *Driver) stat(ctx context.Context, name string) (metaserver.Attr, error) {
	return statVolume(ctx, d.c, name)
}

func statVolume(ctx context.Context, c *dfs.Client, name string) (metaserver.Attr, error) {
	a, err := c.Stat(ctx, volPath(name))
	if errors.Is(err, syscall.ENOENT) || (err == nil && !a.IsDir()) {
		return a, fmt.Errorf("%s: %w", name, ErrNotFound)
	}
	if err != nil {
		return a, fmt.Errorf("volume %s: %w", name, err)
	}
	return a, nil
}

// Mount makes the volume available on this host for the container with
// mount ID id and returns where. The first container mounts it with FUSE;
// the others share that mount.
func (d *Driver) Mount(ctx context.Context, name, id string) (string, error) {
	if err := checkName(name); err != nil {
		return "", err
	}
	a, err := d.stat(ctx, name)
	if err != nil {
		return "", err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	dir := d.mountpoint(name)
	if m := d.mounts[name]; m != nil {
		m.ids[id] = struct{}{}
		return dir, nil
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return "", fmt.Errorf("mounting volume %s: %w", name, err)
	}
	opt := d.opt.FUSE
	opt.Root = a.Ino
	srv, err := fuse.Mount(ctx, dir, d.c, opt)
	if err != nil {
		_ = os.Remove(dir)
		return "", fmt.Errorf("mounting volume %s: %w", name, err)
	}
	d.mounts[name] = &volMount{srv: srv, ids: map[string]struct{}{id: {}}}
	d.log.Info("volume: mounted", "name", name, "path", dir)
	return dir, nil
}

// Unmount releases the volume for the container with mount ID id; the last
// one to go takes the FUSE mount down.
func (d *Driver) Unmount(_ context.Context, name, id string) error {
	if err := checkName(name); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	m := d.mounts[name]
	if m == nil {
		return fmt.Errorf("unmounting %s: not mounted on this host: %w", name, ErrNotFound)
	}
	delete(m.ids, id)
	if len(m.ids) > 0 {
		return nil
	}
	delete(d.mounts, name)
	d.unmount(name, m)
	return nil
}

// unmount takes a volume's FUSE mount down; a process still inside it keeps
// it alive, detached, until it lets go. Called with d.mu held.
func (d *Driver) unmount(name string, m *volMount) {
	err := m.srv.Unmount()
	if errors.Is(err, fuse.ErrBusy) {
		d.log.Warn("volume: still in use at unmount; detaching it", "name", name)
		err = m.srv.UnmountLazy()
	}
	if err != nil {
		d.log.Error("volume: unmounting", "name", name, "err", err)
		return
	}
	_ = os.Remove(d.mountpoint(name))
	d.log.Info("volume: unmounted", "name", name)
}

func (d *Driver) mountpoint(name string) string { return filepath.Join(d.opt.MountDir, name) }

// Path returns where the volume is mounted on this host, or "" if it is not.
func (d *Driver) Path(ctx context.Context, name string) (string, error) {
	v, err := d.Get(ctx, name)
	return v.Mountpoint, err
}

// Get describes one volume.
func (d *Driver) Get(ctx context.Context, name string) (Volume, error) {
	if err := checkName(name); err != nil {
		return Volume{}, err
	}
	a, err := d.stat(ctx, name)
	if err != nil {
		return Volume{}, err
	}
	return d.describe(name, a), nil
}

func (d *Driver) describe(name string, a metaserver.Attr) Volume {
	v := describe(name, a)
	d.mu.Lock()
	if d.mounts[name] != nil {
		v.Mountpoint = d.mountpoint(name)
	}
	d.mu.Unlock()
	return v
}

func describe(name string, a metaserver.Attr) Volume {
	return Volume{Name: name, CreatedAt: time.Unix(0, a.Ctime).UTC(), Ino: a.Ino}
}

// List describes every volume of the cluster, sorted by name.
func (d *Driver) List(ctx context.Context) ([]Volume, error) {
	vols, err := List(ctx, d.c)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for i, v := range vols {
		if d.mounts[v.Name] != nil {
			vols[i].Mountpoint = d.mountpoint(v.Name)
		}
	}
	return vols, nil
}

// List describes every volume of the cluster c reaches, sorted by name,
// for readers that run no plugin (the web UI): Mountpoint is empty, as
// the volume is not looked for on any host. A cluster where no volume was
// ever made has none.
func List(ctx context.Context, c *dfs.Client) ([]Volume, error) {
	ents, err := c.ReadDirPlus(ctx, Dir)
	if errors.Is(err, syscall.ENOENT) {
		return []Volume{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing volumes: %w", err)
	}
	vols := make([]Volume, 0, len(ents))
	for _, e := range ents {
		if e.Attr == nil || !e.Attr.IsDir() || !validName.MatchString(e.Name) {
			continue
		}
		vols = append(vols, describe(e.Name, *e.Attr))
	}
	sort.Slice(vols, func(i, j int) bool { return vols[i].Name < vols[j].Name })
	return vols, nil
}

// Lookup describes one volume as List does; it fails with ErrBadName or
// ErrNotFound.
func Lookup(ctx context.Context, c *dfs.Client, name string) (Volume, error) {
	if err := checkName(name); err != nil {
		return Volume{}, err
	}
	a, err := statVolume(ctx, c, name)
	if err != nil {
		return Volume{}, err
	}
	return describe(name, a), nil
}

// Close unmounts every volume mounted on this host.
func (d *Driver) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, m := range d.mounts {
		d.unmount(name, m)
		delete(d.mounts, name)
	}
}
