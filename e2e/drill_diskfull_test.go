package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/metaserver"
)

// TestDrillDiskFull runs six chunkservers (exactly one 4+2 stripe wide) on
// small tmpfs file systems of their own and pushes until the cluster is
// full: the failing push and a failing `dockyard cp` say the cluster is out
// of space; every push acknowledged before is intact and fsck is clean; when
// the file systems grow, writes succeed again without restarting anything.
func TestDrillDiskFull(t *testing.T) {
	RequireTool(t, "crane")
	if os.Geteuid() != 0 {
		Missing(t, "the disk-full drill mounts tmpfs file systems and needs root")
	}
	const servers = 6
	small := drillPick(8, 24) // MiB per chunkserver
	disks := make([]string, servers)
	for i := range disks {
		disks[i] = t.TempDir()
		if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm", small), "tmpfs", disks[i]).CombinedOutput(); err != nil {
			Missing(t, "cannot mount a tmpfs: %v: %s", err, out)
		}
		d := disks[i]
		t.Cleanup(func() {
			// The cluster's own cleanup, registered later, runs first:
			// nothing has files open here any more.
			if out, err := exec.Command("umount", d).CombinedOutput(); err != nil {
				t.Errorf("umount %s: %v: %s", d, err, out)
			}
		})
	}
	c := startDrillCluster(t, drillConfig{Metas: 1, Chunkservers: servers, Registries: 1,
		ChunkDir: func(i int) string { return filepath.Join(disks[i], "data") }})
	tmp := t.TempDir()

	// Fill the cluster: 2 MiB layers, a 512 KiB shard on every server each.
	var ok []drillImage
	var fullErr string
	for i := 0; fullErr == ""; i++ {
		if i > 4*small {
			t.Fatalf("%d pushes of 2 MiB into %d servers of %d MiB and none failed", i, servers, small)
		}
		ref := fmt.Sprintf("%s/drill/capacity/img%d:v1", c.RegAddrs[0], i)
		p, out, err := drillCranePush(t, tmp, ref, 2<<20)
		if err != nil {
			fullErr = out
			break
		}
		ok = append(ok, p)
	}
	t.Logf("the cluster filled after %d pushes; crane said:\n%s", len(ok), fullErr)
	// The push must have failed for lack of room, not for something else:
	// the servers report too little left for a stripe.
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	var free []string
	roomy := 0
	for _, cs := range st.Chunkservers {
		free = append(free, drillMiB(cs.Capacity-cs.Used))
		if cs.Capacity-cs.Used >= 1<<20 {
			roomy++
		}
	}
	if roomy == servers {
		t.Fatalf("a push failed although every chunkserver reports room (free: %v):\n%s", free, fullErr)
	}
	t.Logf("free space per chunkserver when the push failed: %v", free)
	if !drillMentionsSpace(drillLastLine(fullErr)) {
		t.Errorf("the push that found the cluster full failed without saying why:\n%s", fullErr)
	}
	// A file copy fails with one line naming the cause.
	local, _ := drillRandomFile(t, tmp, "big", 3<<20)
	out, err := c.cli(2*time.Minute, "cp", "--meta", c.MetaList(), local, "dfs:/capacity-big")
	if err == nil {
		t.Errorf("dockyard cp into a full cluster succeeded")
	} else if t.Logf("dockyard cp into a full cluster: %s", out); !drillMentionsSpace(out) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
		t.Errorf("dockyard cp into a full cluster: want one line about space, got:\n%s", out)
	}

	// Nothing acknowledged is lost, nothing half-written is visible.
	var verified int64
	for _, p := range ok {
		n, err := drillVerifyPulled(p)
		if err != nil {
			t.Errorf("acknowledged push damaged by the full disks: %v", err)
		}
		verified += n
	}
	r := c.WaitFsckClean(time.Minute)

	// Space returns: the file systems grow under the running servers.
	grown := time.Now()
	for _, d := range disks {
		if out, err := exec.Command("mount", "-o", fmt.Sprintf("remount,size=%dm", 4*small), d).CombinedOutput(); err != nil {
			t.Fatalf("growing %s: %v: %s", d, err, out)
		}
	}
	var after []drillImage
	c.waitFor(time.Minute, "a push to succeed once space returned", func() (bool, string) {
		ref := fmt.Sprintf("%s/drill/capacity/after%d:v1", c.RegAddrs[0], len(after))
		p, out, err := drillCranePush(t, tmp, ref, 2<<20)
		if err != nil {
			return false, out
		}
		after = append(after, p)
		return true, ""
	})
	recovered := time.Since(grown)
	for i := 1; i < drillPick(3, 10); i++ {
		ref := fmt.Sprintf("%s/drill/capacity/after%d:v1", c.RegAddrs[0], i)
		p, out, err := drillCranePush(t, tmp, ref, 2<<20)
		if err != nil {
			t.Fatalf("push %d after space returned: %v: %s", i, err, out)
		}
		after = append(after, p)
	}
	for _, p := range append(ok, after...) {
		n, err := drillVerifyPulled(p)
		if err != nil {
			t.Errorf("after space returned: %v", err)
		}
		verified += n
	}
	r = c.WaitFsckClean(time.Minute)
	grownPushes := len(after)

	// One disk fills behind its chunkserver's back (another program's
	// file): the server refuses new shards with 507, placement works
	// around it, and existing shards still serve.
	filler := filepath.Join(disks[0], "filler")
	drillFillDisk(t, filler)
	cs := c.Chunks[0].flag("--listen")
	shardURL := fmt.Sprintf("http://%s/shards/%s", cs, metaserver.ShardName(0xd0d0d0d0, 0))
	code, hdr, body := drillPut(t, shardURL, make([]byte, 1<<20))
	if code != http.StatusInsufficientStorage || hdr.Get(chunkserver.HeaderError) != chunkserver.ErrorNoSpace {
		t.Errorf("PUT of a shard to a chunkserver whose disk is full: %d %s=%q %s, want 507 %s",
			code, chunkserver.HeaderError, hdr.Get(chunkserver.HeaderError), body, chunkserver.ErrorNoSpace)
	}
	oneFull := 0
	for i := 0; i < drillPick(3, 10); i++ {
		ref := fmt.Sprintf("%s/drill/capacity/onefull%d:v1", c.RegAddrs[0], i)
		p, out, err := drillCranePush(t, tmp, ref, 2<<20)
		if err != nil {
			t.Errorf("push with one chunkserver's disk full (five have room): %v: %s", err, out)
			continue
		}
		after = append(after, p)
		oneFull++
	}
	for _, p := range append(ok, after...) {
		n, err := drillVerifyPulled(p)
		if err != nil {
			t.Errorf("with one disk full: %v", err)
		}
		verified += n
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	c.waitFor(30*time.Second, "the chunkserver to take shards again once its disk has room", func() (bool, string) {
		code, _, body := drillPut(t, shardURL, make([]byte, 1<<20))
		return code == http.StatusCreated, fmt.Sprintf("%d %s", code, body)
	})
	if code, _, body := drillDelete(t, shardURL); code != http.StatusNoContent {
		t.Errorf("DELETE of the probe shard: %d %s", code, body)
	}
	r = c.WaitFsckClean(time.Minute)
	t.Logf("DRILL disk-full one-disk: a shard PUT to the chunkserver whose disk filled behind its back got %d %q; "+
		"%d pushes succeeded meanwhile; space freed: shards accepted again", code, hdr.Get(chunkserver.HeaderError), oneFull)
	t.Logf("DRILL disk-full: %d chunkservers of %d MiB filled after %d pushes of 2 MiB; failing push names the cause: %v, "+
		"failing cp names it: %v; space grown to %d MiB: first push succeeded after %s, %d more pushed; bytes verified %d; "+
		"fsck %d chunks healthy",
		servers, small, len(ok), drillMentionsSpace(drillLastLine(fullErr)), err != nil && drillMentionsSpace(out), 4*small,
		recovered.Round(100*time.Millisecond), grownPushes-1, verified, r.Healthy)
}

func drillLastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// drillMentionsSpace reports whether an error message names a lack of space.
func drillMentionsSpace(s string) bool {
	s = strings.ToLower(s)
	return strings.Contains(s, "space") || strings.Contains(s, "full")
}

func drillMiB(n int64) string { return fmt.Sprintf("%.2f MiB", float64(n)/(1<<20)) }

// drillFillDisk writes path until its file system is full.
func drillFillDisk(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if errors.Is(err, syscall.ENOSPC) {
				return
			}
			t.Fatalf("filling %s: %v", path, err)
		}
	}
}

func drillPut(t *testing.T, url string, body []byte) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return drillHTTPDo(t, req)
}

func drillDelete(t *testing.T, url string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodDelete, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return drillHTTPDo(t, req)
}

func drillHTTPDo(t *testing.T, req *http.Request) (int, http.Header, string) {
	t.Helper()
	resp, err := drillHTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, strings.TrimSpace(string(b))
}
