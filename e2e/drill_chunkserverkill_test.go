package e2e

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/dockyard/dockyard/chunkserver"
	"github.com/dockyard/dockyard/metaserver"
)

// drillReadLoad reads the cluster's data in a loop from several clients at once
// until stopped, counting reads and failures: crane pulls through the
// registry (blob GETs), and whole-file reads of every registry blob through a
// FUSE mount, each checked against the SHA-256 its name carries.
type drillReadLoad struct {
	ops, fails atomic.Int64
	bytes      atomic.Int64
	mu         sync.Mutex
	errs       []error
	stop       chan struct{}
	wg         sync.WaitGroup
}

func (l *drillReadLoad) fail(err error) {
	l.fails.Add(1)
	l.mu.Lock()
	if len(l.errs) < 20 {
		l.errs = append(l.errs, err)
	}
	l.mu.Unlock()
}

func drillStartReadLoad(images []drillImage, mnt string) *drillReadLoad {
	l := &drillReadLoad{stop: make(chan struct{})}
	stopped := func() bool {
		select {
		case <-l.stop:
			return true
		default:
			return false
		}
	}
	l.wg.Add(2)
	go func() {
		defer l.wg.Done()
		for i := 0; !stopped(); i++ {
			n, err := drillVerifyPulled(images[i%len(images)])
			l.ops.Add(1)
			l.bytes.Add(n)
			if err != nil {
				l.fail(err)
			}
		}
	}()
	go func() {
		defer l.wg.Done()
		blobs := filepath.Join(mnt, ".dockyard", "registry", "blobs", "sha256")
		for !stopped() {
			ents, err := os.ReadDir(blobs)
			l.ops.Add(1)
			if err != nil {
				l.fail(fmt.Errorf("listing %s: %w", blobs, err))
				continue
			}
			for _, e := range ents {
				if stopped() {
					return
				}
				n, err := drillReadDropCache(filepath.Join(blobs, e.Name()), e.Name())
				l.ops.Add(1)
				l.bytes.Add(n)
				if err != nil {
					l.fail(err)
				}
			}
		}
	}()
	return l
}

// drillReadDropCache reads a file whole, checks its SHA-256 and drops it from the
// page cache, so the next read of it reaches the chunkservers again.
func drillReadDropCache(path, wantSum string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return n, fmt.Errorf("reading %s through the mount: %w", path, err)
	}
	unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
	if got := hex.EncodeToString(h.Sum(nil)); got != wantSum {
		return n, fmt.Errorf("%s read through the mount has sha256 %s", path, got)
	}
	return n, nil
}

func (l *drillReadLoad) finish(t *testing.T, phase string) (ops, bytes int64) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	if f := l.fails.Load(); f > 0 {
		t.Errorf("%s: %d of %d reads failed; first errors: %v", phase, f, l.ops.Load(), l.errs)
	}
	return l.ops.Load(), l.bytes.Load()
}

// TestDrillChunkserverKillDuringReads SIGKILLs 2 of 7 chunkservers while
// clients pull images and read blobs through a mount: no read fails. The
// metaservers declare the two down, and repair restores full redundancy
// (admin status and fsck agree, the dead servers hold nothing). Then 2 more
// die: reads still succeed and nothing is lost.
//
// The registry stores blobs 3+2, not the default 4+2: after losing 2 of 7
// servers only 5 remain, and a 4+2 chunk needs 6 distinct servers, so full
// redundancy could not come back however good the repair.
func TestDrillChunkserverKillDuringReads(t *testing.T) {
	RequireTool(t, "crane")
	if os.Geteuid() != 0 {
		Missing(t, "the chunkserver drill mounts the file system and needs root")
	}
	needFUSE(t)
	// Stray passes every 10 s: a rebuilt copy whose completion report was
	// lost while servers died and came back is then gone within the minute
	// phase 3 waits, as it would be within twenty on a real cluster.
	c := startDrillCluster(t, drillConfig{Metas: 3, Chunkservers: 7, Registries: 1,
		SuspectAfter: 2 * time.Second, DownAfter: 5 * time.Second, RegArgs: []string{"--ec", "3+2"},
		ChunkArgs: func(int) []string { return []string{"--stray-interval", "10s"} }})
	tmp := t.TempDir()
	var images []drillImage
	var written int64
	for i := 0; i < drillPick(4, 12); i++ {
		ref := fmt.Sprintf("%s/drill/cskill/img%d:v1", c.RegAddrs[0], i)
		// Up to 9 MiB: layers of several 4 MiB chunks as well as small ones.
		p, out, err := drillCranePush(t, tmp, ref, 64<<10+i*drillPick(2<<20, 750<<10))
		if err != nil {
			t.Fatalf("push %s: %v: %s", ref, err, out)
		}
		images = append(images, p)
		written += p.bytes
	}
	before := c.WaitFsckClean(time.Minute)

	// Phase 1: kill two chunkservers of different zones mid-read.
	mnt := c.Mount(t, "--show-reserved", "--cache-mb", "1")
	load := drillStartReadLoad(images, mnt)
	c.waitFor(time.Minute, "reads under way", func() (bool, string) { return load.ops.Load() >= 3, "starting" })
	killAt := time.Now()
	dead := []*drillProc{c.Chunks[0], c.Chunks[1]}
	for _, p := range dead {
		c.Kill(p)
	}
	deadIDs := c.chunkserverIDs(dead)
	c.waitFor(time.Minute, "the killed chunkservers declared down", func() (bool, string) {
		st, err := c.Status()
		if err != nil {
			return false, err.Error()
		}
		return drillCountState(st, deadIDs, metaserver.StateDown) == len(dead), fmt.Sprintf("states %v", drillStates(st, deadIDs))
	})
	downAfter := time.Since(killAt)
	st := c.WaitRedundant(3 * time.Minute)
	r := c.WaitFsckClean(2 * time.Minute)
	repaired := time.Since(killAt)
	ops1, bytes1 := load.finish(t, "reads while 2 chunkservers died and were repaired")
	st, _ = c.Status()
	var onUp int
	for _, cs := range st.Chunkservers {
		if deadIDs[cs.ID] {
			if cs.Shards != 0 {
				t.Errorf("dead chunkserver %s still owns %d shards after repair", cs.ID, cs.Shards)
			}
			continue
		}
		onUp += cs.Shards
	}
	// Chunks may be added meanwhile (the registry indexes pushed layers in
	// the background), never lost.
	if onUp != r.Shards || r.Chunks < before.Chunks {
		t.Errorf("after repair the live chunkservers own %d shards, fsck counts %d shards in %d chunks (%d before)",
			onUp, r.Shards, r.Chunks, before.Chunks)
	}

	// Phase 2: two more die. Five servers held every chunk's five shards (or
	// three copies); three are left, enough to read everything.
	mnt2 := c.Mount(t, "--show-reserved", "--cache-mb", "1")
	load2 := drillStartReadLoad(images, mnt2)
	c.waitFor(time.Minute, "reads under way", func() (bool, string) { return load2.ops.Load() >= 3, "starting" })
	dead2 := []*drillProc{c.Chunks[2], c.Chunks[3]}
	for _, p := range dead2 {
		c.Kill(p)
	}
	dead2IDs := c.chunkserverIDs(dead2)
	c.waitFor(time.Minute, "the second pair declared down", func() (bool, string) {
		st, err := c.Status()
		if err != nil {
			return false, err.Error()
		}
		return drillCountState(st, dead2IDs, metaserver.StateDown) == len(dead2), fmt.Sprintf("states %v", drillStates(st, dead2IDs))
	})
	// Let reads go on against the degraded cluster for a while.
	c.waitFor(time.Minute, "reads of the degraded cluster", func() (bool, string) {
		return load2.ops.Load() >= int64(3*len(images)), fmt.Sprintf("%d reads", load2.ops.Load())
	})
	ops2, bytes2 := load2.finish(t, "reads with 4 of 7 chunkservers dead")
	st, err := c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if st.Lost != 0 {
		t.Errorf("with 4 of 7 chunkservers dead the metaservers count %d lost chunks", st.Lost)
	}
	r2, err := c.Fsck()
	if err != nil {
		t.Fatal(err)
	}
	if r2.Lost != 0 || len(r2.Dangling) != 0 {
		t.Errorf("fsck with 4 of 7 dead: lost %d, dangling %v", r2.Lost, r2.Dangling)
	}
	var verified int64
	for _, p := range images {
		n, err := drillVerifyPulled(p)
		if err != nil {
			t.Errorf("after losing 4 of 7 chunkservers: %v", err)
		}
		verified += n
	}

	// Phase 3: the four come back on their old disks. They rejoin, the
	// degraded chunks are completed, and the copies that were rebuilt
	// elsewhere meanwhile are deleted from them: the shard files on all
	// disks add up to the shards fsck counts, none duplicated.
	back := time.Now()
	for _, p := range append(dead, dead2...) {
		c.Start(p)
	}
	c.WaitChunkserversUp(len(c.Chunks))
	c.WaitRedundant(3 * time.Minute)
	r3 := c.WaitFsckClean(2 * time.Minute)
	// Each server's shard files are the shards the chunk map places there:
	// no copy rebuilt elsewhere is left behind. The map may hold more than
	// fsck counts, which walks only the files: a chunk allocated meanwhile
	// by a write that failed on a restarting server, or not yet committed,
	// is placed too.
	var onDisk, mapped int
	c.waitFor(time.Minute, "the shard files on the chunkservers to match the shards in use", func() (bool, string) {
		st, err := c.Status()
		if err != nil {
			return false, err.Error()
		}
		inMap := map[metaserver.ServerID]int{}
		mapped = 0
		for _, cs := range st.Chunkservers {
			inMap[cs.ID] = cs.Shards
			mapped += cs.Shards
		}
		onDisk = 0
		ok := true
		var per []string
		for _, p := range c.Chunks {
			id, n, err := drillShardsOnDisk(p.flag("--listen"))
			if err != nil {
				return false, err.Error()
			}
			onDisk += n
			ok = ok && n == inMap[id]
			per = append(per, fmt.Sprintf("%s %d on disk/%d in the map", p.name, n, inMap[id]))
		}
		return ok, fmt.Sprintf("%d shard files (%s); the map places %d (repairs queued %d, degraded %d), fsck counts %d shards in %d chunks",
			onDisk, strings.Join(per, ", "), mapped, st.RepairsQueued, st.Degraded, r3.Shards, r3.Chunks)
	})
	rejoined := time.Since(back)
	t.Logf("DRILL chunkserver-kill: images %d (%d layer bytes), chunks %d; phase 1: 2 of 7 SIGKILLed during %d reads "+
		"(%d bytes, 0 failed), declared down after %s, full redundancy (status degraded 0, fsck %d/%d healthy) after %s; "+
		"phase 2: 2 more SIGKILLed during %d reads (%d bytes, 0 failed), status lost %d, fsck lost %d degraded %d; "+
		"final pull verified %d bytes; phase 3: all 4 restarted, full redundancy and no stray shard (%d files = %d shards in the map; fsck counts %d) after %s",
		len(images), written, r.Chunks, ops1, bytes1, downAfter.Round(100*time.Millisecond), r.Healthy, r.Chunks,
		repaired.Round(100*time.Millisecond), ops2, bytes2, st.Lost, r2.Lost, r2.Degraded, verified, onDisk, mapped, r3.Shards,
		rejoined.Round(100*time.Millisecond))
}

// chunkserverIDs maps processes to the IDs they registered with, from the
// line each prints when it starts.
func (c *drillCluster) chunkserverIDs(ps []*drillProc) map[metaserver.ServerID]bool {
	c.t.Helper()
	ids := map[metaserver.ServerID]bool{}
	for _, p := range ps {
		b, err := os.ReadFile(p.logPath)
		if err != nil {
			c.t.Fatal(err)
		}
		var id string
		for _, line := range strings.Split(string(b), "\n") {
			if _, err := fmt.Sscanf(line, "dockyard: chunkserver %s serving", &id); err == nil {
				break
			}
		}
		if id == "" {
			c.t.Fatalf("%s's log names no chunkserver id:\n%s", p.name, b)
		}
		ids[metaserver.ServerID(id)] = true
	}
	return ids
}

func drillCountState(st *metaserver.Status, ids map[metaserver.ServerID]bool, state string) int {
	n := 0
	for _, cs := range st.Chunkservers {
		if ids[cs.ID] && cs.State == state {
			n++
		}
	}
	return n
}

func drillStates(st *metaserver.Status, ids map[metaserver.ServerID]bool) map[metaserver.ServerID]string {
	out := map[metaserver.ServerID]string{}
	for _, cs := range st.Chunkservers {
		if ids[cs.ID] {
			out[cs.ID] = cs.State
		}
	}
	return out
}

// drillShardsOnDisk asks a chunkserver its ID and how many shard files it
// holds.
func drillShardsOnDisk(addr string) (metaserver.ServerID, int, error) {
	resp, err := drillHTTP.Get("http://" + addr + "/status")
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("%s/status: %s", addr, resp.Status)
	}
	var st chunkserver.StatusReply
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return "", 0, fmt.Errorf("%s/status: %w", addr, err)
	}
	return metaserver.ServerID(st.ID), st.Shards, nil
}
