package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestVolumeSnapshot: a volume is written through the volume plugin's
// mount (as a container would), snapshotted with `dockyard volume
// snapshot`, changed, and the old bytes read back from a volume restored
// from the snapshot (`dockyard volume restore`) and from one the plugin
// makes with --opt from=VOLUME@SNAPSHOT. dockerd is not needed: the test
// speaks the plugin protocol on the plugin's socket, as dockerd does.
// `dockyard clone` and the snapshot listing and removal are covered on the
// way.
func TestVolumeSnapshot(t *testing.T) {
	needFUSE(t)
	if os.Geteuid() != 0 {
		Missing(t, "the volume plugin mounts with FUSE, which needs root")
	}
	c := SharedCluster(t)
	bin := Binary(t)
	stamp := strconv.FormatInt(time.Now().UnixNano(), 36)
	dir := t.TempDir()
	sock := filepath.Join(dir, "dockyard.sock")
	mountDir := filepath.Join(dir, "mnt")
	plugin := startPlugin(t, bin, c.Meta, sock, mountDir)

	vol, snap := "snapvol-"+stamp, "before-upgrade"
	restored, fromSnap := "restored-"+stamp, "fromsnap-"+stamp
	t.Cleanup(func() {
		for _, v := range []string{vol, restored, fromSnap} {
			RunErr(time.Minute, bin, "rm", "-r", "--meta", c.Meta, "dfs:/volumes/"+v)
		}
		RunErr(time.Minute, bin, "rm", "-r", "--meta", c.Meta, "dfs:/volumes/.snapshots/"+vol)
	})

	plugin.must(t, "Create", map[string]any{"Name": vol, "Opts": map[string]string{"mode": "0777"}})
	old := bytes.Repeat([]byte("old bytes "), 900_000) // 9 MB: three chunks
	plugin.withMount(t, vol, func(mnt string) {
		if err := os.WriteFile(filepath.Join(mnt, "data"), old, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(mnt, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("../data", filepath.Join(mnt, "sub", "link")); err != nil {
			t.Fatal(err)
		}
	})

	out := Run(t, time.Minute, bin, "volume", "snapshot", "--meta", c.Meta, vol, snap)
	if !strings.Contains(out, "dfs:/volumes/.snapshots/"+vol+"/"+snap) {
		t.Errorf("volume snapshot printed %q", out)
	}
	if out, err := RunErr(time.Minute, bin, "volume", "snapshot", "--meta", c.Meta, vol, snap); err == nil || !strings.Contains(out, "already exists") {
		t.Errorf("a second snapshot under the same name: %v\n%s", err, out)
	}
	if out, err := RunErr(time.Minute, bin, "volume", "snapshot", "--meta", c.Meta, "missing-"+stamp, snap); err == nil || !strings.Contains(out, "no such volume") {
		t.Errorf("a snapshot of a missing volume: %v\n%s", err, out)
	}

	// The upgrade: the volume changes.
	plugin.withMount(t, vol, func(mnt string) {
		if err := os.WriteFile(filepath.Join(mnt, "data"), []byte("new"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(mnt, "sub", "link")); err != nil {
			t.Fatal(err)
		}
	})

	out = Run(t, time.Minute, bin, "volume", "snapshots", "--meta", c.Meta, vol)
	if !strings.Contains(out, snap) {
		t.Errorf("volume snapshots lacks %s:\n%s", snap, out)
	}
	var list struct{ Volumes []struct{ Name string } }
	plugin.must(t, "List", map[string]any{}, &list)
	for _, v := range list.Volumes {
		if strings.HasPrefix(v.Name, ".") || v.Name == snap {
			t.Errorf("the plugin lists %q as a volume", v.Name)
		}
	}

	// Back to the old bytes, twice: by the CLI and by the plugin.
	if out, err := RunErr(time.Minute, bin, "volume", "restore", "--meta", c.Meta, vol, snap); err == nil || !strings.Contains(out, "--to") {
		t.Errorf("restore without --to: %v\n%s", err, out)
	}
	Run(t, time.Minute, bin, "volume", "restore", "--meta", c.Meta, vol, snap, "--to", restored)
	plugin.must(t, "Create", map[string]any{"Name": fromSnap, "Opts": map[string]string{"from": vol + "@" + snap}})
	if msg := plugin.fails(t, "Create", map[string]any{"Name": "x-" + stamp, "Opts": map[string]string{"from": vol + "@nope"}}); !strings.Contains(msg, "no such snapshot") {
		t.Errorf("from= a missing snapshot: %q", msg)
	}
	for _, v := range []string{restored, fromSnap} {
		plugin.withMount(t, v, func(mnt string) {
			if b, err := os.ReadFile(filepath.Join(mnt, "data")); err != nil || !bytes.Equal(b, old) {
				t.Errorf("%s/data: %d bytes, %v; want the %d old ones", v, len(b), err, len(old))
			}
			if target, err := os.Readlink(filepath.Join(mnt, "sub", "link")); err != nil || target != "../data" {
				t.Errorf("%s/sub/link: %q, %v", v, target, err)
			}
		})
	}
	plugin.withMount(t, vol, func(mnt string) {
		if b, err := os.ReadFile(filepath.Join(mnt, "data")); err != nil || string(b) != "new" {
			t.Errorf("the volume itself holds %q, %v", b, err)
		}
	})

	// dockyard clone copies any tree; the copy stands on its own.
	Run(t, time.Minute, bin, "clone", "--meta", c.Meta, "dfs:/volumes/"+restored+"/data", "dfs:/volumes/"+restored+"/data.copy")
	if out, err := RunErr(time.Minute, bin, "clone", "--meta", c.Meta, "dfs:/volumes/"+restored, "dfs:/volumes/"+restored+"/inside"); err == nil || !strings.Contains(out, "invalid argument") {
		t.Errorf("clone into itself: %v\n%s", err, out)
	}
	local := filepath.Join(t.TempDir(), "copy")
	Run(t, time.Minute, bin, "cp", "--meta", c.Meta, "dfs:/volumes/"+restored+"/data.copy", local)
	if b, err := os.ReadFile(local); err != nil || !bytes.Equal(b, old) {
		t.Errorf("cloned file: %d bytes, %v", len(b), err)
	}

	Run(t, time.Minute, bin, "volume", "rm-snapshot", "--meta", c.Meta, vol, snap)
	if out := Run(t, time.Minute, bin, "volume", "snapshots", "--meta", c.Meta, vol); strings.Contains(out, snap) {
		t.Errorf("removed snapshot still listed:\n%s", out)
	}
	// The restored volumes keep their bytes without the snapshot.
	Run(t, time.Minute, bin, "cp", "--meta", c.Meta, "dfs:/volumes/"+fromSnap+"/data", local)
	if b, err := os.ReadFile(local); err != nil || !bytes.Equal(b, old) {
		t.Errorf("%s/data after the snapshot was removed: %d bytes, %v", fromSnap, len(b), err)
	}
	for _, v := range []string{vol, restored, fromSnap} {
		plugin.must(t, "Remove", map[string]any{"Name": v})
	}
}

// pluginProc is a `dockyard volume-plugin` spoken to on its socket, started
// by startPlugin, which stops it (and checks it removed its socket) when the
// test ends.
type pluginProc struct {
	hc *http.Client
}

func startPlugin(t *testing.T, bin, meta, sock, mountDir string) *pluginProc {
	t.Helper()
	var stderr bytes.Buffer
	cmd := exec.Command(bin, "volume-plugin", "--meta", meta, "--socket", sock, "--mount-dir", mountDir)
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("volume-plugin exited with %v\n%s", err, stderr.String())
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Errorf("volume-plugin did not stop on SIGTERM\n%s", stderr.String())
		}
		if _, err := os.Stat(sock); !os.IsNotExist(err) {
			t.Errorf("the plugin left its socket behind: %v", err)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("volume-plugin exited: %v\n%s", err, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no plugin socket after 30 s\n%s", stderr.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &pluginProc{hc: &http.Client{Transport: tr, Timeout: 2 * time.Minute}}
}

// call posts one request of the plugin protocol and decodes the reply into
// out (when given); it returns the reply's Err.
func (p *pluginProc) call(t *testing.T, op string, req any, out ...any) string {
	t.Helper()
	body, _ := json.Marshal(req)
	resp, err := p.hc.Post("http://plugin/VolumeDriver."+op, "application/vnd.docker.plugins.v1.2+json", bytes.NewReader(body))
	if err != nil {
		t.Fatalf("%s: %v", op, err)
	}
	defer resp.Body.Close()
	var raw json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&raw); err != nil {
		t.Fatalf("%s: undecodable reply: %v", op, err)
	}
	var e struct{ Err string }
	json.Unmarshal(raw, &e)
	for _, o := range out {
		if err := json.Unmarshal(raw, o); err != nil {
			t.Fatalf("%s: %v", op, err)
		}
	}
	return e.Err
}

func (p *pluginProc) must(t *testing.T, op string, req any, out ...any) {
	t.Helper()
	if msg := p.call(t, op, req, out...); msg != "" {
		t.Fatalf("%s %v: %s", op, req, msg)
	}
}

func (p *pluginProc) fails(t *testing.T, op string, req any) string {
	t.Helper()
	msg := p.call(t, op, req)
	if msg == "" {
		t.Fatalf("%s %v succeeded; want a refusal", op, req)
	}
	return msg
}

// withMount mounts volume name as a container's start would, runs fn on
// the mount point, and unmounts it as the container's end would: the
// mount's buffered writes are committed by then.
func (p *pluginProc) withMount(t *testing.T, name string, fn func(mnt string)) {
	t.Helper()
	id := "e2e-" + name
	var m struct{ Mountpoint string }
	p.must(t, "Mount", map[string]any{"Name": name, "ID": id}, &m)
	defer p.must(t, "Unmount", map[string]any{"Name": name, "ID": id})
	fn(m.Mountpoint)
}
