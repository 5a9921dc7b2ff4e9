package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dockyard/dockyard/metaserver"
)

// drillNetns is a network namespace joined to this one by a veth pair: the
// host end has .1 of a /30, the namespace end .2.
type drillNetns struct {
	ns, hostIf       string
	hostIP, insideIP string
}

// newDrillNetns creates the namespace and the link; both are removed when the
// test ends.
func newDrillNetns(t *testing.T) *drillNetns {
	t.Helper()
	if os.Geteuid() != 0 {
		Missing(t, "the partition drill creates network namespaces and needs root")
	}
	RequireTool(t, "ip")
	pid := os.Getpid()
	// 10.231.0.0/16 is unlikely to be routed here; the PID spreads
	// concurrent runs over its /30s.
	third, fourth := (pid/64)%256, (pid%64)*4
	l := &drillNetns{
		ns:       fmt.Sprintf("dydrill%d", pid),
		hostIf:   fmt.Sprintf("dyh%d", pid%1000000),
		hostIP:   fmt.Sprintf("10.231.%d.%d", third, fourth+1),
		insideIP: fmt.Sprintf("10.231.%d.%d", third, fourth+2),
	}
	inside := fmt.Sprintf("dyn%d", pid%1000000)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			Missing(t, "ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", l.ns)
	t.Cleanup(func() {
		exec.Command("ip", "netns", "del", l.ns).Run()
		exec.Command("ip", "link", "del", l.hostIf).Run() // gone with the namespace, normally
	})
	run("link", "add", l.hostIf, "type", "veth", "peer", "name", inside)
	run("link", "set", inside, "netns", l.ns)
	run("addr", "add", l.hostIP+"/30", "dev", l.hostIf)
	run("link", "set", l.hostIf, "up")
	run("netns", "exec", l.ns, "ip", "addr", "add", l.insideIP+"/30", "dev", inside)
	run("netns", "exec", l.ns, "ip", "link", "set", inside, "up")
	run("netns", "exec", l.ns, "ip", "link", "set", "lo", "up")
	return l
}

// set takes the host end of the veth down (cut) or up.
func (l *drillNetns) set(t *testing.T, up bool) {
	t.Helper()
	state := "down"
	if up {
		state = "up"
	}
	if out, err := exec.Command("ip", "link", "set", l.hostIf, state).CombinedOutput(); err != nil {
		t.Fatalf("ip link set %s %s: %v: %s", l.hostIf, state, err, out)
	}
}

// TestDrillMetaserverPartition isolates one of three metaservers, running in
// a network namespace of its own, by cutting its veth while files are being
// written; the other two go on acknowledging writes. When the link returns,
// the isolated node catches up: every node reports the same namespace and
// chunk table, and after the leader is then killed, the quorum that includes
// the rejoined node still serves every acknowledged file byte for byte.
func TestDrillMetaserverPartition(t *testing.T) {
	link := newDrillNetns(t)
	c := startDrillCluster(t, drillConfig{Metas: 3, Chunkservers: 6, Registries: 1,
		MetaHost: func(i int) (string, string) {
			if i == 2 {
				return link.insideIP, link.ns
			}
			return link.hostIP, ""
		}})
	isolated := 2
	tmp := t.TempDir()

	var (
		mu    sync.Mutex
		files []drillFile
		fails []string // path: error
		seq   int

		images       []drillImage
		failedPushes []string
		copyTimes    []timedOp
	)
	acked := func() int { mu.Lock(); defer mu.Unlock(); return len(files) + len(images) }
	// startWriter copies files in until the returned function is called.
	startWriter := func() (stopWriter func()) {
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				i := seq
				seq++
				mu.Unlock()
				path := fmt.Sprintf("/partition-f%d", i)
				began := time.Now()
				f, err := c.cpIn(t, tmp, path, 32<<10+(i%4)*300<<10)
				mu.Lock()
				copyTimes = append(copyTimes, timedOp{began, time.Since(began)})
				if err == nil {
					files = append(files, f)
				} else {
					fails = append(fails, fmt.Sprintf("%s: at %s: %v", path, time.Now().Format("15:04:05.0"), err))
				}
				mu.Unlock()
			}
		}()
		// Pushes go on too, through the registry's own metaserver client.
		pushDone := make(chan struct{})
		go func() {
			defer close(pushDone)
			for {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				i := seq
				seq++
				mu.Unlock()
				ref := fmt.Sprintf("%s/drill/partition/img%d:v1", c.RegAddrs[0], i)
				p, out, err := drillCranePush(t, tmp, ref, 64<<10+(i%3)*500<<10)
				mu.Lock()
				if err == nil {
					images = append(images, p)
				} else {
					failedPushes = append(failedPushes, fmt.Sprintf("%s: %v: %s", ref, err, drillLastLine(out)))
				}
				mu.Unlock()
			}
		}()
		return func() { close(stop); <-done; <-pushDone }
	}

	// Round 0 cuts meta3 off in whatever role it has (a follower, mostly);
	// round 1 first makes it the leader, so the cut also deposes a leader
	// with clients pointed at it.
	var report []string
	for round := 0; round < 2; round++ {
		if round == 1 {
			c.makeLeader(isolated)
		}
		stopWriter := startWriter()
		c.waitFor(time.Minute, "writes before the cut", func() (bool, string) { return acked() >= 3, fmt.Sprint(acked()) })
		wasLeader := c.Leader() == isolated
		link.set(t, false)
		cut := time.Now()
		t.Logf("round %d: link cut at %s", round, cut.Format("15:04:05.0"))
		beforeCut := acked()
		if _, err := metaHealth(c.MetaAPI[isolated]); err == nil {
			t.Fatalf("meta3 still answers at %s with its link cut: the drill isolates nothing", c.MetaAPI[isolated])
		}
		want := drillPick(8, 40)
		c.waitFor(2*time.Minute, "writes acknowledged by the majority while one node is cut off", func() (bool, string) {
			return acked() >= beforeCut+want && time.Since(cut) >= time.Duration(drillPick(5, 20))*time.Second,
				fmt.Sprintf("%d since the cut", acked()-beforeCut)
		})
		if wasLeader {
			// The chunkservers must find the new leader within a few
			// heartbeats, or it marks them suspect and places nothing.
			c.checkChunkserversFollow(t)
		}
		duringCut := acked() - beforeCut
		link.set(t, true)
		healed := time.Now()
		t.Logf("round %d: link back at %s", round, healed.Format("15:04:05.0"))
		c.waitFor(time.Minute, "writes after the link returned", func() (bool, string) {
			return acked() >= beforeCut+duringCut+3, fmt.Sprint(acked())
		})
		stopWriter()

		// Every node, asked for its own state, agrees with the others.
		c.waitFor(2*time.Minute, "the isolated metaserver to converge", func() (bool, string) {
			var views []string
			var first string
			same := true
			for i, api := range c.MetaAPI {
				st, err := metaStatus(api)
				if err != nil {
					return false, err.Error()
				}
				v := fmt.Sprintf("inodes %d chunks %d applied %d", st.Inodes, st.Chunks, st.AppliedIndex)
				views = append(views, fmt.Sprintf("meta%d: %s", i+1, v))
				if i == 0 {
					first = v
				} else if v != first {
					same = false
				}
			}
			return same, strings.Join(views, "; ")
		})
		converged := time.Since(healed)
		// Each address answers (or redirects to the leader) with the
		// same listing: no node hands a client a stale view.
		var listings []string
		for _, api := range c.MetaAPI {
			out, err := c.cliStdout(time.Minute, "ls", "--meta", api, "dfs:/")
			if err != nil {
				t.Fatalf("ls through %s: %v", api, err)
			}
			listings = append(listings, out)
		}
		for i := range listings {
			if listings[i] != listings[0] {
				t.Errorf("dockyard ls dfs:/ through meta%d differs from meta1:\n%s\nvs\n%s", i+1, listings[i], listings[0])
			}
		}
		mu.Lock()
		during, outside := splitTimes(copyTimes, cut, healed)
		mu.Unlock()
		report = append(report, fmt.Sprintf("round %d: meta3 (leader at the cut: %v) isolated %s while the others acknowledged %d writes "+
			"(a copy in flight while it was cut off took median %s, max %s; median %s otherwise), converged %s after the link returned",
			round, wasLeader, healed.Sub(cut).Round(100*time.Millisecond), duringCut, median(during), maxOf(during),
			median(outside), converged.Round(100*time.Millisecond)))
	}

	// The rejoined node must be a working voter: without the leader, no
	// quorum forms unless it takes part.
	l := c.WaitLeader(30 * time.Second)
	if l != isolated {
		c.Kill(c.Metas[l])
		c.WaitLeader(time.Minute)
	}
	var verified int64
	for _, f := range files {
		if err := c.verifyFile(f); err != nil {
			t.Errorf("acknowledged file after the partition: %v", err)
		}
		verified += f.size
	}
	for _, p := range images {
		n, err := drillVerifyPulled(p)
		if err != nil {
			t.Errorf("acknowledged push after the partition: %v", err)
		}
		verified += n
	}
	if len(failedPushes) > 0 {
		t.Logf("pushes that failed while a node was cut off: %v", failedPushes)
	}
	for _, f := range fails {
		// A failed copy may leave its name with what was committed, but
		// what is there reads without error.
		path, _, _ := strings.Cut(f, ":")
		if _, err := c.cliStdout(time.Minute, "cp", "--meta", c.MetaList(), "dfs:"+path, "-"); err != nil &&
			!strings.Contains(err.Error(), "no such file") {
			t.Errorf("failed copy %s does not read: %v", path, err)
		}
	}
	if len(fails) > 0 {
		t.Logf("writes that failed while a node was cut off: %v", fails)
	}
	for _, f := range fails {
		// The chunkservers' disks are nearly empty: "no space" here means
		// the new leader counted them out (see checkChunkserversFollow;
		// docs/reliability.md, fixed bug 2).
		if strings.Contains(f, "not enough chunkservers with free space") {
			t.Errorf("a write failed with a placement error while every disk had room: %s", f)
		}
	}
	if l != isolated {
		c.Start(c.Metas[l])
	}
	t.Logf("DRILL partition: %s (same inodes, chunks and applied index on all 3); %d copies and %d pushes acknowledged "+
		"in all, %d copies and %d pushes failed; %d files and %d images (%d bytes) read back through a quorum that "+
		"needs the rejoined node", strings.Join(report, "; "), len(files), len(images), len(fails), len(failedPushes),
		len(files), len(images), verified)
}

// makeLeader kills and restarts whichever other metaserver leads until
// metaserver i is elected.
func (c *drillCluster) makeLeader(i int) {
	c.t.Helper()
	for try := 0; try < 20; try++ {
		l := c.WaitLeader(time.Minute)
		if l == i {
			return
		}
		c.Kill(c.Metas[l])
		c.WaitLeader(time.Minute)
		c.Start(c.Metas[l])
		c.waitFor(time.Minute, c.Metas[l].name+" back", func() (bool, string) {
			_, err := metaHealth(c.MetaAPI[l])
			return err == nil, fmt.Sprint(err)
		})
	}
	c.t.Fatalf("meta%d did not become the leader in 20 elections", i+1)
}

// checkChunkserversFollow watches the new leader for ten seconds after its
// election (longer than the suspect timeout, 3 s, plus three heartbeats)
// and checks that it never counts a chunkserver out: their heartbeats must
// reach it before it suspects them, or it places nothing on them.
func (c *drillCluster) checkChunkserversFollow(t *testing.T) {
	t.Helper()
	l := c.WaitLeader(time.Minute)
	elected := time.Now()
	minUp, worst, at := len(c.Chunks), "", time.Duration(0)
	for time.Since(elected) < 10*time.Second {
		time.Sleep(250 * time.Millisecond)
		st, err := metaStatus(c.MetaAPI[l])
		if err != nil {
			t.Fatalf("status of the new leader meta%d: %v", l+1, err)
		}
		up := 0
		var states []string
		for _, cs := range st.Chunkservers {
			if cs.State == metaserver.StateUp {
				up++
			}
			states = append(states, fmt.Sprintf("%s %s", cs.ID, cs.State))
		}
		if up < minUp {
			minUp, worst, at = up, strings.Join(states, ", "), time.Since(elected)
		}
	}
	if minUp == len(c.Chunks) {
		return
	}
	t.Errorf("%s after its election the new leader meta%d counted only %d of %d chunkservers up (%s): "+
		"their heartbeats were still stuck on the unreachable old leader", at.Round(100*time.Millisecond), l+1, minUp,
		len(c.Chunks), worst)
}

// timedOp is when one write began and how long it took.
type timedOp struct {
	at   time.Time
	took time.Duration
}

// splitTimes separates the writes in flight at some time in [from, to)
// from the rest.
func splitTimes(ops []timedOp, from, to time.Time) (in, out []time.Duration) {
	for _, o := range ops {
		if o.at.Add(o.took).After(from) && o.at.Before(to) {
			in = append(in, o.took)
		} else {
			out = append(out, o.took)
		}
	}
	return in, out
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2].Round(10 * time.Millisecond)
}

func maxOf(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	return slices.Max(ds).Round(10 * time.Millisecond)
}
