package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// entry is one tar entry of a test layer.
type entry struct {
	name     string
	typ      byte
	mode     int64
	uid, gid int
	body     []byte
	link     string
	major    int64
	minor    int64
	xattrs   map[string]string
}

func dir(name string) entry { return entry{name: name, typ: tar.TypeDir, mode: 0o755} }
func file(name, body string) entry {
	return entry{name: name, typ: tar.TypeReg, mode: 0o644, body: []byte(body)}
}

// buildTar writes entries as a tar stream (PAX where xattrs need it).
func buildTar(t *testing.T, entries []entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: e.mode, Uid: e.uid, Gid: e.gid, Linkname: e.link,
			Devmajor: e.major, Devminor: e.minor, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if len(e.xattrs) > 0 {
			h.PAXRecords = map[string]string{}
			for k, v := range e.xattrs {
				h.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		if e.typ != tar.TypeReg {
			h.Size = 0
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatalf("tar header %s: %v", e.name, err)
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write(e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// layer is a compressed layer ready to push.
type layer struct {
	mediaType string
	blob      []byte
	diffID    digest.Digest
}

func gzipLayer(t *testing.T, tarBytes []byte) layer {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(tarBytes)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return layer{ocispec.MediaTypeImageLayerGzip, buf.Bytes(), digest.FromBytes(tarBytes)}
}

func zstdLayer(t *testing.T, tarBytes []byte) layer {
	t.Helper()
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	zw.Write(tarBytes)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return layer{ocispec.MediaTypeImageLayerZstd, buf.Bytes(), digest.FromBytes(tarBytes)}
}

// pushImage pushes layers and a config with the plain OCI API (monolithic
// blob uploads, manifest PUT) and returns the manifest digest.
func pushImage(t *testing.T, registry, repo, tag string, layers []layer, cfg ocispec.ImageConfig) digest.Digest {
	t.Helper()
	img := ocispec.Image{Config: cfg, RootFS: ocispec.RootFS{Type: "layers"}}
	img.OS, img.Architecture = "linux", "amd64"
	m := ocispec.Manifest{MediaType: ocispec.MediaTypeImageManifest}
	m.SchemaVersion = 2
	for _, l := range layers {
		img.RootFS.DiffIDs = append(img.RootFS.DiffIDs, l.diffID)
		m.Layers = append(m.Layers, pushBlob(t, registry, repo, l.mediaType, l.blob))
	}
	cb, _ := json.Marshal(img)
	m.Config = pushBlob(t, registry, repo, ocispec.MediaTypeImageConfig, cb)
	mb, _ := json.Marshal(m)
	req, _ := http.NewRequest(http.MethodPut, fmt.Sprintf("http://%s/v2/%s/manifests/%s", registry, repo, tag), bytes.NewReader(mb))
	req.Header.Set("Content-Type", ocispec.MediaTypeImageManifest)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("manifest PUT %s:%s: %s %s", repo, tag, resp.Status, b)
	}
	return digest.FromBytes(mb)
}

func pushBlob(t *testing.T, registry, repo, mediaType string, data []byte) ocispec.Descriptor {
	t.Helper()
	d := digest.FromBytes(data)
	url := fmt.Sprintf("http://%s/v2/%s/blobs/uploads/?digest=%s", registry, repo, d)
	resp, err := http.Post(url, "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("blob upload %s: %s %s", d, resp.Status, b)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(data))}
}

func digestOf(b []byte) digest.Digest { return digest.FromBytes(b) }
