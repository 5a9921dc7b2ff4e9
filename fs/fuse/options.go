package fuse

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	dfs "github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/metaserver"
)

// Defaults, kept in one place.
const (
	DefaultEntryTimeout = time.Second
	DefaultAttrTimeout  = time.Second
	// DefaultFeedTimeout is how long the kernel keeps names and attributes
	// while the client's metadata cache follows the metaserver's change
	// feed. Other clients' changes are then pushed to the kernel as they
	// arrive (NotifyEntry, NotifyContent), so the timeout no longer bounds
	// how stale a stat can be; it bounds the damage of a notification the
	// kernel never got. A feed that stalls is noticed within its poll wait
	// plus the cache's MaxLag (about 2 s), and then everything the kernel
	// holds is invalidated. Measured with bench/fuse/run.sh (10,000 empty
	// files, one directory, loaded 2-core machine): stats answered by the
	// metadata cache through FUSE ran at 13,000-20,000/s, by the kernel's
	// cache at 180,000-250,000/s (without the cache: ~3,000/s).
	DefaultFeedTimeout = time.Minute
	// DefaultMaxWrite is the largest READ/WRITE request the kernel sends:
	// 1 MiB, the most Linux allows, so a sequential stream costs a quarter
	// of the round trips 256 KiB requests would, and a chunk of 4 MiB fills
	// in four requests.
	DefaultMaxWrite = 1 << 20
	// DefaultKernelReadAhead is the device read-ahead the mount sets
	// (read_ahead_kb): four 1 MiB READs in flight for a sequential reader
	// rather than one or two, so the next request is already on its way
	// while one is answered. It stays well inside the window within which
	// the fs client still takes out-of-order requests for one stream (8
	// MiB). Cold 1 GiB reads through the mount used less CPU per GiB at 4
	// and 8 MiB than at 1 MiB (bench/fuse/run.sh).
	DefaultKernelReadAhead = 4 << 20
	// blockSize is what stat reports as st_blksize: the unit programs such as
	// cp size their buffers by.
	blockSize = 1 << 20
)

// ReservedName is the root entry holding the DFS's own files (registry blobs,
// layer indexes, orphans). A mount of the whole namespace hides it.
const ReservedName = ".dockyard"

// Options configure a mount. Zero values mean the defaults.
type Options struct {
	// Root is the directory to mount; 0 means "/". The image mount points it
	// at an image's merged tree.
	Root metaserver.Ino
	// ReadOnly refuses every change with EROFS and mounts read-only.
	ReadOnly bool
	// ShowReserved makes /.dockyard visible (operators only; see the package
	// comment for why it is hidden).
	ShowReserved bool
	// EntryTimeout and AttrTimeout bound how long the kernel trusts a name or
	// an attribute without asking again; negative means 0 (always ask).
	EntryTimeout time.Duration
	AttrTimeout  time.Duration
	// FeedTimeout replaces both while the client's metadata cache
	// (fs.MetaCache) follows the change feed: other clients' changes are
	// then pushed to the kernel, which may keep what it has for longer. 0
	// means DefaultFeedTimeout; negative turns this off (the kernel keeps
	// entries for EntryTimeout/AttrTimeout, and hears of nothing).
	FeedTimeout time.Duration
	// NegativeTimeout lets the kernel cache "no such file" answers. It is 0
	// by default so a file created on another mount is found at once.
	NegativeTimeout time.Duration
	// AllowOther lets users other than the mounter use the mount (needs root
	// or user_allow_other in fuse.conf).
	AllowOther bool
	// Suid honours set-user-ID and set-group-ID bits on exec. Off by
	// default (nosuid); a root-run container whose image ships setuid
	// programs needs it.
	Suid bool
	// MaxWrite is the largest read or write request, default and most 1 MiB.
	MaxWrite int
	// KernelReadAhead is how far ahead of a sequential reader the kernel
	// asks the mount for pages (the device's read_ahead_kb), default
	// DefaultKernelReadAhead; negative leaves the kernel's default. Setting
	// it needs root.
	KernelReadAhead int
	// Passthrough keeps a local copy of each file read whole from offset
	// 0 and serves later read-only opens of the same content generation
	// from it with FUSE passthrough: the kernel reads the local file and no
	// READ reaches the mount. It needs Linux 6.9+ and root; where the
	// kernel refuses, the mount goes on without it. See passthrough.go for
	// what it means for writers.
	Passthrough bool
	// FileCacheDir holds the copies, in files/<pid>/ (emptied at mount,
	// removed at unmount); "" means DefaultFileCacheDir.
	FileCacheDir string
	// FileCacheBytes bounds the copies (least recently used ones are
	// dropped first); 0 means DefaultFileCacheBytes or a tenth of the
	// cache's file system, whichever is less.
	FileCacheBytes int64
	// FileCacheMinSize: smaller files are not copied; 0 means
	// DefaultFileCacheMinSize.
	FileCacheMinSize int64
	// FsName is shown as the source in /proc/mounts and df.
	FsName string
	// Debug logs every FUSE request.
	Debug  bool
	Logger *slog.Logger
}

func (o Options) withDefaults() Options {
	if o.Root == 0 {
		o.Root = metaserver.RootIno
	}
	if o.EntryTimeout == 0 {
		o.EntryTimeout = DefaultEntryTimeout
	}
	if o.EntryTimeout < 0 {
		o.EntryTimeout = 0
	}
	if o.AttrTimeout == 0 {
		o.AttrTimeout = DefaultAttrTimeout
	}
	if o.AttrTimeout < 0 {
		o.AttrTimeout = 0
	}
	if o.FeedTimeout == 0 {
		o.FeedTimeout = DefaultFeedTimeout
	}
	if o.NegativeTimeout < 0 {
		o.NegativeTimeout = 0
	}
	if o.MaxWrite <= 0 || o.MaxWrite > DefaultMaxWrite {
		o.MaxWrite = DefaultMaxWrite
	}
	if o.KernelReadAhead == 0 {
		o.KernelReadAhead = DefaultKernelReadAhead
	}
	if o.FileCacheDir == "" {
		o.FileCacheDir = DefaultFileCacheDir()
	}
	if o.FsName == "" {
		o.FsName = "dockyard"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// mountState is what every node of one mount shares.
type mountState struct {
	client  *dfs.Client
	meta    metaserver.API
	opt     Options
	log     *slog.Logger
	orphans *orphanage

	smu    sync.Mutex
	states map[metaserver.Ino]*inoState

	// feed is the client's metadata cache when it may push changes to the
	// kernel (nil otherwise); see feed.go.
	feed *kernelFeed
	// cache is the client's metadata cache, if it has one.
	cache *dfs.MetaCache

	// READ requests that reached the mount and the bytes they returned: a
	// file the kernel keeps in its page cache costs none (Server.Stats).
	reads, readBytes atomic.Int64

	// files holds the local copies passthrough opens read; nil while
	// passthrough is off or the kernel refused it (passthrough.go).
	files atomic.Pointer[fileCache]
	// ptOpens counts the opens answered with passthrough.
	ptOpens atomic.Int64
}

// DefaultFileCacheDir is where a mount keeps its copies unless told
// otherwise: /var/tmp, which lives on disk where /tmp may be memory, or the
// system's temporary directory when there is no /var/tmp.
func DefaultFileCacheDir() string {
	const varTmp = "/var/tmp"
	if st, err := os.Stat(varTmp); err == nil && st.IsDir() {
		return filepath.Join(varTmp, "dockyard")
	}
	return filepath.Join(os.TempDir(), "dockyard")
}

// hideReserved reports whether name, looked up in dir, is the hidden
// reserved tree.
func (m *mountState) hideReserved(dir metaserver.Ino, name string) bool {
	return !m.opt.ShowReserved && dir == metaserver.RootIno && name == ReservedName
}

// fail turns err into an errno and logs the ones that are real failures, so
// an EIO seen by an application can be traced to its cause.
func (m *mountState) fail(op string, ino metaserver.Ino, err error) syscall.Errno {
	e := toErrno(err)
	if !expected(e) {
		m.log.Warn("fuse operation failed", "op", op, "ino", uint64(ino), "errno", e.Error(), "err", err)
	}
	return e
}

// NewRoot returns the root node of a tree over c and the go-fuse options it
// must be mounted with. Mount uses it; callers that assemble their own
// go-fuse server (tests, the image mount) can too.
func NewRoot(c *dfs.Client, opt Options) (gofs.InodeEmbedder, *gofs.Options) {
	opt = opt.withDefaults()
	m := &mountState{client: c, meta: uninterrupted{c.Meta()}, opt: opt, log: opt.Logger, states: map[metaserver.Ino]*inoState{}}
	m.orphans = newOrphanage(m)
	root := &node{m: m, ino: opt.Root}
	if cache, ok := c.Meta().(*dfs.MetaCache); ok {
		m.cache = cache
		if opt.FeedTimeout > 0 {
			m.feed = newKernelFeed(m, cache)
			m.feed.register(root)
		}
	}
	entry, attr, neg := opt.EntryTimeout, opt.AttrTimeout, opt.NegativeTimeout
	gopt := &gofs.Options{
		EntryTimeout:    &entry,
		AttrTimeout:     &attr,
		NegativeTimeout: &neg,
		// Inode numbers are the metaserver's, so they are stable across
		// mounts and hard links share one.
		RootStableAttr: &gofs.StableAttr{Ino: uint64(opt.Root)},
		// Mode 0 is a real mode here, not "unset".
		NullPermissions: true,
	}
	gopt.MountOptions = mountOptions(opt)
	return root, gopt
}

// closeTree releases what a tree holds beyond the kernel's lifetime: the
// orphan links of files that were still open.
func closeTree(ctx context.Context, root gofs.InodeEmbedder) error {
	n, ok := root.(*node)
	if !ok {
		return nil
	}
	if n.m.feed != nil {
		n.m.feed.close()
	}
	return n.m.orphans.close(ctx)
}
