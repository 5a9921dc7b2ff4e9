package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestVolumePlugin: dockerd stores a volume in the Dockyard file system
// through `dockyard volume-plugin`. One container writes to it, the file is
// read back from the file system and by a second container, and `docker
// volume rm` removes it from the file system.
func TestVolumePlugin(t *testing.T) {
	RequireTool(t, "docker")
	if out, err := RunErr(30*time.Second, "docker", "info"); err != nil {
		Missing(t, "no docker daemon answers: %v\n%s", err, out)
	}
	needFUSE(t)
	c := SharedCluster(t)
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	driver := "dockyard-e2e-" + stamp
	sock := "/run/docker/plugins/" + driver + ".sock"
	mountDir := t.TempDir()

	startPlugin(t, Binary(t), c.Meta, sock, mountDir)

	ref := "dockyard-e2e/volume:" + stamp
	t.Cleanup(func() { RunErr(time.Minute, "docker", "rmi", "-f", ref) })
	Run(t, time.Minute, "docker", "import", rootfsTar(t), ref)

	vol := "vol-" + stamp
	t.Cleanup(func() { RunErr(time.Minute, "docker", "volume", "rm", "-f", vol) })
	Run(t, time.Minute, "docker", "volume", "create", "-d", driver, "--opt", "mode=0777", vol)
	if out := Run(t, time.Minute, "docker", "volume", "ls", "--filter", "driver="+driver, "--format", "{{.Name}}"); !strings.Contains(out, vol) {
		t.Errorf("docker volume ls lacks %s:\n%s", vol, out)
	}
	Run(t, 2*time.Minute, "docker", "run", "--rm", "--network", "none", "-v", vol+":/data", ref,
		"/bin/busybox", "sh", "-c", "echo persisted > /data/f && /bin/busybox mkdir /data/d")

	// The bytes are in the file system, under /volumes.
	local := filepath.Join(t.TempDir(), "f")
	Run(t, time.Minute, Binary(t), "cp", "--meta", c.Meta, "dfs:/volumes/"+vol+"/f", local)
	if b, err := os.ReadFile(local); err != nil || string(b) != "persisted\n" {
		t.Errorf("dfs:/volumes/%s/f holds %q, %v", vol, b, err)
	}
	// A second container sees them; the volume was unmounted in between.
	if out := Run(t, 2*time.Minute, "docker", "run", "--rm", "--network", "none", "-v", vol+":/data:ro", ref,
		"/bin/busybox", "cat", "/data/f"); !strings.Contains(out, "persisted") {
		t.Errorf("the second container read %q", out)
	}
	if ents, _ := os.ReadDir(mountDir); len(ents) != 0 {
		t.Errorf("mounts left after the containers exited: %v", ents)
	}
	if out := Run(t, time.Minute, "docker", "volume", "inspect", "--format", "{{.Status.path}}", vol); !strings.Contains(out, "dfs:/volumes/"+vol) {
		t.Errorf("docker volume inspect shows status %q", out)
	}
	// A bad name is refused with the plugin's reason.
	if out, err := RunErr(time.Minute, "docker", "volume", "create", "-d", driver, "--opt", "size=1G", "vol2-"+stamp); err == nil || !strings.Contains(out, "invalid volume option") {
		t.Errorf("create with an unknown option: %v\n%s", err, out)
	}
	Run(t, time.Minute, "docker", "volume", "rm", vol)
	if out, err := RunErr(time.Minute, Binary(t), "stat", "--meta", c.Meta, "dfs:/volumes/"+vol); err == nil {
		t.Errorf("dfs:/volumes/%s still exists after docker volume rm:\n%s", vol, out)
	}
}
