package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// authServe is a `dockyard serve --auth` of the test's own (the shared
// serve stays open for the other tests).
type authServe struct {
	*Cluster
	raft string
}

// startAuthServe starts serve --auth on a new data directory and waits
// until /v2/ asks for a login.
func startAuthServe(t *testing.T, extra ...string) *authServe {
	t.Helper()
	var addrs [3]string
	for i := range addrs {
		a, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addrs[i] = a
	}
	s := &authServe{Cluster: &Cluster{Registry: addrs[0], Meta: addrs[1], DataDir: t.TempDir()}, raft: addrs[2]}
	s.start(t, extra...)
	return s
}

// restart stops the server and starts it again on the same data and
// addresses with other flags.
func (s *authServe) restart(t *testing.T, extra ...string) {
	t.Helper()
	s.Stop()
	s.start(t, extra...)
}

func (s *authServe) start(t *testing.T, extra ...string) {
	t.Helper()
	c := &Cluster{Registry: s.Registry, Meta: s.Meta, DataDir: s.DataDir,
		logPath: filepath.Join(s.DataDir, fmt.Sprintf("serve-%d.log", time.Now().UnixNano()))}
	logf, err := os.Create(c.logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"serve", "--auth", "--data", filepath.Join(s.DataDir, "data"), "--listen", s.Registry,
		"--meta-listen", s.Meta, "--raft-listen", s.raft, "--chunkserver-base-port", "0", "--volume-socket", ""}, extra...)
	c.cmd = exec.Command(Binary(t), args...)
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c.exited = make(chan struct{})
	go func() { c.waitErr = c.cmd.Wait(); logf.Close(); close(c.exited) }()
	t.Cleanup(c.Stop)
	s.Cluster = c
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-c.exited:
			t.Fatalf("dockyard serve --auth exited: %v\n%s", c.waitErr, c.Log())
		default:
		}
		resp, err := http.Get("http://" + c.Registry + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				return
			}
			t.Fatalf("/v2/ of serve --auth answered %d without credentials", resp.StatusCode)
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockyard serve --auth did not answer within 60s\n%s", c.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// runWith runs a command with extra environment and standard input.
func runWith(timeout time.Duration, env []string, stdin, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var buf bytes.Buffer
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	return buf.String(), err
}

// authUsers adds alice (who may also pull team/...), bob and an admin
// through the admin command, and returns their passwords.
func authUsers(t *testing.T, c *authServe) map[string]string {
	t.Helper()
	bin := Binary(t)
	pw := map[string]string{"alice": "alice's password", "bob": "bob's password", "root": "root's password"}
	for _, u := range []string{"alice", "bob", "root"} {
		args := []string{"admin", "--meta", c.Meta, "user", "add", u, "--password-stdin"}
		if u == "root" {
			args = append(args, "--admin")
		}
		if out, err := runWith(time.Minute, nil, pw[u]+"\n", bin, args...); err != nil {
			t.Fatalf("user add %s: %v\n%s", u, err, out)
		}
	}
	Run(t, time.Minute, bin, "admin", "--meta", c.Meta, "grant", "alice", "team", "pull")
	out := Run(t, time.Minute, bin, "admin", "--meta", c.Meta, "user", "ls")
	for _, want := range []string{"alice", "team:pull", "bob", "root", "admin"} {
		if !strings.Contains(out, want) {
			t.Errorf("user ls lacks %q:\n%s", want, out)
		}
	}
	if out, err := runWith(time.Minute, nil, "short\n", bin, "admin", "--meta", c.Meta, "user", "add", "eve", "--password-stdin"); err == nil {
		t.Errorf("a too short password was accepted:\n%s", out)
	}
	if _, err := runWith(time.Minute, nil, pw["bob"]+"\n", bin, "admin", "--meta", c.Meta, "user", "add", "bob", "--password-stdin"); err == nil {
		t.Error("a second bob was added")
	}
	return pw
}

// TestAuthDocker: docker login, push into one's namespace, logout, pull
// refused, another user refused pushing there; then docker pull as a user
// with a grant.
func TestAuthDocker(t *testing.T) {
	RequireTool(t, "docker")
	if out, err := RunErr(30*time.Second, "docker", "info"); err != nil {
		Missing(t, "no docker daemon answers: %v\n%s", err, out)
	}
	c := startAuthServe(t)
	pw := authUsers(t, c)
	rootfs := rootfsTar(t)
	reg := c.Registry
	// A docker config of the test's own, so no login leaks into the user's.
	dcfg := t.TempDir()
	docker := func(stdin string, args ...string) (string, error) {
		return runWith(5*time.Minute, nil, stdin, "docker", append([]string{"--config", dcfg}, args...)...)
	}
	mustDocker := func(stdin string, args ...string) string {
		t.Helper()
		out, err := docker(stdin, args...)
		if err != nil {
			t.Fatalf("docker %s: %v\n%s\nserver log:\n%s", strings.Join(args, " "), err, out, c.Log())
		}
		return out
	}
	mustFail := func(wantAny []string, args ...string) {
		t.Helper()
		out, err := docker("", args...)
		if err == nil {
			t.Fatalf("docker %s succeeded:\n%s", strings.Join(args, " "), out)
		}
		for _, w := range wantAny {
			if strings.Contains(out, w) {
				return
			}
		}
		t.Errorf("docker %s failed without %q:\n%s", strings.Join(args, " "), wantAny, out)
	}
	id := strings.TrimPrefix(uniqueRepo("auth"), "e2e/auth-")
	alices := reg + "/alice/app-" + id + ":v1"
	team := reg + "/team/app-" + id + ":v1"
	for _, ref := range []string{alices, team, reg + "/bob/app-" + id + ":v1"} {
		t.Cleanup(func() { RunErr(time.Minute, "docker", "rmi", "-f", ref) })
	}
	mustDocker("", "import", rootfs, alices)

	mustFail([]string{"unauthorized", "incorrect username or password"}, "login", reg, "-u", "alice", "-p", "not alice's password")
	mustDocker(pw["alice"]+"\n", "login", reg, "-u", "alice", "--password-stdin")
	mustDocker("", "push", alices)
	// alice may not push under team/ (she holds pull only there).
	mustDocker("", "tag", alices, team)
	mustFail([]string{"denied"}, "push", team)
	mustDocker("", "logout", reg)

	mustDocker("", "rmi", alices)
	mustFail([]string{"unauthorized", "authentication required", "denied", "no basic auth credentials"}, "pull", alices)

	mustDocker(pw["bob"]+"\n", "login", reg, "-u", "bob", "--password-stdin")
	mustDocker("", "tag", team, reg+"/alice/app-"+id+":from-bob")
	mustFail([]string{"denied"}, "push", reg+"/alice/app-"+id+":from-bob")
	RunErr(time.Minute, "docker", "rmi", reg+"/alice/app-"+id+":from-bob")
	mustFail([]string{"denied", "unauthorized"}, "pull", alices)
	mustDocker("", "tag", team, reg+"/bob/app-"+id+":v1")
	mustDocker("", "push", reg+"/bob/app-"+id+":v1")
	mustDocker("", "logout", reg)

	// The admin pushes under team/, where alice may then pull.
	mustDocker(pw["root"]+"\n", "login", reg, "-u", "root", "--password-stdin")
	mustDocker("", "push", team)
	mustDocker("", "logout", reg)
	mustDocker("", "rmi", team)
	mustDocker(pw["alice"]+"\n", "login", reg, "-u", "alice", "--password-stdin")
	mustDocker("", "pull", alices)
	mustDocker("", "pull", team)
	out := mustDocker("", "run", "--rm", "--network", "none", team, "/bin/busybox", "echo", "pulled with a token")
	if !strings.Contains(out, "pulled with a token") {
		t.Errorf("docker run printed %q", out)
	}
	mustDocker("", "logout", reg)
}

// TestAuthCraneSkopeo: crane auth login and skopeo --creds against
// `dockyard serve --auth`, with an anonymous pull refused and allowed by
// --auth-anonymous-pull.
func TestAuthCraneSkopeo(t *testing.T) {
	RequireTool(t, "crane")
	RequireTool(t, "skopeo")
	c := startAuthServe(t)
	pw := authUsers(t, c)
	reg := c.Registry
	id := strings.TrimPrefix(uniqueRepo("auth"), "e2e/auth-")
	ref := reg + "/alice/crane-" + id + ":v1"
	env := []string{"DOCKER_CONFIG=" + t.TempDir()}
	crane := func(args ...string) (string, error) {
		return runWith(2*time.Minute, env, "", "crane", append(args, "--insecure")...)
	}
	mustCrane := func(args ...string) string {
		t.Helper()
		out, err := crane(args...)
		if err != nil {
			t.Fatalf("crane %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return out
	}
	if out, err := crane("ls", reg+"/alice/crane-"+id); err == nil || !strings.Contains(out, "UNAUTHORIZED") {
		t.Errorf("crane ls without a login: %v\n%s", err, out)
	}
	if out, err := runWith(time.Minute, env, pw["alice"]+"\n", "crane", "auth", "login", reg, "-u", "alice", "--password-stdin"); err != nil {
		t.Fatalf("crane auth login: %v\n%s", err, out)
	}
	layer := filepath.Join(t.TempDir(), "layer.tar")
	if err := os.WriteFile(layer, buildTar(t, []entry{file("hello.txt", "pushed by crane\n")}), 0o644); err != nil {
		t.Fatal(err)
	}
	mustCrane("append", "--oci-empty-base", "-f", layer, "-t", ref)
	if got := strings.TrimSpace(mustCrane("ls", reg+"/alice/crane-"+id)); got != "v1" {
		t.Errorf("crane ls: %q", got)
	}
	dig := strings.TrimSpace(mustCrane("digest", ref))
	mustCrane("delete", reg+"/alice/crane-"+id+"@"+dig)
	mustCrane("append", "--oci-empty-base", "-f", layer, "-t", ref)
	if out, err := crane("copy", ref, reg+"/bob/stolen-"+id+":v1"); err == nil || !strings.Contains(out, "DENIED") && !strings.Contains(out, "403 Forbidden") {
		t.Errorf("crane copy into bob/: %v\n%s", err, out)
	}
	cat := mustCrane("catalog", reg)
	if !strings.Contains(cat, "alice/crane-"+id) {
		t.Errorf("catalog lacks alice's repository:\n%s", cat)
	}

	skopeo := func(creds string, args ...string) (string, error) {
		full := append([]string{args[0], "--tls-verify=false"}, args[1:]...)
		if creds != "" {
			full = append([]string{args[0], "--tls-verify=false", "--creds", creds}, args[1:]...)
		}
		return runWith(2*time.Minute, env, "", "skopeo", full...)
	}
	if out, err := skopeo("alice:"+pw["alice"], "inspect", "docker://"+ref); err != nil || !strings.Contains(out, dig) {
		t.Errorf("skopeo inspect as alice: %v\n%s", err, out)
	}
	if out, err := skopeo("bob:"+pw["bob"], "inspect", "docker://"+ref); err == nil {
		t.Errorf("skopeo inspect of alice's image as bob succeeded:\n%s", out)
	}
	if out, err := skopeo("alice:wrong password", "inspect", "docker://"+ref); err == nil {
		t.Errorf("skopeo with a wrong password succeeded:\n%s", out)
	}
	// skopeo copy: its own source and destination credentials.
	out, err := runWith(2*time.Minute, env, "", "skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
		"--src-creds", "alice:"+pw["alice"], "--dest-creds", "bob:"+pw["bob"], "docker://"+ref, "docker://"+reg+"/bob/copied-"+id+":v1")
	if err != nil {
		t.Fatalf("skopeo copy alice -> bob: %v\n%s", err, out)
	}
	out, err = runWith(2*time.Minute, env, "", "skopeo", "copy", "--src-tls-verify=false", "--dest-tls-verify=false",
		"--src-creds", "bob:"+pw["bob"], "--dest-creds", "bob:"+pw["bob"], "docker://"+reg+"/bob/copied-"+id+":v1", "docker://"+reg+"/alice/from-bob-"+id+":v1")
	if err == nil {
		t.Errorf("skopeo copy into alice/ as bob succeeded:\n%s", out)
	}

	// Anonymous pulls: refused here, allowed by a registry started with
	// --auth-anonymous-pull (pushes still are not).
	res, err := http.Get("http://" + reg + "/v2/alice/crane-" + id + "/tags/list")
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous tags/list: %d", res.StatusCode)
	}
	c.restart(t, "--auth-anonymous-pull")
	anon := c
	if out, err := runWith(2*time.Minute, []string{"DOCKER_CONFIG=" + t.TempDir()}, "", "crane", "ls", "--insecure", anon.Registry+"/alice/crane-"+id); err != nil || strings.TrimSpace(out) != "v1" {
		t.Errorf("anonymous crane ls with --auth-anonymous-pull: %v\n%s", err, out)
	}
	if out, err := runWith(2*time.Minute, []string{"DOCKER_CONFIG=" + t.TempDir()}, "", "crane", "append", "--insecure", "--oci-empty-base", "-f", layer, "-t", anon.Registry+"/alice/anon-"+id+":v1"); err == nil {
		t.Errorf("anonymous push succeeded:\n%s", out)
	}
}

// TestAuthConformance runs the OCI conformance suite against serve --auth
// as an admin sending HTTP Basic credentials, which the registry accepts on
// /v2/ directly; TestRegistryConformance covers the registry without auth.
func TestAuthConformance(t *testing.T) {
	bin := os.Getenv("DOCKYARD_CONFORMANCE_BIN")
	if bin == "" {
		Missing(t, "DOCKYARD_CONFORMANCE_BIN is not set (the OCI conformance suite binary)")
	}
	if _, err := os.Stat(bin); err != nil {
		Missing(t, "conformance binary: %v", err)
	}
	c := startAuthServe(t)
	pw := authUsers(t, c)
	results := t.TempDir()
	repo := "root/" + strings.TrimPrefix(uniqueRepo("conformance"), "e2e/")
	out, err := runWith(10*time.Minute, []string{
		"OCI_REGISTRY=" + c.Registry, "OCI_TLS=disabled",
		"OCI_REPO1=" + repo + "/repo1", "OCI_REPO2=" + repo + "/repo2",
		"OCI_VERSION=1.1", "OCI_RESULTS_DIR=" + results,
		"OCI_USERNAME=root", "OCI_PASSWORD=" + pw["root"],
		"OCI_TEST_PULL=1", "OCI_TEST_PUSH=1", "OCI_TEST_CONTENT_DISCOVERY=1", "OCI_TEST_CONTENT_MANAGEMENT=1",
	}, "", bin)
	if err != nil {
		t.Fatalf("conformance suite failed with auth: %v\n%s", err, out)
	}
	junit, err := os.ReadFile(filepath.Join(results, "junit.xml"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(junit, []byte(`failures="0"`)) || !bytes.Contains(junit, []byte(`errors="0"`)) {
		t.Fatalf("junit.xml reports failures:\n%s", out)
	}
}

// TestAuthPodman: podman login, push into one's namespace, push into
// another's refused, logout, pull refused.
func TestAuthPodman(t *testing.T) {
	RequireTool(t, "podman")
	c := startAuthServe(t)
	pw := authUsers(t, c)
	rootfs := rootfsTar(t)
	reg := c.Registry
	authfile := filepath.Join(t.TempDir(), "auth.json")
	podman := func(stdin string, args ...string) (string, error) {
		return runWith(5*time.Minute, []string{"REGISTRY_AUTH_FILE=" + authfile}, stdin, "podman", args...)
	}
	mustPodman := func(stdin string, args ...string) {
		t.Helper()
		if out, err := podman(stdin, args...); err != nil {
			t.Fatalf("podman %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	id := strings.TrimPrefix(uniqueRepo("auth"), "e2e/auth-")
	mine, theirs := reg+"/alice/podman-"+id+":v1", reg+"/bob/podman-"+id+":v1"
	t.Cleanup(func() { RunErr(time.Minute, "podman", "rmi", "-f", mine, theirs) })
	mustPodman("", "import", rootfs, mine)
	mustPodman("", "tag", mine, theirs)
	if out, err := podman("", "push", "--tls-verify=false", mine); err == nil {
		t.Errorf("podman push without a login succeeded:\n%s", out)
	}
	mustPodman(pw["alice"]+"\n", "login", "--tls-verify=false", "-u", "alice", "--password-stdin", reg)
	mustPodman("", "push", "--tls-verify=false", mine)
	// A HEAD answers 403 without a body, so podman prints the status.
	if out, err := podman("", "push", "--tls-verify=false", theirs); err == nil ||
		!strings.Contains(strings.ToLower(out), "denied") && !strings.Contains(out, "403") {
		t.Errorf("podman push into bob/ as alice: %v\n%s", err, out)
	}
	mustPodman("", "logout", reg)
	mustPodman("", "rmi", mine)
	if out, err := podman("", "pull", "--tls-verify=false", mine); err == nil {
		t.Errorf("podman pull after logout succeeded:\n%s", out)
	}
}
