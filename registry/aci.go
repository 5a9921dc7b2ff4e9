package registry

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/dockyard/dockyard/converter"
)

// ACIs are built on request from the image's layers: every layer is indexed
// by the converter in one streaming pass (which refuses hostile entries:
// "..", absolute names, writes through symlinks, hard links leaving the
// layer), the indexes are merged with whiteouts and opaque directories
// applied, and the merged tree is written as rootfs/ behind the manifest.
// Nothing is sent before the whole image has been indexed and merged, so an
// image that cannot be converted fails with an error status, never with a
// truncated archive.

// aciVersion is the appc spec version the manifests declare (its last
// release).
const aciVersion = "0.8.11"

// maxConfigSize bounds an image config read for an ACI manifest.
const maxConfigSize = 8 << 20

// aciSpanCacheBytes bounds the decompressed layer spans one ACI request
// keeps while it reads files out of compressed layers.
const aciSpanCacheBytes = 64 << 20

// appcArches maps appc arch labels to OCI platforms (appc spells
// architectures as uname does; OCI as Go does).
var appcArches = map[string]converter.Platform{
	"amd64":   {Architecture: "amd64"},
	"i386":    {Architecture: "386"},
	"aarch64": {Architecture: "arm64"},
	"armv6l":  {Architecture: "arm", Variant: "v6"},
	"armv7l":  {Architecture: "arm", Variant: "v7"},
	"ppc64":   {Architecture: "ppc64"},
	"ppc64le": {Architecture: "ppc64le"},
	"s390x":   {Architecture: "s390x"},
	"riscv64": {Architecture: "riscv64"},
}

// appcOSes are the operating systems an ACI may be asked for.
var appcOSes = map[string]bool{"linux": true, "freebsd": true}

// acIdentifierRe is the appc spec's AC Identifier grammar (label, port and
// annotation names).
var acIdentifierRe = regexp.MustCompile(`^[a-z0-9]+([-._~/][a-z0-9]+)*$`)

// envNameRe is what appc allows as an environment variable name.
var envNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// platformFor maps appc os and arch labels to an OCI platform.
func platformFor(os, arch string) (converter.Platform, error) {
	p, ok := appcArches[arch]
	if !appcOSes[os] || !ok {
		return converter.Platform{}, ErrACIUnknown.With("os %q, arch %q: supported are os linux or freebsd and arch %s",
			os, arch, strings.Join(sortedKeys(appcArches), ", "))
	}
	p.OS = os
	return p, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// aciRequest names one ACI: the AC name the client discovered (its host
// part is how the client reached the registry) and the labels.
type aciRequest struct {
	acName  string // e.g. registry.example.com/team/app
	repo    string // team/app
	version string // the tag
	os      string
	arch    string
}

// aciLayer is one indexed layer and the blob its file bytes come from.
type aciLayer struct {
	blob BlobReader
	idx  *converter.Index
	rd   *converter.LayerReader
}

// aciImage is an image resolved for one platform and merged, ready to be
// written.
type aciImage struct {
	req            aciRequest
	manifestDigest Digest
	config         ocispec.Image
	layers         []aciLayer
	tree           *converter.Tree
}

// Close releases the layer blobs.
func (a *aciImage) Close() {
	for _, l := range a.layers {
		l.blob.Close()
	}
}

// prepareACI resolves the tag and platform, reads the config and indexes
// and merges the layers. The caller closes the result.
func (r *Registry) prepareACI(ctx context.Context, q aciRequest) (*aciImage, error) {
	plat, err := platformFor(q.os, q.arch)
	if err != nil {
		return nil, err
	}
	if !ValidTag(q.version) {
		return nil, ErrACIUnknown.With("version %q is not a valid tag", q.version)
	}
	ok, err := r.rec.repoExists(ctx, q.repo)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, ErrNameUnknown.With("%s", q.repo)
	}
	d, err := r.rec.tag(ctx, q.repo, q.version)
	if err != nil {
		return nil, err
	}
	m, err := r.rec.manifest(ctx, q.repo, d)
	if err != nil {
		return nil, err
	}
	body, mt := m.Body, m.MediaType
	if converter.IsIndex(body, mt) {
		desc, err := converter.SelectPlatform(body, plat)
		if errors.Is(err, converter.ErrNoPlatform) {
			return nil, ErrACIUnknown.With("%s:%s has no image for %s", q.repo, q.version, plat)
		} else if err != nil {
			return nil, ErrManifestInvalid.Wrap(err, "%s:%s", q.repo, q.version)
		}
		if d, err = ParseDigest(desc.Digest.String()); err != nil {
			return nil, err
		}
		child, err := r.rec.manifest(ctx, q.repo, d)
		if err != nil {
			return nil, err
		}
		body, mt = child.Body, child.MediaType
	}
	man, err := converter.ParseImageManifest(body, mt)
	if errors.Is(err, converter.ErrMediaType) {
		return nil, ErrACIUnknown.With("%s:%s is not a container image (%v)", q.repo, q.version, err)
	} else if err != nil {
		return nil, err
	}
	img := &aciImage{req: q, manifestDigest: d}
	if err := r.readConfig(ctx, man.Config.Digest.String(), &img.config); err != nil {
		return nil, err
	}
	if c := img.config; c.OS != "" && (c.OS != plat.OS || c.Architecture != plat.Architecture ||
		(plat.Variant != "" && c.Variant != "" && c.Variant != plat.Variant)) {
		got := converter.Platform{OS: c.OS, Architecture: c.Architecture, Variant: c.Variant}
		return nil, ErrACIUnknown.With("%s:%s is %s, not %s", q.repo, q.version, got, plat)
	}
	ok = false
	defer func() {
		if !ok {
			img.Close()
		}
	}()
	cache := converter.NewSpanCache(aciSpanCacheBytes)
	var merge []converter.ImageLayer
	for _, l := range man.Layers {
		ld, err := ParseDigest(l.Digest.String())
		if err != nil {
			return nil, err
		}
		br, err := r.blobs.Open(ctx, ld)
		if errors.Is(err, ErrBlobNotFound) {
			return nil, ErrBlobUnknown.With("layer %s of %s:%s is missing from storage", ld, q.repo, q.version)
		} else if err != nil {
			return nil, err
		}
		layer := aciLayer{blob: br}
		img.layers = append(img.layers, layer)
		idx, err := converter.BuildIndex(ctx, br, br.Size(), ld.String(), converter.Options{})
		if err != nil {
			return nil, ErrACIInvalid.Wrap(err, "layer %s", ld)
		}
		img.layers[len(img.layers)-1].idx = idx
		img.layers[len(img.layers)-1].rd = converter.NewLayerReader(br, idx, cache)
		merge = append(merge, converter.ImageLayer{Index: idx})
	}
	if img.tree, err = converter.MergeLayers(merge); err != nil {
		return nil, ErrACIInvalid.Wrap(err, "merging layers")
	}
	ok = true
	return img, nil
}

func (r *Registry) readConfig(ctx context.Context, digest string, v any) error {
	d, err := ParseDigest(digest)
	if err != nil {
		return err
	}
	br, err := r.blobs.Open(ctx, d)
	if errors.Is(err, ErrBlobNotFound) {
		return ErrBlobUnknown.With("image config %s is missing from storage", d)
	} else if err != nil {
		return err
	}
	defer br.Close()
	b, err := readLimited(io.NewSectionReader(br, 0, br.Size()), maxConfigSize, "image config")
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return ErrACIInvalid.With("image config %s: %v", d, err)
	}
	return nil
}

// acNameValue is the appc spec's {name, value} pair (labels, environment,
// annotations).
type acNameValue struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

type aciPort struct {
	Name     string `json:"name"`
	Protocol string `json:"protocol"`
	Port     uint   `json:"port"`
	Count    uint   `json:"count,omitempty"`
}

type aciApp struct {
	Exec             []string      `json:"exec"`
	User             string        `json:"user"`
	Group            string        `json:"group"`
	WorkingDirectory string        `json:"workingDirectory,omitempty"`
	Environment      []acNameValue `json:"environment,omitempty"`
	Ports            []aciPort     `json:"ports,omitempty"`
}

// aciManifest is the appc image manifest.
type aciManifest struct {
	ACKind      string        `json:"acKind"`
	ACVersion   string        `json:"acVersion"`
	Name        string        `json:"name"`
	Labels      []acNameValue `json:"labels"`
	App         *aciApp       `json:"app,omitempty"`
	Annotations []acNameValue `json:"annotations,omitempty"`
}

// manifest builds the appc image manifest from the image config.
func (a *aciImage) manifest() (*aciManifest, error) {
	c := a.config.Config
	m := &aciManifest{
		ACKind:    "ImageManifest",
		ACVersion: aciVersion,
		Name:      a.req.acName,
		Labels: []acNameValue{
			{"version", a.req.version},
			{"os", a.req.os},
			{"arch", a.req.arch},
		},
	}
	// Without an absolute executable there is no valid app section; the
	// image can still serve as a dependency of another ACI.
	if exec := a.resolveExec(append(append([]string(nil), c.Entrypoint...), c.Cmd...), c.Env); exec != nil {
		app := &aciApp{Exec: exec, WorkingDirectory: c.WorkingDir}
		var err error
		if app.User, app.Group, err = a.userGroup(c.User); err != nil {
			return nil, err
		}
		for _, kv := range c.Env {
			k, v, _ := strings.Cut(kv, "=")
			if envNameRe.MatchString(k) { // appc allows no other names
				app.Environment = append(app.Environment, acNameValue{k, v})
			}
		}
		app.Ports = ports(c.ExposedPorts)
		m.App = app
	}
	if a.config.Created != nil {
		m.Annotations = append(m.Annotations, acNameValue{"created", a.config.Created.UTC().Format(time.RFC3339Nano)})
	}
	if a.config.Author != "" {
		m.Annotations = append(m.Annotations, acNameValue{"authors", a.config.Author})
	}
	m.Annotations = append(m.Annotations, acNameValue{"dockyard/manifest-digest", a.manifestDigest.String()})
	for _, k := range sortedKeys(c.Labels) {
		if acIdentifierRe.MatchString(k) && k != "created" && k != "authors" && !strings.HasPrefix(k, "dockyard/") {
			m.Annotations = append(m.Annotations, acNameValue{k, c.Labels[k]})
		}
	}
	return m, nil
}

// ports turns "80/tcp" and "8000-8010/udp" into appc ports, by number.
func ports(exposed map[string]struct{}) []aciPort {
	var out []aciPort
	for p := range exposed {
		num, proto, ok := strings.Cut(p, "/")
		if !ok {
			proto = "tcp"
		}
		lo, hi, isRange := strings.Cut(num, "-")
		first, err := strconv.ParseUint(lo, 10, 16)
		if err != nil || first == 0 {
			continue // docker refuses such ports when building
		}
		port := aciPort{Name: lo + "-" + proto, Protocol: proto, Port: uint(first)}
		if isRange {
			last, err := strconv.ParseUint(hi, 10, 16)
			if err != nil || last < first {
				continue
			}
			port.Name = lo + "-" + hi + "-" + proto
			port.Count = uint(last - first + 1)
		}
		out = append(out, port)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Port != out[j].Port {
			return out[i].Port < out[j].Port
		}
		return out[i].Protocol < out[j].Protocol
	})
	return out
}

// resolveExec makes argv[0] absolute the way a shell would find it, on the
// image's PATH in the merged tree (appc requires an absolute executable).
// It returns nil when there is nothing to run or it is not in the image.
func (a *aciImage) resolveExec(argv, env []string) []string {
	if len(argv) == 0 || argv[0] == "" {
		return nil
	}
	if strings.HasPrefix(argv[0], "/") {
		return argv
	}
	pathVar := "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathVar = v
		}
	}
	for _, dir := range strings.Split(pathVar, ":") {
		if !strings.HasPrefix(dir, "/") {
			continue
		}
		p := path.Join(dir, argv[0])
		if n := a.resolve(p, 0); n != nil && n.Mode()&syscall.S_IFMT == syscall.S_IFREG {
			return append([]string{p}, argv[1:]...)
		}
	}
	return nil
}

// resolve looks p up in the merged tree as the kernel would inside the
// container: symlinks followed (at most 40), ".." stopping at the root.
func (a *aciImage) resolve(p string, depth int) *converter.Node {
	if depth > 40 {
		return nil
	}
	n := a.tree.Root()
	var walked []string
	comps := strings.Split(strings.Trim(path.Clean("/"+p), "/"), "/")
	for i, c := range comps {
		if c == "" {
			continue
		}
		var next *converter.Node
		for _, ch := range n.Children() {
			if ch.Name == c {
				next = ch
				break
			}
		}
		if next == nil {
			return nil
		}
		if next.Mode()&syscall.S_IFMT == syscall.S_IFLNK {
			target := next.Entry.Linkname
			if !strings.HasPrefix(target, "/") {
				target = "/" + path.Join(append(walked, target)...)
			}
			rest := strings.Join(comps[i+1:], "/")
			return a.resolve(path.Join(target, rest), depth+1)
		}
		walked = append(walked, c)
		n = next
	}
	return n
}

// userGroup maps the image's "user[:group]" to appc's user and group. A
// user without a group gets its primary group from the image's
// /etc/passwd, as docker does, and group 0 when it is not listed there.
func (a *aciImage) userGroup(user string) (string, string, error) {
	if user == "" {
		return "0", "0", nil
	}
	u, g, ok := strings.Cut(user, ":")
	if ok && g != "" {
		return u, g, nil
	}
	gid, err := a.primaryGroup(u)
	if err != nil {
		return "", "", err
	}
	return u, gid, nil
}

func (a *aciImage) primaryGroup(user string) (string, error) {
	n := a.resolve("/etc/passwd", 0)
	if n == nil || n.Mode()&syscall.S_IFMT != syscall.S_IFREG {
		return "0", nil
	}
	e := n.Entry
	const maxPasswd = 4 << 20
	if e.Size > maxPasswd {
		return "", ErrACIInvalid.With("/etc/passwd is larger than %d bytes", maxPasswd)
	}
	sc := bufio.NewScanner(a.layers[n.Layer].rd.File(e))
	sc.Buffer(nil, maxPasswd)
	for sc.Scan() {
		f := strings.Split(sc.Text(), ":")
		if len(f) >= 4 && (f[0] == user || f[2] == user) {
			return f[3], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("reading /etc/passwd: %w", err)
	}
	return "0", nil
}

// manifestJSON is the encoded appc manifest.
func (a *aciImage) manifestJSON() ([]byte, error) {
	m, err := a.manifest()
	if err != nil {
		return nil, err
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding ACI manifest: %w", err)
	}
	return mb, nil
}

// writeACI writes the ACI: the manifest mb, then rootfs/ and the merged
// tree, parents before children and siblings by name, as an uncompressed
// tar.
func (a *aciImage) writeACI(w io.Writer, mb []byte) error {
	tw := tar.NewWriter(w)
	epoch := time.Unix(0, 0)
	if a.config.Created != nil {
		epoch = *a.config.Created
	}
	if err := tw.WriteHeader(&tar.Header{Name: "manifest", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(mb)),
		ModTime: epoch, Format: tar.FormatPAX}); err != nil {
		return err
	}
	if _, err := tw.Write(mb); err != nil {
		return err
	}
	rootHdr := &tar.Header{Name: "rootfs/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX}
	if e := a.tree.Root().Entry; e != nil {
		fillHeader(rootHdr, e)
	}
	if err := tw.WriteHeader(rootHdr); err != nil {
		return err
	}
	// written maps an inode (its first tar entry) to the path it was
	// written at, so later names of it become hard links.
	written := map[*converter.Entry]string{}
	var werr error
	a.tree.Walk(func(p string, n *converter.Node) {
		if werr == nil {
			werr = a.writeNode(tw, p, n, written)
		}
	})
	if werr != nil {
		return werr
	}
	return tw.Close()
}

func (a *aciImage) writeNode(tw *tar.Writer, p string, n *converter.Node, written map[*converter.Entry]string) error {
	name := "rootfs/" + p
	hdr := &tar.Header{Name: name, Mode: 0o755, Typeflag: tar.TypeDir, ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
	e := n.Entry
	if e == nil { // a parent no layer listed
		hdr.Name += "/"
		return tw.WriteHeader(hdr)
	}
	fillHeader(hdr, e)
	inode := e
	if e.IsHardLink() {
		inode = &a.layers[n.Layer].idx.Entries[e.LinkIdx-1]
	}
	if first, ok := written[inode]; ok {
		hdr.Typeflag, hdr.Linkname, hdr.Size = tar.TypeLink, first, 0
		return tw.WriteHeader(hdr)
	}
	if e.Type() != syscall.S_IFDIR {
		written[inode] = name
	}
	switch e.Type() {
	case syscall.S_IFDIR:
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
	case syscall.S_IFREG:
		hdr.Typeflag, hdr.Size = tar.TypeReg, e.Size
	case syscall.S_IFLNK:
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, symlinkTarget(p, e.Linkname)
	case syscall.S_IFCHR:
		hdr.Typeflag, hdr.Devmajor, hdr.Devminor = tar.TypeChar, int64(e.Devmajor), int64(e.Devminor)
	case syscall.S_IFBLK:
		hdr.Typeflag, hdr.Devmajor, hdr.Devminor = tar.TypeBlock, int64(e.Devmajor), int64(e.Devminor)
	case syscall.S_IFIFO:
		hdr.Typeflag = tar.TypeFifo
	default:
		return ErrACIInvalid.With("%s: file type %o", p, e.Type())
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("writing %s: %w", p, err)
	}
	if hdr.Typeflag == tar.TypeReg && e.Size > 0 {
		if _, err := io.Copy(tw, a.layers[n.Layer].rd.File(e)); err != nil {
			return fmt.Errorf("writing %s: %w", p, err)
		}
	}
	return nil
}

// fillHeader copies an entry's attributes into a tar header.
func fillHeader(h *tar.Header, e *converter.Entry) {
	h.Mode = int64(e.Mode & 0o7777)
	h.Uid, h.Gid = int(e.Uid), int(e.Gid)
	h.ModTime = time.Unix(0, e.Mtime)
	for _, k := range sortedKeys(e.Xattrs) {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+k] = string(e.Xattrs[k])
	}
}

// symlinkTarget keeps a symlink's meaning inside the container while making
// sure no relative target climbs out of rootfs/ when the archive is
// unpacked by a tool that does not confine it: a relative target with more
// ".." than the link has parents means, under the container's root, the
// same as the absolute path it lexically resolves to, so it is written that
// way. Absolute targets are left alone: in an ACI, as in any image, they
// are resolved against the image's root.
func symlinkTarget(linkPath, target string) string {
	if strings.HasPrefix(target, "/") {
		return target
	}
	depth := strings.Count(linkPath, "/") // directories above the link, below the root
	for _, c := range strings.Split(target, "/") {
		switch c {
		case "..":
			depth--
		case "", ".":
		default:
			depth++
		}
		if depth < 0 {
			return path.Join("/", path.Dir("/"+linkPath), target)
		}
	}
	return target
}
