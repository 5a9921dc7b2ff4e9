package fuse

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"

	dfs "github.com/dockyard/dockyard/fs"
)

// FsType is the file-system type mounts show in /proc/mounts.
const FsType = "fuse.dockyard"

// Errors of Mount and Unmount, matched with errors.Is.
var (
	// ErrAlreadyMounted: the directory is already a mount point.
	ErrAlreadyMounted = errors.New("already a mount point")
	// ErrNotMounted: the directory is not a Dockyard mount.
	ErrNotMounted = errors.New("not a dockyard mount")
	// ErrBusy: files or directories under the mount are in use.
	ErrBusy = errors.New("mount is busy: files under it are open or a process has its working directory there")
)

// Server is a running mount.
type Server struct {
	Dir  string
	srv  *gofuse.Server
	root gofs.InodeEmbedder

	closeOnce sync.Once
	closeErr  error
}

// mountOptions are the kernel-side options of a mount.
func mountOptions(opt Options) gofuse.MountOptions {
	mo := gofuse.MountOptions{
		AllowOther: opt.AllowOther,
		// The kernel checks mode, owner and groups itself, as for a local
		// file system; see the package comment.
		Options:      []string{"default_permissions"},
		MaxWrite:     opt.MaxWrite,
		MaxReadAhead: opt.MaxWrite,
		// Reads are served concurrently by the fs client; let the kernel
		// keep enough of them in flight to cover read-ahead.
		MaxBackground: 64,
		FsName:        opt.FsName,
		Name:          "dockyard",
		DirectMount:   true,
		// noatime says what the mount does: a read does not update atime,
		// which would cost a Raft entry per read. nosuid and nodev are
		// what fusermount enforces for users; a network file system must
		// not grant privileges or open host devices.
		DirectMountFlags: syscall.MS_NOSUID | syscall.MS_NODEV | syscall.MS_NOATIME,
		Debug:            opt.Debug,
		// Reads are answered from memory, never from a file descriptor,
		// so splicing only adds a copy (and fails for 1 MiB requests,
		// which exceed the default pipe size).
		DisableSplice: true,
		// A symlink's target never changes for an inode, so the kernel
		// may keep it.
		EnableSymlinkCaching: true,
		// Page-cache validity is decided at open from the content
		// generation (close-to-open); an mtime change seen in a getattr,
		// as our own flush causes, must not throw the cache away.
		ExplicitDataCacheControl: true,
	}
	if opt.ReadOnly {
		mo.Options = append(mo.Options, "ro")
	}
	if opt.Suid {
		mo.DirectMountFlags &^= syscall.MS_NOSUID
		mo.Options = append(mo.Options, "suid")
	}
	return mo
}

// Mount mounts c's namespace (or the subtree opt.Root) on dir and serves it
// until Unmount or an external umount. The directory must exist and must not
// be a mount point already.
func Mount(ctx context.Context, dir string, c *dfs.Client, opt Options) (*Server, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("mount point: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("mount point %s: %w", abs, syscall.ENOTDIR)
	}
	if fstype, ok, err := mountPoint(abs); err != nil {
		return nil, err
	} else if ok {
		return nil, fmt.Errorf("%s (%s): %w", abs, fstype, ErrAlreadyMounted)
	}
	// Fail here, with the cause, rather than on the first stat through the
	// mount.
	rootIno := opt.withDefaults().Root
	ra, err := c.Meta().GetAttr(ctx, rootIno)
	if err != nil {
		return nil, fmt.Errorf("reading the root of the file system from the metaserver: %w", err)
	}
	if !ra.IsDir() {
		return nil, fmt.Errorf("mount root inode %d: %w", rootIno, syscall.ENOTDIR)
	}
	root, gopt := NewRoot(c, opt)
	if n, ok := root.(*node); ok && !n.m.opt.ReadOnly {
		// A mount that crashed left its orphans behind; they hold space
		// until someone removes them.
		if err := n.m.orphans.sweep(ctx); err != nil {
			n.m.log.Warn("sweeping orphans of crashed mounts", "err", err)
		}
	}
	srv, err := gofs.Mount(abs, root, gopt)
	if err != nil {
		if errors.Is(err, syscall.EBUSY) {
			return nil, fmt.Errorf("mounting %s: %w", abs, ErrBusy)
		}
		return nil, fmt.Errorf("mounting %s: %w", abs, err)
	}
	s := &Server{Dir: abs, srv: srv, root: root}
	if n, ok := root.(*node); ok && n.m.opt.Passthrough {
		n.m.startFileCache(srv)
	}
	if ra := opt.withDefaults().KernelReadAhead; ra > 0 {
		s.raiseReadAhead(ra)
	}
	return s, nil
}

// raiseReadAhead lifts the kernel's per-device read-ahead (128 KiB by
// default for FUSE, and capped at max_readahead when the mount starts), so a
// sequential reader keeps several whole 1 MiB requests in flight. It needs
// root; without it the mount still works.
func (s *Server) raiseReadAhead(bytes int) {
	var st syscall.Stat_t
	if err := syscall.Stat(s.Dir, &st); err != nil {
		return
	}
	major, minor := (st.Dev>>8)&0xfff|(st.Dev>>32)&^0xfff, st.Dev&0xff|(st.Dev>>12)&^0xff
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", major, minor)
	_ = os.WriteFile(p, []byte(strconv.Itoa(bytes/1024)), 0)
}

// Wait blocks until the file system is unmounted, then releases what the
// mount held (orphan links of files that were still open).
func (s *Server) Wait() error {
	s.srv.Wait()
	return s.close()
}

func (s *Server) close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s.closeErr = closeTree(ctx, s.root)
		if n, ok := s.root.(*node); ok {
			if files := n.m.files.Swap(nil); files != nil {
				if err := files.close(); err != nil && s.closeErr == nil {
					s.closeErr = fmt.Errorf("removing the file cache: %w", err)
				}
			}
		}
	})
	return s.closeErr
}

// Unmount unmounts the file system. It fails with ErrBusy while files are in
// use; UnmountLazy detaches anyway.
func (s *Server) Unmount() error {
	if err := s.srv.Unmount(); err != nil {
		if busy(err) {
			return fmt.Errorf("unmounting %s: %w", s.Dir, ErrBusy)
		}
		return fmt.Errorf("unmounting %s: %w", s.Dir, err)
	}
	s.srv.Wait()
	return s.close()
}

// UnmountLazy detaches the mount from the namespace at once; the kernel
// keeps serving open files until they are closed, and Wait returns then.
func (s *Server) UnmountLazy() error {
	return Unmount(s.Dir, true)
}

func busy(err error) bool {
	return errors.Is(err, syscall.EBUSY) || strings.Contains(err.Error(), "busy")
}

// Unmount unmounts the Dockyard mount at dir, from any process (the
// `dockyard umount` command). lazy detaches even while files are in use.
func Unmount(dir string, lazy bool) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	if _, err := os.Lstat(abs); err != nil {
		return fmt.Errorf("unmounting: %w", err)
	}
	fstype, ok, err := mountPoint(abs)
	if err != nil {
		return err
	}
	if !ok || fstype != FsType {
		return fmt.Errorf("%s: %w", abs, ErrNotMounted)
	}
	flags := 0
	if lazy {
		flags = syscall.MNT_DETACH
	}
	err = syscall.Unmount(abs, flags)
	if errors.Is(err, syscall.EPERM) {
		// Not root: fusermount is setuid and lets the user who mounted
		// unmount.
		args := []string{"-u"}
		if lazy {
			args = append(args, "-z")
		}
		out, ferr := exec.Command(fusermount(), append(args, abs)...).CombinedOutput()
		if ferr == nil {
			return nil
		}
		msg := strings.TrimSpace(string(out))
		if strings.Contains(msg, "busy") {
			return fmt.Errorf("unmounting %s: %w", abs, ErrBusy)
		}
		return fmt.Errorf("unmounting %s: %s", abs, msg)
	}
	if errors.Is(err, syscall.EBUSY) {
		return fmt.Errorf("unmounting %s: %w", abs, ErrBusy)
	}
	if err != nil {
		return fmt.Errorf("unmounting %s: %w", abs, err)
	}
	return nil
}

func fusermount() string {
	for _, name := range []string{"fusermount3", "fusermount"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return "fusermount"
}

// mountPoint reports whether dir is a mount point, and of which type, from
// /proc/self/mountinfo.
func mountPoint(dir string) (fstype string, ok bool, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", false, fmt.Errorf("reading mount table: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || unescapeMount(fields[4]) != dir {
			continue
		}
		fstype = "unknown"
		for i, f := range fields {
			if f == "-" && i+1 < len(fields) {
				fstype = fields[i+1]
				break
			}
		}
		// The last matching line is the mount on top.
		ok = true
	}
	if err := sc.Err(); err != nil {
		return "", false, fmt.Errorf("reading mount table: %w", err)
	}
	return fstype, ok, nil
}

// unescapeMount undoes the octal escapes (\040 for space...) of mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Stats counts what reached the mount through the kernel.
type Stats struct {
	// ReadRequests and ReadBytes count the READ requests served and the
	// bytes they returned. Reads the kernel answers from its page cache
	// never get here: a file read twice, unchanged, costs them once.
	ReadRequests, ReadBytes int64
	// PassthroughOpens counts the opens the kernel was told to serve from
	// a local copy; FileCopies the copies completed, FileCacheBytes the
	// bytes the copies hold now.
	PassthroughOpens, FileCopies, FileCacheBytes int64
}

// Stats returns the counts since the mount started.
func (s *Server) Stats() Stats {
	n, ok := s.root.(*node)
	if !ok {
		return Stats{}
	}
	st := Stats{ReadRequests: n.m.reads.Load(), ReadBytes: n.m.readBytes.Load(), PassthroughOpens: n.m.ptOpens.Load()}
	if files := n.m.files.Load(); files != nil {
		st.FileCacheBytes, st.FileCopies = files.stats()
	}
	return st
}

// startFileCache turns passthrough on when the kernel allows it; otherwise
// the mount runs without it and says why once.
func (m *mountState) startFileCache(srv *gofuse.Server) {
	files, err := newFileCache(m.opt.FileCacheDir, m.opt.FileCacheBytes, m.opt.FileCacheMinSize, m.log)
	if err != nil {
		m.log.Warn("passthrough off: no local file cache", "err", err)
		return
	}
	if err := probePassthrough(srv, files.dir); err != nil {
		m.log.Info("passthrough off: the kernel does not allow it for this mount", "err", err)
		files.close()
		return
	}
	m.files.Store(files)
}
