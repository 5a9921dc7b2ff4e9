package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/dockyard/dockyard/fs"
)

func init() { subcommands = append(subcommands, cpCmd) }

func cpCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy a file into, out of or within the Dockyard file system (dfs:/path; - is stdin/stdout)",
		Long: "Copy one file. Either side may be dfs:/path; a local side may be - for stdin or stdout. " +
			"When DST is an existing directory (or ends in /) the file keeps its name. " +
			"The copy streams: memory stays bounded whatever the file's size.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, srcDFS := dfsPath(args[0])
			_, dstDFS := dfsPath(args[1])
			if !srcDFS && !dstDFS {
				return fmt.Errorf("cp: neither %q nor %q is a dfs:/path; use the system's cp for local copies", args[0], args[1])
			}
			c, err := newFSClient(cmd)
			if err != nil {
				return fmt.Errorf("cp: %w", err)
			}
			return runCp(cmd.Context(), c, args[0], args[1], cmd.InOrStdin(), cmd.OutOrStdout())
		},
	}
	addMetaFlag(c)
	return c
}

// cpBuf is the size of the reads cp issues on a DFS source: one default
// chunk, so each read is served by whole-chunk shard requests.
const cpBuf = fs.DefaultChunkSize

func runCp(ctx context.Context, c *fs.Client, src, dst string, stdin io.Reader, stdout io.Writer) error {
	fail := func(err error) error { return fmt.Errorf("cp %s %s: %w", src, dst, err) }

	// Open the source as a stream plus the name and mode it gives a target.
	var (
		r    io.Reader
		name string
		mode uint32 = 0o644
	)
	if sp, ok := dfsPath(src); ok {
		sp, err := mustDFSPath(dfsPrefix + sp)
		if err != nil {
			return fail(err)
		}
		f, err := c.OpenPath(ctx, sp)
		if err != nil {
			return fail(err)
		}
		defer f.Close()
		r = &fileReader{ctx: ctx, f: f}
		name, mode = path.Base(sp), f.Attr().Mode&0o7777
	} else if src == "-" {
		r, name = stdin, ""
	} else {
		lf, err := os.Open(src)
		if err != nil {
			return fail(err)
		}
		defer lf.Close()
		st, err := lf.Stat()
		if err != nil {
			return fail(err)
		}
		if st.IsDir() {
			return fail(fmt.Errorf("%s is a directory: %w", src, syscall.EISDIR))
		}
		r, name, mode = lf, filepath.Base(src), uint32(st.Mode().Perm())
	}

	if dp, ok := dfsPath(dst); ok {
		if !strings.HasPrefix(dp, "/") {
			return fail(fmt.Errorf("%q: want dfs:/absolute/path", dst))
		}
		target := path.Clean(dp)
		intoDir := strings.HasSuffix(dp, "/")
		if !intoDir {
			if a, err := c.Stat(ctx, target); err == nil && a.IsDir() {
				intoDir = true
			}
		}
		if intoDir {
			if name == "" {
				return fail(errors.New("copying stdin into a directory needs a file name"))
			}
			target = path.Join(target, name)
		}
		if _, err := c.WriteFile(ctx, target, r, mode); err != nil {
			return fail(err)
		}
		return nil
	}

	if dst == "-" {
		if _, err := io.Copy(stdout, r); err != nil {
			return fail(err)
		}
		return nil
	}
	target := dst
	if strings.HasSuffix(dst, "/") || isLocalDir(dst) {
		target = filepath.Join(dst, name)
	}
	out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, os.FileMode(mode))
	if err != nil {
		return fail(err)
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return fail(err)
	}
	if err := out.Close(); err != nil {
		return fail(err)
	}
	return nil
}

// fileReader streams a DFS file sequentially in large reads, so the client's
// read-ahead sees one sequential reader and each request covers whole
// chunks.
type fileReader struct {
	ctx context.Context
	f   *fs.File
	off int64
	buf []byte
	pos int
}

func (r *fileReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if r.pos == len(r.buf) {
		if r.buf == nil {
			r.buf = make([]byte, cpBuf)
		}
		n, err := r.f.ReadAt(r.buf[:cap(r.buf)], r.off)
		r.buf, r.pos = r.buf[:n], 0
		r.off += int64(n)
		if n == 0 {
			if err == nil {
				err = io.EOF
			}
			return 0, err
		}
		if err != nil && err != io.EOF {
			return 0, err
		}
	}
	n := copy(p, r.buf[r.pos:])
	r.pos += n
	return n, nil
}
