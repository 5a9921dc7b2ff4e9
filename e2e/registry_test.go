package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// registryAddr is the registry under test: $DOCKYARD_REGISTRY, or the shared
// `dockyard serve`.
func registryAddr(t *testing.T) string {
	t.Helper()
	if a := os.Getenv("DOCKYARD_REGISTRY"); a != "" {
		return a
	}
	return SharedCluster(t).Registry
}

// uniqueRepo names a repository no earlier run used, so tests can share a
// long-lived registry.
func uniqueRepo(kind string) string {
	return "e2e/" + kind + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
}

// TestRegistryConformance runs the OCI distribution conformance suite
// (every workflow and data option of spec 1.1: sha512, referrers, subject)
// against the registry and requires zero failures. The report stays in
// $DOCKYARD_CONFORMANCE_RESULTS when set.
func TestRegistryConformance(t *testing.T) {
	bin := os.Getenv("DOCKYARD_CONFORMANCE_BIN")
	if bin == "" {
		Missing(t, "DOCKYARD_CONFORMANCE_BIN is not set (the OCI conformance suite binary)")
	}
	if _, err := os.Stat(bin); err != nil {
		Missing(t, "conformance binary: %v", err)
	}
	reg := registryAddr(t)
	results := os.Getenv("DOCKYARD_CONFORMANCE_RESULTS")
	if results == "" {
		results = t.TempDir()
	}
	if err := os.MkdirAll(results, 0o755); err != nil {
		t.Fatal(err)
	}
	repo := uniqueRepo("conformance")
	cmd := exec.Command(bin)
	cmd.Dir = results
	cmd.Env = append(os.Environ(),
		"OCI_REGISTRY="+reg, "OCI_TLS=disabled",
		"OCI_REPO1="+repo+"/repo1", "OCI_REPO2="+repo+"/repo2",
		"OCI_VERSION=1.1", "OCI_RESULTS_DIR="+results)
	out, err := cmd.CombinedOutput()
	// The summary is the CI's record of the run, pass or fail.
	t.Logf("conformance report in %s\n%s", results, out)
	if err != nil {
		t.Fatalf("conformance suite failed: %v", err)
	}
	junit, err := os.ReadFile(filepath.Join(results, "junit.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(junit, []byte(`failures="0"`)) || !bytes.Contains(junit, []byte(`errors="0"`)) {
		t.Fatalf("junit.xml reports failures")
	}
}

// rootfsTar writes a minimal root file system: a static busybox as
// /bin/busybox and /bin/sh.
func rootfsTar(t *testing.T) string {
	t.Helper()
	bb := RequireTool(t, "busybox")
	out, _ := RunErr(10*time.Second, "file", "-L", bb)
	if strings.Contains(out, "dynamically linked") {
		Missing(t, "%s is dynamically linked; install busybox-static", bb)
	}
	bin, err := os.ReadFile(bb)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdrs := []*tar.Header{
		{Name: "bin/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "bin/busybox", Typeflag: tar.TypeReg, Mode: 0o755, Size: int64(len(bin))},
		{Name: "bin/sh", Typeflag: tar.TypeSymlink, Linkname: "busybox", Mode: 0o777},
		{Name: "etc/", Typeflag: tar.TypeDir, Mode: 0o755},
		{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777},
	}
	for _, h := range hdrs {
		h.ModTime = time.Unix(1_700_000_000, 0)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Name == "bin/busybox" {
			tw.Write(bin)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "rootfs.tar")
	if err := os.WriteFile(p, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRegistryDocker: docker import, push, rmi, pull and run through the
// registry; then containerd's ctr pulls the same image over plain HTTP.
func TestRegistryDocker(t *testing.T) {
	RequireTool(t, "docker")
	if out, err := RunErr(30*time.Second, "docker", "info"); err != nil {
		Missing(t, "no docker daemon answers: %v\n%s", err, out)
	}
	reg := registryAddr(t)
	rootfs := rootfsTar(t)
	ref := reg + "/" + uniqueRepo("docker") + ":v1"
	t.Cleanup(func() { RunErr(time.Minute, "docker", "rmi", "-f", ref) })
	Run(t, time.Minute, "docker", "import", rootfs, ref)
	Run(t, 5*time.Minute, "docker", "push", ref)
	Run(t, time.Minute, "docker", "rmi", ref)
	Run(t, 5*time.Minute, "docker", "pull", ref)
	out := Run(t, 2*time.Minute, "docker", "run", "--rm", "--network", "none", ref, "/bin/busybox", "echo", "hello from dockyard")
	if !strings.Contains(out, "hello from dockyard") {
		t.Fatalf("docker run printed %q", out)
	}

	t.Run("ctr", func(t *testing.T) {
		RequireTool(t, "ctr")
		sock := ""
		for _, s := range []string{"/run/containerd/containerd.sock", "/var/run/docker/containerd/containerd.sock"} {
			if _, err := os.Stat(s); err == nil {
				sock = s
				break
			}
		}
		if sock == "" {
			Missing(t, "no containerd socket (containerd or dockerd not running)")
		}
		ns := "dockyard-e2e"
		t.Cleanup(func() { RunErr(time.Minute, "ctr", "--address", sock, "-n", ns, "images", "rm", ref) })
		Run(t, 5*time.Minute, "ctr", "--address", sock, "-n", ns, "images", "pull", "--plain-http", ref)
		out := Run(t, time.Minute, "ctr", "--address", sock, "-n", ns, "images", "ls", "-q")
		if !strings.Contains(out, ref) {
			t.Fatalf("ctr images ls lacks %s:\n%s", ref, out)
		}
	})
}

// TestRegistryPodman: podman import, push, rmi and pull.
func TestRegistryPodman(t *testing.T) {
	RequireTool(t, "podman")
	reg := registryAddr(t)
	rootfs := rootfsTar(t)
	ref := reg + "/" + uniqueRepo("podman") + ":v1"
	t.Cleanup(func() { RunErr(time.Minute, "podman", "rmi", "-f", ref) })
	Run(t, time.Minute, "podman", "import", rootfs, ref)
	Run(t, 5*time.Minute, "podman", "push", "--tls-verify=false", ref)
	Run(t, time.Minute, "podman", "rmi", ref)
	Run(t, 5*time.Minute, "podman", "pull", "--tls-verify=false", ref)
	out := Run(t, time.Minute, "podman", "images", "--format", "{{.Repository}}:{{.Tag}}")
	if !strings.Contains(out, ref) {
		t.Fatalf("podman images lacks %s:\n%s", ref, out)
	}
}

// writeBlob stores b in an OCI layout's blob directory and returns its
// descriptor fields.
func writeBlob(t *testing.T, layout string, b []byte) (string, int) {
	t.Helper()
	sum := sha256.Sum256(b)
	hx := hex.EncodeToString(sum[:])
	dir := filepath.Join(layout, "blobs", "sha256")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, hx), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return "sha256:" + hx, len(b)
}

// ociLayout writes an OCI image layout holding one image tagged v1 and
// returns its manifest digest.
func ociLayout(t *testing.T, dir string) string {
	t.Helper()
	var tb bytes.Buffer
	tw := tar.NewWriter(&tb)
	content := []byte("a file in an OCI layout\n")
	tw.WriteHeader(&tar.Header{Name: "hello.txt", Mode: 0o644, Size: int64(len(content)), ModTime: time.Unix(1_700_000_000, 0)})
	tw.Write(content)
	tw.Close()
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(tb.Bytes())
	zw.Close()
	diff := sha256.Sum256(tb.Bytes())
	ld, ln := writeBlob(t, dir, gz.Bytes())
	cfg, _ := json.Marshal(map[string]any{
		"architecture": "amd64", "os": "linux",
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diff[:])}},
		"config": map[string]any{},
	})
	cd, cn := writeBlob(t, dir, cfg)
	man, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
		"layers": []any{map[string]any{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld, "size": ln}},
	})
	md, mn := writeBlob(t, dir, man)
	idx, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"manifests": []any{map[string]any{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": mn,
			"annotations": map[string]string{"org.opencontainers.image.ref.name": "v1"}}},
	})
	os.WriteFile(filepath.Join(dir, "index.json"), idx, 0o644)
	os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
	return md
}

// layoutManifest returns the digest index.json of a layout names first.
func layoutManifest(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx struct{ Manifests []struct{ Digest string } }
	if err := json.Unmarshal(b, &idx); err != nil || len(idx.Manifests) == 0 {
		t.Fatalf("index.json: %v %s", err, b)
	}
	return idx.Manifests[0].Digest
}

// TestRegistrySkopeoOCILayout copies an OCI layout into the registry and out
// again; every digest must survive the round trip.
func TestRegistrySkopeoOCILayout(t *testing.T) {
	RequireTool(t, "skopeo")
	reg := registryAddr(t)
	src, dst := filepath.Join(t.TempDir(), "src"), filepath.Join(t.TempDir(), "dst")
	want := ociLayout(t, src)
	ref := "docker://" + reg + "/" + uniqueRepo("skopeo") + ":v1"
	Run(t, 5*time.Minute, "skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false", "oci:"+src+":v1", ref)
	raw := Run(t, time.Minute, "skopeo", "inspect", "--raw", "--tls-verify=false", ref)
	sum := sha256.Sum256([]byte(raw))
	if got := "sha256:" + hex.EncodeToString(sum[:]); got != want {
		t.Fatalf("manifest in the registry is %s, the layout's is %s", got, want)
	}
	Run(t, 5*time.Minute, "skopeo", "copy", "--preserve-digests", "--src-tls-verify=false", ref, "oci:"+dst+":v1")
	if got := layoutManifest(t, dst); got != want {
		t.Fatalf("copied out %s, copied in %s", got, want)
	}
	for _, dir := range []string{src, dst} {
		ents, err := os.ReadDir(filepath.Join(dir, "blobs", "sha256"))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 3 {
			t.Fatalf("%s holds %d blobs, want 3", dir, len(ents))
		}
	}
	srcBlobs, _ := os.ReadDir(filepath.Join(src, "blobs", "sha256"))
	for _, e := range srcBlobs {
		if _, err := os.Stat(filepath.Join(dst, "blobs", "sha256", e.Name())); err != nil {
			t.Errorf("blob %s did not survive the round trip: %v", e.Name(), err)
		}
	}
}

// TestRegistryCraneIndex pushes two single-platform images and a
// multi-platform index over them with crane, pulls the index back and
// copies it inside the registry, checking digests at each step.
func TestRegistryCraneIndex(t *testing.T) {
	RequireTool(t, "crane")
	reg := registryAddr(t)
	repo := reg + "/" + uniqueRepo("crane")
	dir := t.TempDir()
	var refs []string
	for _, plat := range []string{"linux/amd64", "linux/arm64"} {
		var tb bytes.Buffer
		tw := tar.NewWriter(&tb)
		body := []byte("built for " + plat + "\n")
		tw.WriteHeader(&tar.Header{Name: "platform.txt", Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(1_700_000_000, 0)})
		tw.Write(body)
		tw.Close()
		layer := filepath.Join(dir, strings.ReplaceAll(plat, "/", "-")+".tar")
		os.WriteFile(layer, tb.Bytes(), 0o644)
		tag := repo + ":" + strings.ReplaceAll(plat, "/", "-")
		Run(t, 2*time.Minute, "crane", "append", "--insecure", "--oci-empty-base", "-f", layer, "-t", tag)
		Run(t, 2*time.Minute, "crane", "mutate", "--insecure", "--set-platform", plat, "-t", tag, tag)
		refs = append(refs, tag)
	}
	multi := repo + ":multi"
	Run(t, 2*time.Minute, "crane", "index", "append", "--insecure", "-m", refs[0], "-m", refs[1], "-t", multi)
	want := strings.TrimSpace(Run(t, time.Minute, "crane", "digest", "--insecure", multi))
	var idx struct {
		MediaType string
		Manifests []struct {
			Digest   string
			Platform struct{ Architecture string }
		}
	}
	if err := json.Unmarshal([]byte(Run(t, time.Minute, "crane", "manifest", "--insecure", multi)), &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 2 || idx.Manifests[0].Platform.Architecture != "amd64" || idx.Manifests[1].Platform.Architecture != "arm64" {
		t.Fatalf("index: %+v", idx)
	}
	for i, r := range refs {
		if d := strings.TrimSpace(Run(t, time.Minute, "crane", "digest", "--insecure", r)); d != idx.Manifests[i].Digest {
			t.Fatalf("index child %d is %s, image is %s", i, idx.Manifests[i].Digest, d)
		}
	}
	out := filepath.Join(dir, "pulled")
	Run(t, 5*time.Minute, "crane", "pull", "--insecure", "--format", "oci", multi, out)
	if got := layoutManifest(t, out); got != want {
		t.Fatalf("pulled index %s, pushed %s", got, want)
	}
	copyRef := repo + "-copy:multi"
	Run(t, 5*time.Minute, "crane", "copy", "--insecure", multi, copyRef)
	if got := strings.TrimSpace(Run(t, time.Minute, "crane", "digest", "--insecure", copyRef)); got != want {
		t.Fatalf("copied index %s, original %s", got, want)
	}
	// The arm64 image pulled through the index is the arm64 child.
	arm := strings.TrimSpace(Run(t, time.Minute, "crane", "digest", "--insecure", "--platform", "linux/arm64", multi))
	if arm != idx.Manifests[1].Digest {
		t.Fatalf("linux/arm64 resolves to %s, want %s", arm, idx.Manifests[1].Digest)
	}
}
