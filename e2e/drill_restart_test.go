package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestDrillKillEverything SIGKILLs every process of the cluster at once while
// images are being pushed and files copied in, then starts them all again on
// their data directories: everything acknowledged before the cut is there,
// byte for byte; what was in flight is either whole or absent; fsck is clean.
// Half the chunkservers run with --group-commit, so its flush groups go
// through the same cut and restart as the default fsync per shard.
func TestDrillKillEverything(t *testing.T) {
	RequireTool(t, "crane")
	c := startDrillCluster(t, drillConfig{Metas: 3, Chunkservers: 6, Registries: 2,
		ChunkArgs: func(i int) []string {
			if i%2 == 1 {
				return []string{"--group-commit"}
			}
			return nil
		}})
	tmp := t.TempDir()
	rounds := drillPick(1, 3)
	var (
		mu      sync.Mutex
		images  []drillImage
		files   []drillFile
		unacked []string // refs and paths whose write was cut
	)
	start := time.Now()
	for round := 0; round < rounds; round++ {
		stop := make(chan struct{})
		var wg sync.WaitGroup
		// One writer pushes images through registry1, one copies files in;
		// both keep going until the power cut.
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ref := fmt.Sprintf("%s/drill/restart/r%d:i%d", c.RegAddrs[0], round, i)
				p, _, err := drillCranePush(t, tmp, ref, 200<<10+(i%4)*400<<10)
				mu.Lock()
				if err == nil {
					images = append(images, p)
				} else {
					unacked = append(unacked, ref)
				}
				mu.Unlock()
			}
		}()
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				path := fmt.Sprintf("/restart-r%d-f%d", round, i)
				// Some bytes short of a chunk up to two chunks and a bit.
				f, err := c.cpIn(t, tmp, path, 100<<10+(i%3)*3<<20)
				mu.Lock()
				if err == nil {
					files = append(files, f)
				} else {
					unacked = append(unacked, "dfs:"+path)
				}
				mu.Unlock()
			}
		}()
		// Let writes accumulate, then cut the power in the middle of them.
		c.waitFor(2*time.Minute, "some acknowledged writes", func() (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			return len(images) >= 3*(round+1) && len(files) >= 2*(round+1),
				fmt.Sprintf("%d images, %d files", len(images), len(files))
		})
		t.Logf("round %d: %d images, %d files acknowledged after %s; cutting the power", round, len(images), len(files), time.Since(start).Round(time.Second))
		c.KillEverything()
		close(stop)
		restart := time.Now()
		c.StartEverything()
		t.Logf("round %d: cluster back in %s", round, time.Since(restart).Round(100*time.Millisecond))
		// Writes cut mid-way retry against the restarted cluster: those
		// that end up acknowledged are checked like the rest.
		wg.Wait()
	}
	outage := time.Since(start)

	// Read through the second registry: registries keep no state of their own.
	var verified int64
	for _, p := range images {
		p.ref = strings.Replace(p.ref, c.RegAddrs[0], c.RegAddrs[1], 1)
		n, err := drillVerifyPulled(p)
		if err != nil {
			t.Errorf("acknowledged push lost after the restart: %v", err)
		}
		verified += n
	}
	for _, f := range files {
		if err := c.verifyFile(f); err != nil {
			t.Errorf("acknowledged file lost after the restart: %v", err)
		}
		verified += f.size
	}
	for _, w := range unacked {
		if strings.HasPrefix(w, "dfs:") {
			// A cut copy may leave the name with what was committed; it
			// must still read without error.
			if _, err := c.cliStdout(time.Minute, "cp", "--meta", c.MetaList(), w, "-"); err != nil &&
				!strings.Contains(err.Error(), "no such file") {
				t.Errorf("interrupted copy %s does not read: %v", w, err)
			}
			continue
		}
		ref := strings.Replace(w, c.RegAddrs[0], c.RegAddrs[1], 1)
		if out, err := RunErr(time.Minute, "crane", "digest", "--insecure", ref); err != nil {
			if !strings.Contains(out, "MANIFEST_UNKNOWN") && !strings.Contains(out, "NAME_UNKNOWN") {
				t.Errorf("interrupted push %s: tag neither resolves nor is unknown: %v: %s", ref, err, out)
			}
		} else if _, err := drillValidateRemote(ref); err != nil {
			t.Errorf("interrupted push %s left a tag pointing at an incomplete image: %v", ref, err)
		}
	}
	r := c.WaitFsckClean(2 * time.Minute)
	t.Logf("DRILL kill-everything: power cuts %d, processes SIGKILLed %d, acknowledged images %d, files %d, "+
		"interrupted writes %d, bytes verified %d, fsck %d chunks healthy, writes+cuts+restarts %s",
		rounds, rounds*(len(c.Metas)+len(c.Chunks)+len(c.Regs)), len(images), len(files), len(unacked), verified,
		r.Healthy, outage.Round(time.Second))
}
