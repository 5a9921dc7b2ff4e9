package container

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	rspec "github.com/opencontainers/runtime-spec/specs-go"
)

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSpecCommandLine(t *testing.T) {
	for _, tc := range []struct {
		name  string
		img   ocispec.ImageConfig
		opt   SpecOptions
		want  []string
		error string
	}{
		{"cmd only", ocispec.ImageConfig{Cmd: []string{"sh"}}, SpecOptions{}, []string{"sh"}, ""},
		{"entrypoint and cmd", ocispec.ImageConfig{Entrypoint: []string{"/init"}, Cmd: []string{"-v"}}, SpecOptions{}, []string{"/init", "-v"}, ""},
		{"args replace cmd", ocispec.ImageConfig{Entrypoint: []string{"/init"}, Cmd: []string{"-v"}}, SpecOptions{Args: []string{"x"}}, []string{"/init", "x"}, ""},
		{"entrypoint override drops cmd", ocispec.ImageConfig{Entrypoint: []string{"/init"}, Cmd: []string{"-v"}}, SpecOptions{Entrypoint: []string{"/bin/true"}}, []string{"/bin/true"}, ""},
		{"nothing to run", ocispec.ImageConfig{}, SpecOptions{}, nil, "no command"},
		{"relative workdir", ocispec.ImageConfig{Cmd: []string{"sh"}, WorkingDir: "app"}, SpecOptions{}, nil, "not absolute"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := Spec(tc.img, t.TempDir(), tc.opt)
			if tc.error != "" {
				if err == nil || !strings.Contains(err.Error(), tc.error) {
					t.Fatalf("err = %v, want one containing %q", err, tc.error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(s.Process.Args, tc.want) {
				t.Fatalf("args = %q, want %q", s.Process.Args, tc.want)
			}
		})
	}
}

func TestSpecEnvAndDefaults(t *testing.T) {
	s, err := Spec(ocispec.ImageConfig{Cmd: []string{"sh"}, Env: []string{"A=1", "B=2"}}, t.TempDir(),
		SpecOptions{Env: []string{"B=3", "C=4"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"PATH=" + defaultPath, "A=1", "B=3", "C=4", "HOME=/root"}
	if !reflect.DeepEqual(s.Process.Env, want) {
		t.Fatalf("env = %q, want %q", s.Process.Env, want)
	}
	if s.Process.Cwd != "/" {
		t.Fatalf("cwd = %q, want /", s.Process.Cwd)
	}
	hasNet := false
	for _, ns := range s.Linux.Namespaces {
		hasNet = hasNet || ns.Type == rspec.NetworkNamespace
	}
	if !hasNet {
		t.Fatal("a container without HostNetwork must get its own network namespace")
	}
}

func TestResolveUser(t *testing.T) {
	root := t.TempDir()
	writeFile(t, filepath.Join(root, "etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n#comment\napp:x:1000:1001::/home/app:/bin/sh\n")
	writeFile(t, filepath.Join(root, "etc/group"), "root:x:0:\nstaff:x:50:\n")
	for _, tc := range []struct {
		spec     string
		uid, gid uint32
		error    string
	}{
		{"", 0, 0, ""},
		{"app", 1000, 1001, ""},
		{"1000", 1000, 1001, ""}, // numeric user still gets its passwd group
		{"4242", 4242, 0, ""},    // unknown numeric user is fine, as in Docker
		{"app:staff", 1000, 50, ""},
		{"app:7", 1000, 7, ""},
		{"nobody", 0, 0, `user "nobody" not found`},
		{"app:wheel", 0, 0, `group "wheel" not found`},
	} {
		u, err := resolveUser(root, tc.spec)
		if tc.error != "" {
			if err == nil || !strings.Contains(err.Error(), tc.error) {
				t.Errorf("%q: err = %v, want %q", tc.spec, err, tc.error)
			}
			continue
		}
		if err != nil || u.UID != tc.uid || u.GID != tc.gid {
			t.Errorf("%q: got %d:%d err %v, want %d:%d", tc.spec, u.UID, u.GID, err, tc.uid, tc.gid)
		}
	}
}

func TestSpecBindMounts(t *testing.T) {
	img := ocispec.ImageConfig{Cmd: []string{"sh"}}
	src := t.TempDir()
	s, err := Spec(img, t.TempDir(), SpecOptions{Mounts: []Mount{
		{Source: src, Destination: "/data"},
		{Source: src, Destination: "/srv/ro", ReadOnly: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var got []rspec.Mount
	for _, m := range s.Mounts {
		if m.Type == "bind" {
			got = append(got, m)
		}
	}
	want := []rspec.Mount{
		{Destination: "/data", Type: "bind", Source: src, Options: []string{"rbind", "rprivate"}},
		{Destination: "/srv/ro", Type: "bind", Source: src, Options: []string{"rbind", "rprivate", "ro"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("bind mounts %+v, want %+v", got, want)
	}
	file := filepath.Join(src, "f")
	writeFile(t, file, "x")
	for _, tc := range []struct {
		m    Mount
		want string
	}{
		{Mount{Source: src, Destination: "data"}, "absolute"},
		{Mount{Source: src, Destination: "/data/../etc"}, "clean"},
		{Mount{Source: src, Destination: "/"}, "other than /"},
		{Mount{Source: src, Destination: "/proc/x"}, "belongs to the runtime"},
		{Mount{Source: src, Destination: "/dev"}, "belongs to the runtime"},
		{Mount{Source: "rel", Destination: "/data"}, "not an absolute host path"},
		{Mount{Source: file, Destination: "/data"}, "not a directory"},
		{Mount{Source: filepath.Join(src, "missing"), Destination: "/data"}, "not a directory"},
	} {
		if _, err := Spec(img, t.TempDir(), SpecOptions{Mounts: []Mount{tc.m}}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("mount %+v: %v, want an error saying %q", tc.m, err, tc.want)
		}
	}
	if _, err := Spec(img, t.TempDir(), SpecOptions{Mounts: []Mount{{Source: src, Destination: "/a"}, {Source: src, Destination: "/a"}}}); err == nil || !strings.Contains(err.Error(), "twice") {
		t.Errorf("two mounts on /a: %v", err)
	}
}
