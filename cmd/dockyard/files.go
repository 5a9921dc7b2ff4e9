package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/dockyard/dockyard/fs"
	"github.com/dockyard/dockyard/metaserver"
)

// File access without a mount: ls, stat, mkdir and rm on dfs:/paths (cp is
// in cp.go).

func init() {
	subcommands = append(subcommands, lsCmd, statCmd, mkdirCmd, rmCmd)
}

// dfsPrefix marks a path in the Dockyard namespace on the command line.
const dfsPrefix = "dfs:"

// dfsPath returns the namespace path of a dfs:/path argument.
func dfsPath(arg string) (string, bool) {
	rest, ok := strings.CutPrefix(arg, dfsPrefix)
	if !ok {
		return "", false
	}
	if rest == "" {
		rest = "/"
	}
	return rest, true
}

// mustDFSPath accepts only dfs:/absolute/path arguments.
func mustDFSPath(arg string) (string, error) {
	p, ok := dfsPath(arg)
	if !ok || !strings.HasPrefix(p, "/") {
		return "", fmt.Errorf("%q: want dfs:/absolute/path", arg)
	}
	return path.Clean(p), nil
}

func addMetaFlag(c *cobra.Command) {
	c.Flags().String("meta", defaultMeta, "metaserver API addresses, comma-separated")
	addClusterSecretFlag(c.Flags())
}

// newFSClient connects to the metaservers named by --meta. It is the one
// place the CLI's file commands build their client.
func newFSClient(cmd *cobra.Command) (*fs.Client, error) {
	mc, err := metaClient(cmd)
	if err != nil {
		return nil, err
	}
	return fs.New(mc, shardClient(), fs.Options{}), nil
}

func lsCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "ls dfs:/path",
		Short: "List a directory (or show one file) in the Dockyard file system",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := mustDFSPath(args[0])
			if err != nil {
				return fmt.Errorf("ls: %w", err)
			}
			c, err := newFSClient(cmd)
			if err != nil {
				return fmt.Errorf("ls: %w", err)
			}
			return runLs(cmd.Context(), c, p, cmd.OutOrStdout())
		},
	}
	addMetaFlag(c)
	return c
}

func runLs(ctx context.Context, c *fs.Client, p string, out io.Writer) error {
	a, err := c.Stat(ctx, p)
	if err != nil {
		return fmt.Errorf("ls %s%s: %w", dfsPrefix, p, err)
	}
	tw := tabwriter.NewWriter(out, 0, 0, 1, ' ', tabwriter.AlignRight)
	if !a.IsDir() {
		lsLine(tw, a, path.Base(p))
		return tw.Flush()
	}
	ents, err := c.ReadDirPlus(ctx, p)
	if err != nil {
		return fmt.Errorf("ls %s%s: %w", dfsPrefix, p, err)
	}
	for _, e := range ents {
		if e.Attr == nil {
			ea, err := c.Meta().GetAttr(ctx, e.Ino)
			if err != nil {
				return fmt.Errorf("ls %s%s: %w", dfsPrefix, path.Join(p, e.Name), err)
			}
			e.Attr = &ea
		}
		lsLine(tw, *e.Attr, e.Name)
	}
	return tw.Flush()
}

func lsLine(w io.Writer, a metaserver.Attr, name string) {
	fmt.Fprintf(w, "%s\t %d\t %d\t %d\t %d\t %s\t %s\n", modeString(a.Mode), a.Nlink, a.Uid, a.Gid, a.Size,
		time.Unix(0, a.Mtime).UTC().Format("2006-01-02 15:04"), name)
}

// modeString renders mode bits the way ls -l does.
func modeString(mode uint32) string {
	var b strings.Builder
	switch mode & syscall.S_IFMT {
	case syscall.S_IFDIR:
		b.WriteByte('d')
	case syscall.S_IFLNK:
		b.WriteByte('l')
	case syscall.S_IFIFO:
		b.WriteByte('p')
	case syscall.S_IFCHR:
		b.WriteByte('c')
	case syscall.S_IFBLK:
		b.WriteByte('b')
	case syscall.S_IFSOCK:
		b.WriteByte('s')
	default:
		b.WriteByte('-')
	}
	const rwx = "rwxrwxrwx"
	for i := 0; i < 9; i++ {
		if mode&(1<<(8-i)) != 0 {
			b.WriteByte(rwx[i])
		} else {
			b.WriteByte('-')
		}
	}
	return b.String()
}

func statCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "stat dfs:/path",
		Short: "Show the attributes of a path in the Dockyard file system",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := mustDFSPath(args[0])
			if err != nil {
				return fmt.Errorf("stat: %w", err)
			}
			c, err := newFSClient(cmd)
			if err != nil {
				return fmt.Errorf("stat: %w", err)
			}
			return runStat(cmd.Context(), c, p, cmd.OutOrStdout())
		},
	}
	addMetaFlag(c)
	return c
}

func runStat(ctx context.Context, c *fs.Client, p string, out io.Writer) error {
	a, err := c.Stat(ctx, p)
	if err != nil {
		return fmt.Errorf("stat %s%s: %w", dfsPrefix, p, err)
	}
	ts := func(ns int64) string { return time.Unix(0, ns).UTC().Format(time.RFC3339Nano) }
	fmt.Fprintf(out, "path:  %s%s\ninode: %d\nmode:  %s (%#o)\nlinks: %d\nuid:   %d\ngid:   %d\nsize:  %d\natime: %s\nmtime: %s\nctime: %s\ngen:   %d\n",
		dfsPrefix, p, a.Ino, modeString(a.Mode), a.Mode&0o7777, a.Nlink, a.Uid, a.Gid, a.Size, ts(a.Atime), ts(a.Mtime), ts(a.Ctime), a.Gen)
	if a.IsRegular() {
		in, err := c.Meta().GetInode(ctx, a.Ino)
		if err != nil {
			return fmt.Errorf("stat %s%s: %w", dfsPrefix, p, err)
		}
		if in.Layer != nil {
			fmt.Fprintf(out, "layer: %s at %d (blob inode %d)\n", in.Layer.Digest, in.Layer.Offset, in.Layer.Blob)
		} else {
			fmt.Fprintf(out, "extents: %d\n", len(in.Extents))
		}
	}
	return nil
}

func mkdirCmd() *cobra.Command {
	var (
		parents bool
		mode    string
	)
	c := &cobra.Command{
		Use:   "mkdir [-p] [-m MODE] dfs:/path...",
		Short: "Make directories in the Dockyard file system (-p: with their parents, no error if they exist)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			m, err := strconv.ParseUint(mode, 8, 32)
			if err != nil || m > 0o7777 {
				return fmt.Errorf("mkdir: mode %q is not an octal permission", mode)
			}
			c, err := newFSClient(cmd)
			if err != nil {
				return fmt.Errorf("mkdir: %w", err)
			}
			for _, arg := range args {
				p, err := mustDFSPath(arg)
				if err != nil {
					return fmt.Errorf("mkdir: %w", err)
				}
				if err := runMkdir(cmd.Context(), c, p, uint32(m), parents); err != nil {
					return err
				}
			}
			return nil
		},
	}
	c.Flags().BoolVarP(&parents, "parents", "p", false, "make missing parents too; an existing directory is no error")
	c.Flags().StringVarP(&mode, "mode", "m", "755", "permissions of the new directories, in octal")
	addMetaFlag(c)
	return c
}

func runMkdir(ctx context.Context, c *fs.Client, p string, mode uint32, parents bool) error {
	var err error
	if parents {
		_, err = c.MkdirAll(ctx, p, mode)
	} else {
		_, err = c.Mkdir(ctx, p, mode)
	}
	if err != nil {
		return fmt.Errorf("mkdir %s%s: %w", dfsPrefix, p, err)
	}
	return nil
}

func rmCmd() *cobra.Command {
	var recursive bool
	c := &cobra.Command{
		Use:   "rm [-r] dfs:/path...",
		Short: "Remove files, symlinks or empty directories (-r: whole trees) from the Dockyard file system",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := newFSClient(cmd)
			if err != nil {
				return fmt.Errorf("rm: %w", err)
			}
			for _, arg := range args {
				p, err := mustDFSPath(arg)
				if err != nil {
					return fmt.Errorf("rm: %w", err)
				}
				if err := runRm(cmd.Context(), c, p, recursive); err != nil {
					return err
				}
			}
			return nil
		},
	}
	c.Flags().BoolVarP(&recursive, "recursive", "r", false, "remove directories and their contents")
	addMetaFlag(c)
	return c
}

func runRm(ctx context.Context, c *fs.Client, p string, recursive bool) error {
	err := c.Remove(ctx, p)
	if recursive && errors.Is(err, syscall.ENOTEMPTY) {
		err = c.RemoveAll(ctx, p)
	}
	if err != nil {
		return fmt.Errorf("rm %s%s: %w", dfsPrefix, p, err)
	}
	return nil
}

// isLocalDir reports whether a local path names an existing directory.
func isLocalDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
