package e2e

// Helpers of the failure drills (drill_*_test.go): a cluster of separate
// `dockyard` processes on free loopback ports (N metaservers, M chunkservers,
// R registries), any one of which a drill can SIGKILL and start again on the
// same data directory and address, as an operator's machine would come back.

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dockyard/dockyard/fs/fsck"
	"github.com/dockyard/dockyard/metaserver"
)

// drillLong reports whether the long drills run (scripts/drills.sh sets
// DOCKYARD_DRILLS=long); CI runs the short versions.
func drillLong() bool { return os.Getenv("DOCKYARD_DRILLS") == "long" }

// pick returns long in long mode and short otherwise.
func drillPick(short, long int) int {
	if drillLong() {
		return long
	}
	return short
}

// drillProc is one `dockyard` child process, restartable with the same
// command line.
type drillProc struct {
	name    string
	args    []string
	netns   string // run inside this network namespace when set
	logPath string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{}
}

// running reports whether the process was started and has not exited.
func (p *drillProc) running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

func (p *drillProc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// drillConfig shapes a drill cluster.
type drillConfig struct {
	Metas, Chunkservers, Registries int
	// SuspectAfter and DownAfter are the metaservers' liveness timeouts
	// (0: the servers' defaults).
	SuspectAfter, DownAfter time.Duration
	// MetaHost gives metaserver i (0-based) the host it listens on and the
	// network namespace it runs in ("" = this one). Default 127.0.0.1.
	MetaHost func(i int) (host, netns string)
	// ChunkDir gives chunkserver i its data directory (default under the
	// cluster's directory); ChunkArgs adds flags.
	ChunkDir  func(i int) string
	ChunkArgs func(i int) []string
	// RegArgs adds flags to every registry (e.g. --ec).
	RegArgs []string
}

// drillCluster is a running multi-process cluster.
type drillCluster struct {
	t        *testing.T
	bin      string
	dir      string
	Metas    []*drillProc
	MetaAPI  []string // API address of each metaserver
	Chunks   []*drillProc
	Regs     []*drillProc
	RegAddrs []string
}

// MetaList is the --meta value naming every metaserver.
func (c *drillCluster) MetaList() string { return strings.Join(c.MetaAPI, ",") }

// startDrillCluster starts the cluster and waits until every metaserver is a
// member, every chunkserver is up and every registry answers. Every process
// is SIGKILLed (by PID) when the test ends.
func startDrillCluster(t *testing.T, cfg drillConfig) *drillCluster {
	t.Helper()
	c := &drillCluster{t: t, bin: Binary(t), dir: t.TempDir()}
	t.Cleanup(c.killAll)
	t.Cleanup(func() {
		if t.Failed() {
			c.dumpLogs()
		}
	})
	zones := []string{"a", "b", "c"}
	var firstAPI string
	for i := 0; i < cfg.Metas; i++ {
		host, ns := "127.0.0.1", ""
		if cfg.MetaHost != nil {
			host, ns = cfg.MetaHost(i)
		}
		api, raftAddr := drillHostPort(t, host), drillHostPort(t, host)
		name := fmt.Sprintf("meta%d", i+1)
		args := []string{"metaserver", "--id", name, "--data", filepath.Join(c.dir, name),
			"--listen", api, "--raft", raftAddr}
		if cfg.SuspectAfter > 0 {
			args = append(args, "--suspect-after", cfg.SuspectAfter.String())
		}
		if cfg.DownAfter > 0 {
			args = append(args, "--down-after", cfg.DownAfter.String())
		}
		if i == 0 {
			firstAPI = api
		} else {
			args = append(args, "--join", firstAPI)
		}
		p := c.newProc(name, args)
		p.netns = ns
		c.Metas = append(c.Metas, p)
		c.MetaAPI = append(c.MetaAPI, api)
		c.Start(p)
		// Nodes join one at a time: a join goes through the leader, which
		// the first node becomes only once it has elected itself.
		c.waitFor(60*time.Second, name+" healthy", func() (bool, string) {
			_, err := metaHealth(api)
			return err == nil, fmt.Sprint(err)
		})
	}
	c.waitFor(60*time.Second, "every metaserver a member", func() (bool, string) {
		st, err := metaStatus(firstAPI)
		if err != nil {
			return false, err.Error()
		}
		return len(st.Members) == cfg.Metas, fmt.Sprintf("%d members", len(st.Members))
	})
	for i := 0; i < cfg.Chunkservers; i++ {
		name := fmt.Sprintf("chunk%d", i+1)
		data := filepath.Join(c.dir, name)
		if cfg.ChunkDir != nil {
			data = cfg.ChunkDir(i)
		}
		// No background scrub: the drills check every byte themselves, and
		// scrubbing seven servers would take CPU the drills' clients need.
		args := []string{"chunkserver", "--data", data, "--listen", drillHostPort(t, "127.0.0.1"),
			"--meta", c.MetaList(), "--label", "zone=" + zones[i%len(zones)], "--scrub-rate", "0"}
		if cfg.ChunkArgs != nil {
			args = append(args, cfg.ChunkArgs(i)...)
		}
		p := c.newProc(name, args)
		c.Chunks = append(c.Chunks, p)
		c.Start(p)
	}
	c.WaitChunkserversUp(cfg.Chunkservers)
	for i := 0; i < cfg.Registries; i++ {
		name := fmt.Sprintf("registry%d", i+1)
		addr := drillHostPort(t, "127.0.0.1")
		// No collector: a drill checks what a failed push left behind,
		// which the collector could remove before the check.
		args := []string{"registry", "--listen", addr, "--meta", c.MetaList(), "--gc-interval", "0"}
		p := c.newProc(name, append(args, cfg.RegArgs...))
		c.Regs = append(c.Regs, p)
		c.RegAddrs = append(c.RegAddrs, addr)
		c.Start(p)
	}
	for i, addr := range c.RegAddrs {
		c.waitFor(60*time.Second, c.Regs[i].name+" answering", func() (bool, string) {
			resp, err := drillHTTP.Get("http://" + addr + "/v2/")
			if err != nil {
				return false, err.Error()
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, resp.Status
		})
	}
	return c
}

// handedOut holds the addresses drillHostPort has given out. A probed port
// is closed again before the process that will use it starts, so a second
// probe may be given the same port; the servers of one drill then collide
// ("address already in use"). Each address is handed out once.
var handedOut struct {
	sync.Mutex
	m map[string]bool
}

// drillHostPort is FreePort on any local host address, never the same
// address twice.
func drillHostPort(t *testing.T, host string) string {
	t.Helper()
	for {
		addr := probeHostPort(host)
		handedOut.Lock()
		if handedOut.m == nil {
			handedOut.m = map[string]bool{}
		}
		fresh := !handedOut.m[addr]
		handedOut.m[addr] = true
		handedOut.Unlock()
		if fresh {
			return addr
		}
	}
}

// probeHostPort returns an address on host with a port free right now.
func probeHostPort(host string) string {
	if addr, err := freeHostPort(host); err == nil {
		return addr
	}
	// An address inside another network namespace cannot be probed from
	// here; nothing else listens in the drill's fresh namespace.
	b := make([]byte, 2)
	rand.Read(b)
	return fmt.Sprintf("%s:%d", host, 20000+int(b[0])<<5+int(b[1])%32)
}

func (c *drillCluster) newProc(name string, args []string) *drillProc {
	return &drillProc{name: name, args: args, logPath: filepath.Join(c.dir, name+".log")}
}

// Start starts p (again), appending to its log.
func (c *drillCluster) Start(p *drillProc) {
	c.t.Helper()
	if err := c.start(p); err != nil {
		c.t.Fatal(err)
	}
}

// start is Start for goroutines other than the test's.
func (c *drillCluster) start(p *drillProc) error {
	if p.running() {
		return fmt.Errorf("%s is already running", p.name)
	}
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	var cmd *exec.Cmd
	if p.netns != "" {
		// ip netns exec execs the command, so the PID is dockyard's own.
		cmd = exec.Command("ip", append([]string{"netns", "exec", p.netns, c.bin}, p.args...)...)
	} else {
		cmd = exec.Command(c.bin, p.args...)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("starting %s: %w", p.name, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(exited) }()
	p.mu.Lock()
	p.cmd, p.exited = cmd, exited
	p.mu.Unlock()
	return nil
}

// Kill SIGKILLs p and waits until it has exited.
func (c *drillCluster) Kill(p *drillProc) {
	c.t.Helper()
	if err := c.kill(p); err != nil {
		c.t.Fatal(err)
	}
}

// kill is Kill for goroutines other than the test's.
func (c *drillCluster) kill(p *drillProc) error {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("%s was never started", p.name)
	}
	select {
	case <-exited:
		return fmt.Errorf("%s had exited before the drill killed it; its log:\n%s", p.name, drillLogTail(p.logPath))
	default:
	}
	cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-exited:
		return nil
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s (pid %d) still running 30s after SIGKILL", p.name, cmd.Process.Pid)
	}
}

// killAll SIGKILLs every process still running, by PID.
func (c *drillCluster) killAll() {
	for _, group := range [][]*drillProc{c.Regs, c.Chunks, c.Metas} {
		for _, p := range group {
			if p.running() {
				p.mu.Lock()
				cmd, exited := p.cmd, p.exited
				p.mu.Unlock()
				cmd.Process.Signal(syscall.SIGKILL)
				<-exited
			}
		}
	}
}

// dumpLogs prints the end of every process's log.
func (c *drillCluster) dumpLogs() {
	for _, group := range [][]*drillProc{c.Metas, c.Chunks, c.Regs} {
		for _, p := range group {
			c.t.Logf("---- %s log (end) ----\n%s", p.name, drillLogTail(p.logPath))
		}
	}
}

func drillLogTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// waitFor polls cond every 200 ms until it holds, failing the test with the
// last reason after timeout.
func (c *drillCluster) waitFor(timeout time.Duration, what string, cond func() (bool, string)) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("waiting %s for %s: %s", timeout, what, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var drillHTTP = &http.Client{Timeout: 5 * time.Second}

// metaHealth asks one metaserver's /healthz; it fails while the node knows no
// leader.
func metaHealth(api string) (state string, err error) {
	resp, err := drillHTTP.Get("http://" + api + "/healthz")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var h struct {
		State  string `json:"state"`
		Leader string `json:"leader"`
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		return "", fmt.Errorf("%s: %s %s", api, resp.Status, bytes.TrimSpace(b))
	}
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return "", err
	}
	return h.State, nil
}

// metaStatus asks one metaserver for its own view of the cluster (status is
// answered locally, so a lagging node shows its own state).
func metaStatus(api string) (*metaserver.Status, error) {
	resp, err := drillHTTP.Post("http://"+api+"/v1/op/status", "application/json", strings.NewReader("{}"))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s status: %s %s", api, resp.Status, bytes.TrimSpace(b))
	}
	var st metaserver.Status
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s status: %w", api, err)
	}
	return &st, nil
}

// Leader returns the index of the metaserver that says it is the leader, or
// -1 when none does right now.
func (c *drillCluster) Leader() int {
	for i, p := range c.Metas {
		if !p.running() {
			continue
		}
		if st, err := metaHealth(c.MetaAPI[i]); err == nil && st == "Leader" {
			return i
		}
	}
	return -1
}

// WaitLeader waits until some running metaserver leads and returns it.
func (c *drillCluster) WaitLeader(timeout time.Duration) int {
	c.t.Helper()
	l := -1
	c.waitFor(timeout, "a metaserver leader", func() (bool, string) {
		l = c.Leader()
		return l >= 0, "no running metaserver says it leads"
	})
	return l
}

// WaitChunkserversUp waits until n chunkservers are up.
func (c *drillCluster) WaitChunkserversUp(n int) {
	c.t.Helper()
	c.waitFor(60*time.Second, fmt.Sprintf("%d chunkservers up", n), func() (bool, string) {
		st, err := c.Status()
		if err != nil {
			return false, err.Error()
		}
		up := 0
		for _, cs := range st.Chunkservers {
			if cs.State == metaserver.StateUp {
				up++
			}
		}
		return up == n, fmt.Sprintf("%d up", up)
	})
}

// Status runs `dockyard admin status --json`, as an operator's script would.
func (c *drillCluster) Status() (*metaserver.Status, error) {
	out, err := c.cli(30*time.Second, "admin", "status", "--json", "--meta", c.MetaList())
	if err != nil {
		return nil, fmt.Errorf("admin status: %v: %s", err, out)
	}
	var st metaserver.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		return nil, fmt.Errorf("admin status --json: %w: %s", err, out)
	}
	return &st, nil
}

// Fsck runs `dockyard admin fsck --json`; a report with problems comes back
// with a nil error (fsck exits 1 then), anything else is an error.
func (c *drillCluster) Fsck() (*fsck.Report, error) {
	out, err := c.cliStdout(3*time.Minute, "admin", "fsck", "--json", "--meta", c.MetaList())
	var r fsck.Report
	if jerr := json.Unmarshal([]byte(out), &r); jerr != nil {
		return nil, fmt.Errorf("admin fsck: %v: %s", err, out)
	}
	return &r, nil
}

// WaitFsckClean waits until fsck reports every chunk healthy and returns the
// report.
func (c *drillCluster) WaitFsckClean(timeout time.Duration) *fsck.Report {
	c.t.Helper()
	var r *fsck.Report
	c.waitFor(timeout, "a clean fsck", func() (bool, string) {
		var err error
		r, err = c.Fsck()
		if err != nil {
			return false, err.Error()
		}
		return r.Clean() && r.Healthy == r.Chunks,
			fmt.Sprintf("healthy %d of %d, degraded %d, lost %d, dangling %v", r.Healthy, r.Chunks, r.Degraded, r.Lost, r.Dangling)
	})
	return r
}

// WaitRedundant waits until the metaservers report no degraded, no lost
// chunk and no repair queued.
func (c *drillCluster) WaitRedundant(timeout time.Duration) *metaserver.Status {
	c.t.Helper()
	var st *metaserver.Status
	c.waitFor(timeout, "full redundancy", func() (bool, string) {
		var err error
		st, err = c.Status()
		if err != nil {
			return false, err.Error()
		}
		return st.Degraded == 0 && st.Lost == 0 && st.RepairsQueued == 0,
			fmt.Sprintf("degraded %d, lost %d, repairs queued %d", st.Degraded, st.Lost, st.RepairsQueued)
	})
	return st
}

// cli runs the dockyard binary and returns its combined output.
func (c *drillCluster) cli(timeout time.Duration, args ...string) (string, error) {
	return RunErr(timeout, c.bin, args...)
}

// cliStdout runs the dockyard binary and returns its stdout only.
func (c *drillCluster) cliStdout(timeout time.Duration, args ...string) (string, error) {
	cmd := exec.Command(c.bin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		return "", err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			return out.String(), fmt.Errorf("%v: %s", err, strings.TrimSpace(errb.String()))
		}
		return out.String(), nil
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("dockyard %s: timed out after %s", strings.Join(args, " "), timeout)
	}
}

// drillRandomFile writes n random bytes to a new file in dir and returns its path
// and SHA-256.
func drillRandomFile(t *testing.T, dir, name string, n int) (string, string) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return p, hex.EncodeToString(s[:])
}

// drillLayerTar writes a tar of one file of n random bytes (incompressible,
// so the pushed layer is about n bytes) and returns its path.
func drillLayerTar(t *testing.T, tmpDir, name string, n int) string {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	p := filepath.Join(tmpDir, name+".tar")
	tb := buildTar(t, []entry{dir("data/"), {name: "data/" + name, typ: tar.TypeReg, mode: 0o644, body: b}})
	if err := os.WriteFile(p, tb, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func drillSHA256File(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", n, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// drillImage is an image a drill pushed with crane and the digest crane reported.
type drillImage struct {
	ref    string // registry/repo:tag
	digest string
	bytes  int64 // layer bytes
}

// drillCranePush builds an image of one random layer of n bytes and pushes it
// with crane append, returning the manifest digest crane printed.
func drillCranePush(t *testing.T, tmp, ref string, n int) (drillImage, string, error) {
	t.Helper()
	layer := drillLayerTar(t, tmp, fmt.Sprintf("l%d", time.Now().UnixNano()), n)
	defer os.Remove(layer)
	out, err := RunErr(2*time.Minute, "crane", "append", "--insecure", "-f", layer, "-t", ref)
	if err != nil {
		return drillImage{}, out, err
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	_, d, ok := strings.Cut(last, "@")
	if !ok || !strings.HasPrefix(d, "sha256:") {
		return drillImage{}, out, fmt.Errorf("crane append printed no digest: %q", out)
	}
	return drillImage{ref: ref, digest: d, bytes: int64(n)}, out, nil
}

// drillVerifyPulled checks an image pushed earlier: its tag resolves to the digest
// crane was given, and crane pulls it whole (every blob fetched and checked
// against its digest). It returns the bytes pulled.
func drillVerifyPulled(p drillImage) (int64, error) {
	out, err := RunErr(2*time.Minute, "crane", "digest", "--insecure", p.ref)
	if err != nil {
		return 0, fmt.Errorf("crane digest %s: %v: %s", p.ref, err, out)
	}
	if got := strings.TrimSpace(out); got != p.digest {
		return 0, fmt.Errorf("%s resolves to %s, pushed %s", p.ref, got, p.digest)
	}
	return drillValidateRemote(p.ref)
}

// drillValidateRemote pulls ref with crane and checks every blob against its
// digest; it returns the bytes of the layers.
func drillValidateRemote(ref string) (int64, error) {
	tmp, err := os.MkdirTemp("", "drill-pull-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	out, err := RunErr(2*time.Minute, "crane", "pull", "--insecure", "--format", "oci", ref, tmp)
	if err != nil {
		return 0, fmt.Errorf("crane pull %s: %v: %s", ref, err, out)
	}
	// crane pull checks digests as it writes; check again from disk so a
	// drill does not rest on the client's own verification alone.
	var total int64
	blobs := filepath.Join(tmp, "blobs", "sha256")
	ents, err := os.ReadDir(blobs)
	if err != nil {
		return 0, err
	}
	for _, e := range ents {
		sum, n, err := drillSHA256File(filepath.Join(blobs, e.Name()))
		if err != nil {
			return total, err
		}
		if sum != e.Name() {
			return total, fmt.Errorf("%s: blob %s has sha256 %s", ref, e.Name(), sum)
		}
		total += n
	}
	return total, nil
}

// KillEverything SIGKILLs every process of the cluster at once (all signals
// first, then the waits), as a power cut would.
func (c *drillCluster) KillEverything() {
	c.t.Helper()
	var all []*drillProc
	for _, group := range [][]*drillProc{c.Metas, c.Chunks, c.Regs} {
		for _, p := range group {
			if p.running() {
				all = append(all, p)
				p.cmd.Process.Signal(syscall.SIGKILL)
			}
		}
	}
	for _, p := range all {
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			c.t.Fatalf("%s (pid %d) still running 30s after SIGKILL", p.name, p.pid())
		}
	}
}

// StartEverything starts every process that is not running and waits until
// a leader is elected, every chunkserver is up and every registry answers.
func (c *drillCluster) StartEverything() {
	c.t.Helper()
	for _, group := range [][]*drillProc{c.Metas, c.Chunks, c.Regs} {
		for _, p := range group {
			if !p.running() {
				c.Start(p)
			}
		}
	}
	c.WaitLeader(60 * time.Second)
	c.WaitChunkserversUp(len(c.Chunks))
	for i, addr := range c.RegAddrs {
		c.waitFor(60*time.Second, c.Regs[i].name+" answering", func() (bool, string) {
			resp, err := drillHTTP.Get("http://" + addr + "/v2/")
			if err != nil {
				return false, err.Error()
			}
			resp.Body.Close()
			return resp.StatusCode == http.StatusOK, resp.Status
		})
	}
}

// drillFile is a file a drill wrote into the cluster with `dockyard cp`.
type drillFile struct {
	dfs  string // dfs:/path
	sum  string // sha256 of the content
	size int64
}

// cpIn copies a new random file of n bytes into the cluster at dfsPath.
func (c *drillCluster) cpIn(t *testing.T, tmp, dfsPath string, n int) (drillFile, error) {
	local, sum := drillRandomFile(t, tmp, strings.ReplaceAll(strings.TrimPrefix(dfsPath, "/"), "/", "_"), n)
	defer os.Remove(local)
	out, err := c.cli(2*time.Minute, "cp", "--meta", c.MetaList(), local, "dfs:"+dfsPath)
	if err != nil {
		return drillFile{}, fmt.Errorf("dockyard cp %s: %v: %s", dfsPath, err, strings.TrimSpace(out))
	}
	return drillFile{dfs: "dfs:" + dfsPath, sum: sum, size: int64(n)}, nil
}

// verifyFile reads f back with `dockyard cp` (a fresh client, no cache) and
// compares its SHA-256.
func (c *drillCluster) verifyFile(f drillFile) error {
	tmp, err := os.MkdirTemp("", "drill-read-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	local := filepath.Join(tmp, "f")
	if out, err := c.cli(2*time.Minute, "cp", "--meta", c.MetaList(), f.dfs, local); err != nil {
		return fmt.Errorf("reading %s: %v: %s", f.dfs, err, strings.TrimSpace(out))
	}
	sum, n, err := drillSHA256File(local)
	if err != nil {
		return err
	}
	if sum != f.sum || n != f.size {
		return fmt.Errorf("%s read back %d bytes with sha256 %s, wrote %d bytes with %s", f.dfs, n, sum, f.size, f.sum)
	}
	return nil
}

// Mount runs `dockyard mount` of the whole file system on a new directory
// with extra flags and waits until it is mounted. It is unmounted (and the
// process stopped by PID) when the test ends.
func (c *drillCluster) Mount(t *testing.T, extra ...string) string {
	t.Helper()
	needFUSE(t)
	dir := t.TempDir()
	var out bytes.Buffer
	cmd := exec.Command(c.bin, append(append([]string{"mount", "--meta", c.MetaList()}, extra...), dir)...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-exited:
			case <-time.After(20 * time.Second):
				cmd.Process.Kill()
				<-exited
			}
		}
		if isMounted(t, dir) {
			exec.Command("umount", "-l", dir).Run()
		}
	})
	c.waitFor(30*time.Second, "dockyard mount on "+dir, func() (bool, string) {
		select {
		case <-exited:
			t.Fatalf("dockyard mount exited:\n%s", out.String())
		default:
		}
		return isMounted(t, dir), "not mounted yet"
	})
	return dir
}

// flag returns the value following name on p's command line.
func (p *drillProc) flag(name string) string {
	for i, a := range p.args {
		if a == name && i+1 < len(p.args) {
			return p.args[i+1]
		}
	}
	return ""
}
