package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// dataLayer writes a gzip layer with /data/a and /data/b, for a container to
// delete and replace.
func dataLayer(t *testing.T) string {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(tw.WriteHeader(&tar.Header{Name: "data/", Typeflag: tar.TypeDir, Mode: 0o755}))
	for _, f := range []string{"a", "b"} {
		must(tw.WriteHeader(&tar.Header{Name: "data/" + f, Typeflag: tar.TypeReg, Mode: 0o644, Size: 2}))
		_, err := tw.Write([]byte(f + "\n"))
		must(err)
	}
	must(tw.Close())
	must(zw.Close())
	p := filepath.Join(t.TempDir(), "data.tar.gz")
	must(os.WriteFile(p, buf.Bytes(), 0o644))
	return p
}

// TestCommitContainer: a container started with run --name writes a file,
// deletes one of the image's and replaces a directory; commit --container
// turns that into a layer on top of the image it ran, and a container of the
// new image sees exactly those changes. A volume the container wrote to is
// committed from dfs:/volumes/NAME. container rm leaves nothing behind.
func TestCommitContainer(t *testing.T) {
	requireRoot(t)
	RequireTool(t, "crane")
	RequireTool(t, "runc")
	needFUSE(t)
	c := SharedCluster(t)
	bin := Binary(t)
	state := t.TempDir()
	ref := c.Registry + "/e2e/commit"
	Run(t, time.Minute, "crane", "append", "--insecure", "-f", busyboxLayer(t), "-t", ref+":bb")
	Run(t, time.Minute, "crane", "append", "--insecure", "-b", ref+":bb", "-f", dataLayer(t), "-t", ref+":base")
	name := "commit-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	vol := name + "-vol"

	Run(t, 2*time.Minute, bin, "run", "--meta", c.Meta, "--state-dir", state, "--name", name, "-v", vol+":/vol", ref+":base", "--",
		"/bin/sh", "-c", "echo new > /etc/new && busybox rm /etc/motd && busybox rm -r /data && busybox mkdir /data && echo c > /data/c && echo in-volume > /vol/v")
	if out := Run(t, time.Minute, bin, "container", "ls", "--state-dir", state); !strings.Contains(out, name) || !strings.Contains(out, "exited") {
		t.Errorf("container ls does not show the kept container:\n%s", out)
	}
	// The name is taken until the container is removed.
	if out, err := RunErr(2*time.Minute, bin, "run", "--meta", c.Meta, "--state-dir", state, "--name", name, ref+":base", "--", "true"); err == nil || !strings.Contains(out, "exists") {
		t.Errorf("a second container with the same name: err %v, output %q", err, out)
	}

	out := Run(t, 2*time.Minute, bin, "commit", "--state-dir", state, "--container", name, ref+":committed",
		"-m", "e2e", "--change", `ENV COMMITTED=yes`)
	if !strings.HasPrefix(out, ref+":committed@sha256:") {
		t.Errorf("commit printed %q, want the pushed reference", out)
	}
	layers := exportLayers(t, ref+":committed")
	if len(layers) != 3 {
		t.Fatalf("the committed image has %d layers, want the base's 2 and one more", len(layers))
	}
	if got, want := strings.Join(layers[2], "\n"), strings.Join([]string{
		"d data/", "- data/.wh..wh..opq 644", "- data/c 644", "d etc/", "- etc/.wh.motd 644", "- etc/new 644",
		"d vol/", // the volume's mount point, made by the runtime, as docker commit keeps it too
	}, "\n"); got != want {
		t.Errorf("the committed layer lists:\n%s\nwant:\n%s", got, want)
	}

	out = Run(t, 2*time.Minute, bin, "run", "--meta", c.Meta, "--state-dir", state, ref+":committed", "--",
		"/bin/sh", "-c", "cat /etc/new; ls /data; test -e /etc/motd && echo motd-still-there; echo $COMMITTED")
	if want := "new\nc\nyes\n"; out != want {
		t.Errorf("a container of the committed image prints %q, want %q", out, want)
	}

	// The volume the container wrote to, committed from the file system.
	Run(t, 2*time.Minute, bin, "commit", "--meta", c.Meta, "dfs:/volumes/"+vol, ref+":volume")
	if got := exportLayers(t, ref+":volume"); len(got) != 1 || strings.Join(got[0], ",") != "- v 644" {
		t.Errorf("the volume's image lists %v, want one layer with v", got)
	}

	Run(t, time.Minute, bin, "container", "rm", "--state-dir", state, name)
	if entries, _ := os.ReadDir(state); len(entries) != 0 {
		t.Errorf("state dir not cleaned: %v", entries)
	}
	if mounts, _ := os.ReadFile("/proc/mounts"); strings.Contains(string(mounts), state) {
		t.Errorf("mounts left behind:\n%s", mounts)
	}
	if out, err := RunErr(time.Minute, bin, "commit", "--state-dir", state, "--container", name, ref+":again"); err == nil || !strings.Contains(out, "no such container") {
		t.Errorf("commit of a removed container: err %v, output %q", err, out)
	}
	Run(t, time.Minute, bin, "rm", "-r", "--meta", c.Meta, "dfs:/volumes/"+vol)
}

// TestCommitDirectory commits a plain directory, without root: crane sees
// the files with their modes, a symlink pointing outside stored as a link,
// a hard link as a link, and the config says what commit was told. Bad input
// fails with one line.
func TestCommitDirectory(t *testing.T) {
	RequireTool(t, "crane")
	c := SharedCluster(t)
	bin := Binary(t)
	dir := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(dir, "site/css"), 0o755))
	must(os.WriteFile(filepath.Join(dir, "site/index.html"), []byte("<h1>hi</h1>\n"), 0o644))
	must(os.WriteFile(filepath.Join(dir, "site/css/x.css"), []byte("h1{}\n"), 0o600))
	must(os.WriteFile(filepath.Join(dir, "run.sh"), []byte("#!/bin/sh\n"), 0o755))
	must(os.Link(filepath.Join(dir, "run.sh"), filepath.Join(dir, "start.sh")))
	for p, mode := range map[string]os.FileMode{"site/index.html": 0o644, "site/css/x.css": 0o600, "run.sh": 0o755} {
		must(os.Chmod(filepath.Join(dir, p), mode)) // whatever the umask
	}
	must(os.Symlink("/etc/shadow", filepath.Join(dir, "secret")))
	must(os.Symlink("../../../../etc", filepath.Join(dir, "site/up")))
	ref := c.Registry + "/e2e/commit-dir:v1"

	Run(t, time.Minute, bin, "commit", dir, ref, "--author", "e2e <e2e@example.com>", "-m", "site",
		"--change", `CMD ["/run.sh"]`, "--change", "EXPOSE 8080", "--source-date-epoch", "1700000000")
	layers := exportLayers(t, ref)
	want := []string{"- run.sh 755", "l secret -> /etc/shadow", "d site/", "d site/css/", "- site/css/x.css 600",
		"- site/index.html 644", "l site/up -> ../../../../etc", "h start.sh -> run.sh"}
	if len(layers) != 1 || strings.Join(layers[0], "\n") != strings.Join(want, "\n") {
		t.Errorf("layers %v, want one with\n%s", layers, strings.Join(want, "\n"))
	}
	// crane export flattens the image as a puller does. It writes
	// directories without the trailing slash and drops a symlink whose
	// relative target climbs above the root (site/up), which the layer
	// itself keeps as it was.
	flat := filepath.Join(t.TempDir(), "flat.tar")
	Run(t, time.Minute, "crane", "export", "--insecure", ref, flat)
	fb, err := os.ReadFile(flat)
	must(err)
	wantFlat := []string{"- run.sh 755", "l secret -> /etc/shadow", "d site", "d site/css", "- site/css/x.css 600",
		"- site/index.html 644", "h start.sh -> run.sh"}
	if got := tarListing(t, fb); strings.Join(got, "\n") != strings.Join(wantFlat, "\n") {
		t.Errorf("crane export lists:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(wantFlat, "\n"))
	}
	var cfg struct {
		Author       string
		Created      time.Time
		OS           string
		Architecture string
		Config       struct {
			Cmd          []string
			ExposedPorts map[string]struct{}
		}
		History []struct {
			Comment   string
			CreatedBy string `json:"created_by"`
		}
	}
	must(json.Unmarshal([]byte(Run(t, time.Minute, "crane", "config", "--insecure", ref)), &cfg))
	if cfg.Author != "e2e <e2e@example.com>" || !cfg.Created.Equal(time.Unix(1700000000, 0)) || cfg.OS != "linux" ||
		fmt.Sprint(cfg.Config.Cmd) != "[/run.sh]" || len(cfg.Config.ExposedPorts) != 1 || len(cfg.History) != 1 || cfg.History[0].Comment != "site" {
		t.Errorf("config %+v", cfg)
	}
	// The same tree and epoch give the same image.
	d1 := Run(t, time.Minute, "crane", "digest", "--insecure", ref)
	Run(t, time.Minute, bin, "commit", dir, c.Registry+"/e2e/commit-dir:v2", "--author", "e2e <e2e@example.com>", "-m", "site",
		"--change", `CMD ["/run.sh"]`, "--change", "EXPOSE 8080", "--source-date-epoch", "1700000000")
	if d2 := Run(t, time.Minute, "crane", "digest", "--insecure", c.Registry+"/e2e/commit-dir:v2"); d1 != d2 {
		t.Errorf("two commits of one tree: %s and %s", d1, d2)
	}

	// --from on top of the first, in another repository: its layer is mounted.
	Run(t, time.Minute, bin, "commit", filepath.Join(dir, "site"), c.Registry+"/e2e/commit-dir2:v1", "--from", ref)
	if got := exportLayers(t, c.Registry+"/e2e/commit-dir2:v1"); len(got) != 2 || !strings.Contains(strings.Join(got[1], ","), "- index.html 644") {
		t.Errorf("--from image layers %v", got)
	}

	for _, tc := range []struct {
		args []string
		msg  string
	}{
		{[]string{filepath.Join(dir, "missing"), ref}, "no such directory"},
		{[]string{dir, "Not/A//Ref"}, "invalid repository name"},
		{[]string{dir, "127.0.0.1:1/e2e/x:1"}, "connection refused"},
		{[]string{dir, ref, "--change", "RUN true"}, "unsupported instruction"},
		{[]string{dir, ref, "--from", c.Registry + "/e2e/nope:1"}, "image not found"},
	} {
		out, err := RunErr(time.Minute, bin, append([]string{"commit"}, tc.args...)...)
		if err == nil || !strings.Contains(out, tc.msg) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("commit %v: err %v, output %q; want one line saying %q", tc.args, err, out, tc.msg)
		}
	}
}

// exportLayers lists each layer of ref, fetched with crane, in tar order:
// "TYPE NAME [MODE] [-> LINK]" per entry, TYPE being - d l h for files,
// directories, symlinks and hard links (the typeflag otherwise); modes are
// shown for regular files.
func exportLayers(t *testing.T, ref string) [][]string {
	t.Helper()
	var m struct {
		Layers []struct{ Digest string }
	}
	if err := json.Unmarshal([]byte(Run(t, time.Minute, "crane", "manifest", "--insecure", ref)), &m); err != nil {
		t.Fatal(err)
	}
	repo, _, _ := strings.Cut(ref, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	var out [][]string
	for _, l := range m.Layers {
		blob := Run(t, time.Minute, "crane", "blob", "--insecure", repo+"@"+l.Digest)
		out = append(out, tarListing(t, []byte(blob)))
	}
	return out
}

// tarListing lists a tar, gzip-compressed or not.
func tarListing(t *testing.T, blob []byte) []string {
	t.Helper()
	var r io.Reader = bytes.NewReader(blob)
	if bytes.HasPrefix(blob, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(r)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	tr := tar.NewReader(r)
	var out []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		switch h.Typeflag {
		case tar.TypeReg:
			out = append(out, fmt.Sprintf("- %s %o", h.Name, h.Mode))
		case tar.TypeDir:
			out = append(out, "d "+h.Name)
		case tar.TypeSymlink:
			out = append(out, "l "+h.Name+" -> "+h.Linkname)
		case tar.TypeLink:
			out = append(out, "h "+h.Name+" -> "+h.Linkname)
		default:
			out = append(out, fmt.Sprintf("%c %s", h.Typeflag, h.Name))
		}
	}
	return out
}
