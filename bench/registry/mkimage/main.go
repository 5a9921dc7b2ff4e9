// Command mkimage writes the registry benchmark's test image as an OCI image
// layout: N layers, each a tar holding one file of random (incompressible)
// bytes, gzip-framed at compression level 0. Real layers are gzip, and
// clients such as skopeo compress a layer they are given uncompressed, which
// would make the benchmark measure the client's deflate instead of the
// registries; stored deflate blocks cost nothing to write.
package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"
)

func main() {
	out := flag.String("out", "", "directory to write the OCI layout to")
	layers := flag.Int("layers", 8, "number of layers")
	layerMB := flag.Int64("layer-mb", 128, "size of each layer's file, MiB")
	seed := flag.Uint64("seed", 1, "random seed (a different seed gives different digests)")
	flag.Parse()
	if *out == "" {
		fmt.Fprintln(os.Stderr, "mkimage: -out is required")
		os.Exit(2)
	}
	if err := run(*out, *layers, *layerMB<<20, *seed); err != nil {
		fmt.Fprintln(os.Stderr, "mkimage:", err)
		os.Exit(1)
	}
}

type desc struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// blobWriter writes a blob to a temporary file while hashing it, then
// renames it to its digest.
type blobWriter struct {
	dir string
	f   *os.File
	h   hash.Hash
	n   int64
}

func newBlob(dir string) (*blobWriter, error) {
	f, err := os.CreateTemp(dir, "tmp-")
	if err != nil {
		return nil, err
	}
	return &blobWriter{dir: dir, f: f, h: sha256.New()}, nil
}

func (b *blobWriter) Write(p []byte) (int, error) {
	b.h.Write(p)
	n, err := b.f.Write(p)
	b.n += int64(n)
	return n, err
}

func (b *blobWriter) finish(mediaType string) (desc, error) {
	if err := b.f.Chmod(0o644); err != nil {
		return desc{}, err
	}
	if err := b.f.Close(); err != nil {
		return desc{}, err
	}
	hx := hex.EncodeToString(b.h.Sum(nil))
	if err := os.Rename(b.f.Name(), filepath.Join(b.dir, hx)); err != nil {
		return desc{}, err
	}
	return desc{MediaType: mediaType, Digest: "sha256:" + hx, Size: b.n}, nil
}

func writeJSON(dir, mediaType string, v any) (desc, error) {
	b, err := newBlob(dir)
	if err != nil {
		return desc{}, err
	}
	if err := json.NewEncoder(b).Encode(v); err != nil {
		return desc{}, err
	}
	return b.finish(mediaType)
}

func run(out string, layers int, size int64, seed uint64) error {
	dir := filepath.Join(out, "blobs", "sha256")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)})
	var ls []desc
	var diffIDs []string
	for i := range layers {
		b, err := newBlob(dir)
		if err != nil {
			return err
		}
		zw, err := gzip.NewWriterLevel(b, gzip.NoCompression)
		if err != nil {
			return err
		}
		diff := sha256.New()
		tw := tar.NewWriter(io.MultiWriter(zw, diff))
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("data/layer-%d.bin", i), Mode: 0o644, Size: size, ModTime: time.Unix(1_700_000_000, 0)}); err != nil {
			return err
		}
		if _, err := io.CopyN(tw, rng, size); err != nil {
			return err
		}
		if err := tw.Close(); err != nil {
			return err
		}
		if err := zw.Close(); err != nil {
			return err
		}
		d, err := b.finish("application/vnd.oci.image.layer.v1.tar+gzip")
		if err != nil {
			return err
		}
		ls = append(ls, d)
		diffIDs = append(diffIDs, "sha256:"+hex.EncodeToString(diff.Sum(nil)))
	}
	cfg, err := writeJSON(dir, "application/vnd.oci.image.config.v1+json", map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": diffIDs},
		"config": map[string]any{},
	})
	if err != nil {
		return err
	}
	man, err := writeJSON(dir, "application/vnd.oci.image.manifest.v1+json", map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": cfg, "layers": ls,
	})
	if err != nil {
		return err
	}
	man.Annotations = map[string]string{"org.opencontainers.image.ref.name": "bench"}
	idx, err := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []desc{man}})
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "index.json"), idx, 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(out, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`+"\n"), 0o644)
}
