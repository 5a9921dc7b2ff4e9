// Package e2e runs Dockyard end to end: the real binary (`dockyard serve` and
// the client commands) against real clients (docker, podman, skopeo, crane,
// the OCI conformance suite, runc). Tools that are missing skip the test with
// the reason, except under CI=true, where a missing tool is a failure: CI's
// set-up installs them all, so a skip there would hide a broken install step.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Cluster is a running `dockyard serve`.
type Cluster struct {
	Registry string // host:port of the registry
	Meta     string // host:port of the metaserver API
	DataDir  string
	cmd      *exec.Cmd
	exited   chan struct{} // closed when the process has exited
	waitErr  error
	logPath  string
}

var (
	sharedOnce sync.Once
	shared     *Cluster
	sharedErr  error
)

// SharedCluster returns the one `dockyard serve` the package's tests share,
// starting it on first use; TestMain stops it.
func SharedCluster(t testing.TB) *Cluster {
	t.Helper()
	sharedOnce.Do(func() {
		dir, err := os.MkdirTemp("", "dockyard-e2e-")
		if err != nil {
			sharedErr = err
			return
		}
		shared, sharedErr = StartServe(dir)
	})
	if sharedErr != nil {
		t.Fatalf("starting dockyard serve: %v", sharedErr)
	}
	return shared
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.Stop()
		os.RemoveAll(shared.DataDir)
	}
	if builtBin != "" {
		os.RemoveAll(filepath.Dir(builtBin))
	}
	os.Exit(code)
}

// Binary returns the dockyard binary to test: $DOCKYARD_BIN (make test sets
// it) or one built from this checkout.
func Binary(t testing.TB) string {
	t.Helper()
	b, err := binary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
)

func binary() (string, error) {
	if b := os.Getenv("DOCKYARD_BIN"); b != "" {
		return b, nil
	}
	buildOnce.Do(func() {
		_, here, _, _ := runtime.Caller(0)
		root := filepath.Dir(filepath.Dir(here))
		dir, err := os.MkdirTemp("", "dockyard-bin-")
		if err != nil {
			buildErr = err
			return
		}
		builtBin = filepath.Join(dir, "dockyard")
		cmd := exec.Command("go", "build", "-o", builtBin, "./cmd/dockyard")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	return builtBin, buildErr
}

// FreePort returns a loopback address nobody listens on right now.
func FreePort() (string, error) {
	return freeHostPort("127.0.0.1")
}

// freeHostPort returns an address on host whose port is free right now,
// chosen below the kernel's ephemeral range (32768 and up by default). A
// port from that range, as a listen on port 0 hands out, can be taken by the
// local end of any outgoing connection between the probe and the server's
// own bind; the drills' read loads open thousands. Below it only another
// server probing at random can collide, and the probe sees those.
func freeHostPort(host string) (string, error) {
	for range 64 {
		port := 10000 + rand.IntN(22000)
		l, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			continue
		}
		addr := l.Addr().String()
		l.Close()
		return addr, nil
	}
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// StartServe starts `dockyard serve` on dir with free ports, and the flags
// in args, and waits until the registry answers /v2/.
func StartServe(dir string, args ...string) (*Cluster, error) {
	bin, err := binary()
	if err != nil {
		return nil, err
	}
	reg, err := FreePort()
	if err != nil {
		return nil, err
	}
	meta, err := FreePort()
	if err != nil {
		return nil, err
	}
	raft, err := FreePort()
	if err != nil {
		return nil, err
	}
	c := &Cluster{Registry: reg, Meta: meta, DataDir: dir, logPath: filepath.Join(dir, "serve.log")}
	logf, err := os.Create(c.logPath)
	if err != nil {
		return nil, err
	}
	c.cmd = exec.Command(bin, "serve", "--data", filepath.Join(dir, "data"), "--listen", reg,
		"--meta-listen", meta, "--raft-listen", raft, "--chunkserver-base-port", "0")
	c.cmd.Args = append(c.cmd.Args, args...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	c.exited = make(chan struct{})
	go func() { c.waitErr = c.cmd.Wait(); logf.Close(); close(c.exited) }()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-c.exited:
			return nil, fmt.Errorf("dockyard serve exited: %v\n%s", c.waitErr, c.Log())
		default:
		}
		resp, err := http.Get("http://" + reg + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c, nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.cmd.Process.Kill()
	<-c.exited
	return nil, fmt.Errorf("dockyard serve did not answer on %s within 60s\n%s", reg, c.Log())
}

// Log returns what the server printed so far, for failure messages.
func (c *Cluster) Log() string {
	b, _ := os.ReadFile(c.logPath)
	if len(b) > 8192 {
		b = b[len(b)-8192:]
	}
	return string(b)
}

// Stop ends the server with SIGTERM (SIGKILL after 20 s).
func (c *Cluster) Stop() {
	if c.cmd == nil || c.cmd.Process == nil {
		return
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
}

// RequireTool returns the path of a tool on PATH. A missing tool skips the
// test, or fails it under CI=true.
func RequireTool(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s is not installed", name)
	}
	return p
}

// Missing skips (or, under CI, fails) a test whose prerequisite is absent.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s (CI installs every prerequisite: make test's set-up is broken)", msg)
	}
	t.Skip(msg)
}

// Run runs a command with a timeout and returns its combined output, failing
// the test with that output when it fails.
func Run(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := RunErr(timeout, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// RunErr is Run that hands the error back.
func RunErr(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}
