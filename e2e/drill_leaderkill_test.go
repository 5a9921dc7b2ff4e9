package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDrillLeaderKillDuringPushes pushes images with crane while the
// metaserver leader is SIGKILLed every few seconds and started again. Every
// push crane reported as done must pull back whole with the digest crane
// printed; a push that failed must leave its tag unresolvable or pointing at
// a complete image, never at something half there.
func TestDrillLeaderKillDuringPushes(t *testing.T) {
	RequireTool(t, "crane")
	c := startDrillCluster(t, drillConfig{Metas: 3, Chunkservers: 6, Registries: 2})
	// At least this many pushes, and pushing goes on until the leader has
	// died minKills times, so kills land in the middle of pushes.
	minPushes, minKills := drillPick(10, 50), drillPick(3, 12)
	every := time.Duration(drillPick(2, 3)) * time.Second
	tmp := t.TempDir()
	start := time.Now()

	stop := make(chan struct{})
	var (
		mu       sync.Mutex
		kills    int
		killErrs []error
	)
	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		for {
			select {
			case <-stop:
				return
			case <-time.After(every):
			}
			l := c.Leader()
			if l < 0 {
				continue // an election is still going on: let it finish
			}
			p := c.Metas[l]
			err := c.kill(p)
			if err == nil {
				mu.Lock()
				kills++
				mu.Unlock()
				// Back after a moment, as a supervisor would restart it;
				// the other two elect a leader meanwhile.
				time.Sleep(time.Second)
				err = c.start(p)
			}
			if err != nil {
				mu.Lock()
				killErrs = append(killErrs, err)
				mu.Unlock()
				return
			}
		}
	}()

	var ok []drillImage
	failed := map[string]string{} // ref -> crane's output
	killed := func() int { mu.Lock(); defer mu.Unlock(); return kills }
	pushes := 0
	for i := 0; i < minPushes || killed() < minKills; i++ {
		if time.Since(start) > 5*time.Minute {
			t.Fatalf("after 5 minutes and %d pushes the leader died only %d times", i, killed())
		}
		pushes++
		// Alternate between the two registries; each image is checked
		// through the other one afterwards.
		ref := fmt.Sprintf("%s/drill/leaderkill/img%d:v1", c.RegAddrs[i%2], i)
		// 256 KiB to 1.25 MiB (long: to 6.25 MiB, several chunks):
		// erasure-coded chunks.
		p, out, err := drillCranePush(t, tmp, ref, 256<<10+(i%5)*drillPick(256<<10, 1536<<10))
		if err != nil {
			failed[ref] = out
			t.Logf("push %d failed (allowed while the leader dies): %v: %s", i, err, strings.TrimSpace(out))
			continue
		}
		ok = append(ok, p)
	}
	close(stop)
	<-killerDone
	pushTime := time.Since(start)
	if len(killErrs) > 0 {
		t.Fatalf("killing/restarting the leader: %v", killErrs)
	}
	if kills == 0 {
		t.Fatalf("the pushes finished before any leader was killed; the drill proved nothing")
	}
	for _, p := range c.Metas {
		if !p.running() {
			t.Fatalf("%s is not running after the drill", p.name)
		}
	}
	c.WaitLeader(60 * time.Second)

	var verified int64
	for _, p := range ok {
		if strings.HasPrefix(p.ref, c.RegAddrs[0]+"/") {
			p.ref = c.RegAddrs[1] + strings.TrimPrefix(p.ref, c.RegAddrs[0])
		} else {
			p.ref = c.RegAddrs[0] + strings.TrimPrefix(p.ref, c.RegAddrs[1])
		}
		n, err := drillVerifyPulled(p)
		if err != nil {
			t.Errorf("acknowledged push lost or damaged: %v", err)
		}
		verified += n
	}
	for ref, pushOut := range failed {
		out, err := RunErr(time.Minute, "crane", "digest", "--insecure", ref)
		if err != nil {
			if !strings.Contains(out, "MANIFEST_UNKNOWN") && !strings.Contains(out, "NAME_UNKNOWN") {
				t.Errorf("failed push %s: its tag neither resolves nor is unknown: %v: %s", ref, err, out)
			}
			continue
		}
		if _, err := drillValidateRemote(ref); err != nil {
			t.Errorf("failed push %s left a tag pointing at an incomplete image: %v (push said %s)", ref, err, pushOut)
		}
	}
	r := c.WaitFsckClean(2 * time.Minute)
	t.Logf("DRILL leader-kill: pushes %d, acknowledged %d, failed %d, leader SIGKILLs %d, bytes verified %d, "+
		"push phase %s, fsck %d chunks healthy",
		pushes, len(ok), len(failed), kills, verified, pushTime.Round(time.Second), r.Healthy)
}
