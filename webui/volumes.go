package webui

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/dockyard/dockyard/metaserver"
	"github.com/dockyard/dockyard/registry"
	"github.com/dockyard/dockyard/volume"
)

// Accounts checks a visitor's user name and password against the
// registry's users; *registry.UserStore satisfies it.
type Accounts interface {
	Authenticate(ctx context.Context, name, password string) (*registry.User, error)
}

// Errors of the pages only admins may see.
var (
	// ErrLogin: the page needs credentials the visitor has not given (401).
	ErrLogin = errors.New("log in")
	// ErrForbidden: the visitor is known and may not see the page (403).
	ErrForbidden = errors.New("forbidden")
)

// defaultWalkLimit is how many directory entries one volume's size walk
// reads before it stops and shows a lower bound: a few seconds of
// metaserver pages, however many files the volume holds.
const defaultWalkLimit = 100_000

// walkPage is how many entries one ReadDir call of a walk asks for.
const walkPage = 1024

// usage is what a bounded walk of one volume's tree found.
type usage struct {
	Bytes   int64
	Files   int
	Partial bool // the walk hit its limit: Bytes and Files are lower bounds
}

// walkUsage sums the sizes of the regular files under root, reading at
// most limit entries. It pages through the metaserver itself rather than
// listing whole directories, so one directory of millions of files cannot
// get past the limit either. A file with several names is counted once
// per name.
func walkUsage(ctx context.Context, meta metaserver.API, root metaserver.Ino, limit int) (usage, error) {
	var u usage
	read := 0
	dirs := []metaserver.Ino{root}
	for len(dirs) > 0 {
		dir := dirs[len(dirs)-1]
		dirs = dirs[:len(dirs)-1]
		after := ""
		for {
			if read >= limit {
				u.Partial = true
				return u, nil
			}
			want := min(walkPage, limit-read)
			page, err := meta.ReadDir(ctx, dir, after, want, true)
			if err != nil {
				return u, fmt.Errorf("reading directory inode %d: %w", dir, err)
			}
			read += len(page)
			for _, e := range page {
				switch {
				case e.Attr == nil:
				case e.Attr.IsDir():
					dirs = append(dirs, e.Ino)
				case e.Attr.IsRegular():
					u.Files++
					u.Bytes += int64(e.Attr.Size)
				}
			}
			if len(page) < want {
				break
			}
			after = page[len(page)-1].Name
		}
	}
	return u, nil
}

// mayAdmin lets through the visitors who may see volumes. Volumes are not
// repositories, so the registry's grants say nothing about them: with the
// registry's auth on, only admins see them, logged in with Basic
// credentials as on the other pages. Without a user store the registry
// itself says whether auth is on (an anonymous /v2/ is refused), so a UI
// wired without one refuses everyone rather than showing volumes to all.
func (u *UI) mayAdmin(c echo.Context) error {
	ctx, cancel := context.WithTimeout(c.Request().Context(), u.cfg.StatusTimeout)
	defer cancel()
	if u.cfg.Users == nil {
		// The request's own context: no credentials, so this asks whether
		// anonymous visitors may use the registry.
		_, err := u.reg.get(ctx, "/v2/", "", 1<<10)
		var re *RegistryError
		if errors.As(err, &re) && re.Status == 401 {
			return fmt.Errorf("the registry requires a login and this web UI has no user store to tell admins: %w", ErrForbidden)
		}
		return err
	}
	name, pw, ok := c.Request().BasicAuth()
	if !ok {
		return fmt.Errorf("volumes are shown to registry admins only: %w", ErrLogin)
	}
	usr, err := u.cfg.Users.Authenticate(ctx, name, pw)
	if errors.Is(err, registry.ErrBadPassword) {
		return fmt.Errorf("wrong user name or password: %w", ErrLogin)
	}
	if err != nil {
		return fmt.Errorf("checking the login of %s: %w: %w", name, ErrMetaserver, err)
	}
	if !usr.Admin {
		return fmt.Errorf("volumes are shown to registry admins only, and %s is not one: %w", name, ErrForbidden)
	}
	return nil
}

type snapRow struct {
	Name    string
	Created string
}

type volumeRow struct {
	Name      string
	Created   string
	Usage     usage
	Snapshots []snapRow
	Err       string
}

type volumesData struct {
	// Missing says why there is no list: the UI has no file system.
	Missing string
	Rows    []volumeRow
	Pager   pager
	Limit   int
}

// noFS is what the volumes pages say when the UI was given no file system.
const noFS = "This web UI was started without access to the cluster's file system, so it cannot read volumes. " +
	"`dockyard serve` and `dockyard registry` give it one; list volumes with `docker volume ls` on a host running the plugin."

func formatStamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// fillVolume walks one volume and lists its snapshots; failures land in
// row.Err so one volume cannot hide the others.
func (u *UI) fillVolume(ctx context.Context, v volume.Volume, row *volumeRow) {
	row.Name, row.Created = v.Name, formatStamp(v.CreatedAt)
	var errs []string
	us, err := walkUsage(ctx, u.cfg.FS.Meta(), v.Ino, u.cfg.VolumeWalkLimit)
	if err != nil {
		errs = append(errs, err.Error())
	}
	row.Usage = us
	snaps, err := volume.ListSnapshots(ctx, u.cfg.FS, v.Name)
	if err != nil {
		errs = append(errs, err.Error())
	}
	for _, s := range snaps {
		row.Snapshots = append(row.Snapshots, snapRow{Name: s.Name, Created: formatStamp(s.CreatedAt)})
	}
	row.Err = strings.Join(errs, "; ")
}

// volumes lists the cluster's volumes, paged; only the page shown is
// walked for sizes.
func (u *UI) volumes(c echo.Context) error {
	if err := u.mayAdmin(c); err != nil {
		return u.fail(c, err)
	}
	d := volumesData{Limit: u.cfg.VolumeWalkLimit}
	if u.cfg.FS == nil {
		d.Missing = noFS
		return u.render(c, 200, "volumes", "Volumes", "volumes", d)
	}
	ctx, cancel := u.ctx(c)
	defer cancel()
	vols, err := volume.List(ctx, u.cfg.FS)
	if err != nil {
		return u.fail(c, fmt.Errorf("%w: %w", ErrMetaserver, err))
	}
	d.Pager = newPager(c, len(vols), u.cfg.PageSize, nil)
	d.Rows = make([]volumeRow, d.Pager.to-d.Pager.from)
	parallel(len(d.Rows), func(i int) { u.fillVolume(ctx, vols[d.Pager.from+i], &d.Rows[i]) })
	return u.render(c, 200, "volumes", "Volumes", "volumes", d)
}

type volumeData struct {
	Missing string
	volumeRow
	DockerRun, DockyardRun  string
	SnapshotCmd, RestoreCmd string
	Limit                   int
}

// volumePage shows one volume: its snapshots and the commands that use it.
func (u *UI) volumePage(c echo.Context) error {
	name := strings.TrimSuffix(strings.TrimPrefix(c.Request().URL.Path, "/ui/volumes/"), "/")
	if name == "" {
		return u.volumes(c)
	}
	if err := u.mayAdmin(c); err != nil {
		return u.fail(c, err)
	}
	if u.cfg.FS == nil {
		return u.render(c, 200, "volume", name, "volumes", volumeData{Missing: noFS, volumeRow: volumeRow{Name: name}})
	}
	ctx, cancel := u.ctx(c)
	defer cancel()
	v, err := volume.Lookup(ctx, u.cfg.FS, name)
	switch {
	case errors.Is(err, volume.ErrNotFound), errors.Is(err, volume.ErrBadName):
		return u.fail(c, fmt.Errorf("no volume named %s: %w", name, ErrNotFound))
	case err != nil:
		return u.fail(c, fmt.Errorf("%w: %w", ErrMetaserver, err))
	}
	d := volumeData{
		Limit:       u.cfg.VolumeWalkLimit,
		DockerRun:   "docker run -v " + name + ":/data --volume-driver dockyard IMAGE",
		DockyardRun: "dockyard run -v " + name + ":/data IMAGE",
		SnapshotCmd: "dockyard volume snapshot " + name + " SNAPSHOT",
		RestoreCmd:  "dockyard volume restore " + name + " SNAPSHOT --to NEWNAME",
	}
	u.fillVolume(ctx, v, &d.volumeRow)
	return u.render(c, 200, "volume", name, "volumes", d)
}
