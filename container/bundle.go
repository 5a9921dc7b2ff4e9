// Package container turns an image's configuration and a root file system into
// an OCI runtime bundle and runs it with runc: what `dockyard run` does after
// the image's merged tree is mounted. It owns the overlay (a local upper
// directory over the read-only lazy mount, kept after exit for a named
// container; see state.go), the runtime spec and the process's exit code;
// it never reads image bytes itself, so it works over any lower directory.
// It sits beside the converter (cmd -> container), not below it,
// because nothing but the command line starts containers.
package container

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	rspec "github.com/opencontainers/runtime-spec/specs-go"
)

// defaultPath is what Docker puts in PATH when the image sets none.
const defaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// SpecOptions are the choices `dockyard run` makes beyond the image config.
type SpecOptions struct {
	// Args replaces the image's Cmd (Entrypoint stays) when non-empty, as
	// `docker run IMAGE ARGS...` does.
	Args []string
	// Entrypoint, when non-nil, replaces the image's entrypoint.
	Entrypoint []string
	Env        []string // extra KEY=VALUE, overriding the image's
	Workdir    string   // overrides the image's WorkingDir
	User       string   // overrides the image's User ("uid[:gid]" or names)
	Hostname   string
	// HostNetwork shares the host's network namespace; otherwise the
	// container gets a network namespace of its own with only loopback.
	HostNetwork bool
	Terminal    bool
	// Mounts are bind mounts of host directories (Dockyard volumes, mounted
	// on the host first, or plain directories) into the container.
	Mounts []Mount
}

// Mount binds the host directory Source at Destination in the container.
type Mount struct {
	Source      string
	Destination string
	ReadOnly    bool
}

// Spec builds the OCI runtime spec for an image config over rootfs (which must
// already hold the image's files, so user names can be resolved from its
// /etc/passwd and /etc/group).
func Spec(img ocispec.ImageConfig, rootfs string, o SpecOptions) (*rspec.Spec, error) {
	entry := img.Entrypoint
	if o.Entrypoint != nil {
		entry = o.Entrypoint
	}
	cmd := img.Cmd
	if len(o.Args) > 0 || o.Entrypoint != nil {
		cmd = o.Args
	}
	args := append(append([]string{}, entry...), cmd...)
	if len(args) == 0 {
		return nil, fmt.Errorf("no command: the image sets neither Entrypoint nor Cmd and none was given")
	}
	env := mergeEnv(img.Env, o.Env)
	cwd := img.WorkingDir
	if o.Workdir != "" {
		cwd = o.Workdir
	}
	if cwd == "" {
		cwd = "/"
	}
	if !filepath.IsAbs(cwd) {
		return nil, fmt.Errorf("working directory %q is not absolute", cwd)
	}
	userSpec := img.User
	if o.User != "" {
		userSpec = o.User
	}
	user, err := resolveUser(rootfs, userSpec)
	if err != nil {
		return nil, err
	}
	hostname := o.Hostname
	if hostname == "" {
		hostname = "dockyard"
	}

	namespaces := []rspec.LinuxNamespace{
		{Type: rspec.PIDNamespace}, {Type: rspec.IPCNamespace}, {Type: rspec.UTSNamespace},
		{Type: rspec.MountNamespace}, {Type: rspec.CgroupNamespace},
	}
	if !o.HostNetwork {
		namespaces = append(namespaces, rspec.LinuxNamespace{Type: rspec.NetworkNamespace})
	}
	mounts := defaultMounts(o.HostNetwork)
	for _, m := range o.Mounts {
		bm, err := bindMount(m, mounts)
		if err != nil {
			return nil, err
		}
		mounts = append(mounts, bm)
	}
	caps := defaultCapabilities()
	s := &rspec.Spec{
		Version:  rspec.Version,
		Hostname: hostname,
		Root:     &rspec.Root{Path: rootfs},
		Process: &rspec.Process{
			Terminal: o.Terminal,
			User:     user,
			Args:     args,
			Env:      env,
			Cwd:      cwd,
			Capabilities: &rspec.LinuxCapabilities{
				Bounding: caps, Effective: caps, Permitted: caps,
			},
			NoNewPrivileges: true,
		},
		Mounts: mounts,
		Linux: &rspec.Linux{
			Namespaces: namespaces,
			MaskedPaths: []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
	return s, nil
}

// mergeEnv applies overrides to base by key and makes sure PATH is set.
func mergeEnv(base, overrides []string) []string {
	var out []string
	index := map[string]int{}
	for _, kv := range append(append([]string{}, base...), overrides...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := index[k]; ok {
			out[i] = kv
			continue
		}
		index[k] = len(out)
		out = append(out, kv)
	}
	if _, ok := index["PATH"]; !ok {
		out = append([]string{"PATH=" + defaultPath}, out...)
	}
	if _, ok := index["HOME"]; !ok {
		out = append(out, "HOME=/root")
	}
	return out
}

// resolveUser turns "user[:group]" (names or numbers) into ids, reading the
// image's own passwd and group files the way Docker does. Empty means root.
func resolveUser(rootfs, spec string) (rspec.User, error) {
	if spec == "" {
		return rspec.User{}, nil
	}
	userPart, groupPart, hasGroup := strings.Cut(spec, ":")
	var u rspec.User
	if n, err := strconv.ParseUint(userPart, 10, 32); err == nil {
		u.UID = uint32(n)
		// A numeric user still takes its primary group from passwd if listed.
		if e, ok, err := lookupColonFile(filepath.Join(rootfs, "etc/passwd"), func(f []string) bool { return len(f) > 3 && f[2] == userPart }); err != nil {
			return u, err
		} else if ok {
			g, _ := strconv.ParseUint(e[3], 10, 32)
			u.GID = uint32(g)
		}
	} else {
		e, ok, err := lookupColonFile(filepath.Join(rootfs, "etc/passwd"), func(f []string) bool { return len(f) > 3 && f[0] == userPart })
		if err != nil {
			return u, err
		}
		if !ok {
			return u, fmt.Errorf("user %q not found in the image's /etc/passwd", userPart)
		}
		uid, err1 := strconv.ParseUint(e[2], 10, 32)
		gid, err2 := strconv.ParseUint(e[3], 10, 32)
		if err1 != nil || err2 != nil {
			return u, fmt.Errorf("malformed /etc/passwd entry for %q", userPart)
		}
		u.UID, u.GID = uint32(uid), uint32(gid)
	}
	if hasGroup {
		if n, err := strconv.ParseUint(groupPart, 10, 32); err == nil {
			u.GID = uint32(n)
		} else {
			e, ok, err := lookupColonFile(filepath.Join(rootfs, "etc/group"), func(f []string) bool { return len(f) > 2 && f[0] == groupPart })
			if err != nil {
				return u, err
			}
			if !ok {
				return u, fmt.Errorf("group %q not found in the image's /etc/group", groupPart)
			}
			g, err := strconv.ParseUint(e[2], 10, 32)
			if err != nil {
				return u, fmt.Errorf("malformed /etc/group entry for %q", groupPart)
			}
			u.GID = uint32(g)
		}
	}
	return u, nil
}

// lookupColonFile finds the first line of a passwd-style file whose fields
// satisfy match. A missing file is no match, not an error.
func lookupColonFile(path string, match func([]string) bool) ([]string, bool, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if fields := strings.Split(line, ":"); match(fields) {
			return fields, true, nil
		}
	}
	return nil, false, sc.Err()
}

// defaultCapabilities is Docker's default set: enough for ordinary images,
// nothing that reaches outside the container.
func defaultCapabilities() []string {
	return []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
		"CAP_KILL", "CAP_AUDIT_WRITE"}
}

// bindMount checks m against the mounts the container already has and
// returns its spec entry. The destination must be an absolute, clean path
// other than / and not inside /proc, /sys or /dev, whose mounts the runtime
// sets up; two mounts on one destination are refused.
func bindMount(m Mount, have []rspec.Mount) (rspec.Mount, error) {
	d := m.Destination
	if !filepath.IsAbs(d) || filepath.Clean(d) != d || d == "/" {
		return rspec.Mount{}, fmt.Errorf("mount destination %q: want an absolute, clean path other than /", d)
	}
	for _, sys := range []string{"/proc", "/sys", "/dev"} {
		if d == sys || strings.HasPrefix(d, sys+"/") {
			return rspec.Mount{}, fmt.Errorf("mount destination %q: %s belongs to the runtime", d, sys)
		}
	}
	for _, h := range have {
		if h.Destination == d {
			return rspec.Mount{}, fmt.Errorf("mount destination %q given twice", d)
		}
	}
	if !filepath.IsAbs(m.Source) {
		return rspec.Mount{}, fmt.Errorf("mount source %q is not an absolute host path", m.Source)
	}
	if fi, err := os.Stat(m.Source); err != nil || !fi.IsDir() {
		return rspec.Mount{}, fmt.Errorf("mount source %q is not a directory: %v", m.Source, err)
	}
	opts := []string{"rbind", "rprivate"}
	if m.ReadOnly {
		opts = append(opts, "ro")
	}
	return rspec.Mount{Destination: d, Type: "bind", Source: m.Source, Options: opts}, nil
}

func defaultMounts(hostNetwork bool) []rspec.Mount {
	m := []rspec.Mount{
		{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
		{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
		{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
		{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		{Destination: "/sys/fs/cgroup", Type: "cgroup", Source: "cgroup", Options: []string{"nosuid", "noexec", "nodev", "relatime", "ro"}},
	}
	if hostNetwork {
		// With the host's network the container also needs its resolver.
		m = append(m, rspec.Mount{Destination: "/etc/resolv.conf", Type: "bind", Source: "/etc/resolv.conf", Options: []string{"rbind", "ro"}})
	}
	return m
}
