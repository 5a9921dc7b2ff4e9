package e2e

import (
	"archive/tar"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestAppcDocker: an image pushed by docker is discoverable the appc way
// on dockyard serve, beside the web UI, and its ACI holds the pushed files
// and a manifest made from the image config.
func TestAppcDocker(t *testing.T) {
	RequireTool(t, "docker")
	if out, err := RunErr(30*time.Second, "docker", "info"); err != nil {
		Missing(t, "no docker daemon answers: %v\n%s", err, out)
	}
	reg := registryAddr(t)
	rootfs := rootfsTar(t)
	repo := uniqueRepo("appc")
	ref := reg + "/" + repo + ":v1"
	t.Cleanup(func() { RunErr(time.Minute, "docker", "rmi", "-f", ref) })
	Run(t, time.Minute, "docker", "import", "--change", `CMD ["busybox", "echo", "hi"]`, rootfs, ref)
	Run(t, 5*time.Minute, "docker", "push", ref)

	get := func(url string) (*http.Response, []byte) {
		t.Helper()
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		if err != nil {
			t.Fatal(err)
		}
		return res, b
	}
	if res, page := get("http://" + reg + "/"); res.StatusCode != http.StatusOK || !strings.Contains(string(page), repo) {
		t.Errorf("web UI: %s\n%s", res.Status, page)
	}
	res, page := get("http://" + reg + "/" + repo + "?ac-discovery=1")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("discovery: %s\n%s", res.Status, page)
	}
	m := regexp.MustCompile(`<meta name="ac-discovery" content="(\S+) (\S+)">`).FindStringSubmatch(string(page))
	if m == nil || m[1] != reg+"/"+repo {
		t.Fatalf("discovery page:\n%s", page)
	}
	url := m[2]
	for k, v := range map[string]string{"{name}": m[1], "{version}": "v1", "{os}": "linux", "{arch}": "amd64", "{ext}": "aci"} {
		url = strings.ReplaceAll(url, k, v)
	}
	res, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(res.Body)
		t.Fatalf("GET %s: %s\n%s", url, res.Status, b)
	}
	bb, err := os.Stat(RequireTool(t, "busybox"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var manifest struct {
		Name string
		App  struct{ Exec []string }
	}
	tr := tar.NewReader(res.Body)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading the ACI: %v", err)
		}
		names = append(names, h.Name)
		switch h.Name {
		case "manifest":
			if err := json.NewDecoder(tr).Decode(&manifest); err != nil {
				t.Fatal(err)
			}
		case "rootfs/bin/busybox":
			if h.Size != bb.Size() {
				t.Errorf("busybox is %d bytes in the ACI, %d pushed", h.Size, bb.Size())
			}
		}
	}
	want := []string{"manifest", "rootfs/", "rootfs/bin/", "rootfs/bin/busybox", "rootfs/bin/sh", "rootfs/etc/", "rootfs/tmp/"}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Errorf("ACI entries %q, want %q", names, want)
	}
	if manifest.Name != reg+"/"+repo || strings.Join(manifest.App.Exec, " ") != "/bin/busybox echo hi" {
		t.Errorf("manifest %+v", manifest)
	}
}
