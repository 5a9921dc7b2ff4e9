package registry

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// tarEntry is one entry of a test layer.
type tarEntry struct {
	name, link string
	typ        byte
	mode       int64
	body       string
	xattrs     map[string]string
}

func layerTar(t *testing.T, gz bool, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var zw *gzip.Writer
	if gz {
		zw = gzip.NewWriter(&buf)
		w = zw
	}
	tw := tar.NewWriter(w)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Linkname: e.link, Typeflag: e.typ, Mode: e.mode, Size: int64(len(e.body)),
			ModTime: time.Unix(1_700_000_000, 0), Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag != tar.TypeReg {
			h.Size = 0
		}
		for k, v := range e.xattrs {
			if h.PAXRecords == nil {
				h.PAXRecords = map[string]string{}
			}
			h.PAXRecords["SCHILY.xattr."+k] = v
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Size > 0 {
			tw.Write([]byte(e.body))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if zw != nil {
		zw.Close()
	}
	return buf.Bytes()
}

// pushLayered pushes an image of config and layers (bottom first) as
// repo:tag (or by digest when tag is "") and returns its manifest digest.
func (e *testEnv) pushLayered(repo, tag string, config map[string]any, layers ...[]byte) string {
	e.t.Helper()
	cfg, _ := json.Marshal(config)
	cd := e.pushBlob(repo, cfg)
	var ls []any
	for _, l := range layers {
		mt := "application/vnd.oci.image.layer.v1.tar"
		if bytes.HasPrefix(l, []byte{0x1f, 0x8b}) {
			mt += "+gzip"
		}
		ls = append(ls, map[string]any{"mediaType": mt, "digest": e.pushBlob(repo, l), "size": len(l)})
	}
	body, _ := json.Marshal(map[string]any{
		"schemaVersion": 2, "mediaType": MediaTypeOCIManifest,
		"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": len(cfg)},
		"layers": ls,
	})
	ref := tag
	if ref == "" {
		ref = sha(body)
	}
	e.must(e.do("PUT", "/v2/"+repo+"/manifests/"+ref, map[string]string{"Content-Type": MediaTypeOCIManifest}, body), http.StatusCreated)
	return sha(body)
}

// doHost is do with a Host header, as an appc client reaching the
// registry by its name sends.
func (e *testEnv) doHost(method, host, path string) resp {
	e.t.Helper()
	req, err := http.NewRequest(method, e.srv.URL+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Host = host
	res, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

const testHost = "registry.example.com"

var metaRe = regexp.MustCompile(`<meta name="([^"]+)" content="([^"]*)">`)

// expand renders an appc URL template as discovery.md says a client does.
func expand(tmpl string, labels map[string]string) string {
	for k, v := range labels {
		tmpl = strings.ReplaceAll(tmpl, "{"+k+"}", v)
	}
	return tmpl
}

func TestACIDiscovery(t *testing.T) {
	env := newTestEnv(t, Config{})
	layer := layerTar(t, false, tarEntry{name: "bin/", typ: tar.TypeDir, mode: 0o755}, tarEntry{name: "bin/app", mode: 0o755, body: "#!"})
	env.pushLayered("team/app", "1.0", map[string]any{"os": "linux", "architecture": "amd64", "config": map[string]any{"Cmd": []string{"/bin/app"}}}, layer)
	env.pushLayered("team/app", "latest", map[string]any{"os": "linux", "architecture": "amd64"}, layer)

	r := env.must(env.doHost("GET", testHost, "/team/app?ac-discovery=1"), http.StatusOK)
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/html") {
		t.Errorf("Content-Type %q", ct)
	}
	var metas [][2]string
	for _, m := range metaRe.FindAllStringSubmatch(string(r.body), -1) {
		metas = append(metas, [2]string{m[1], m[2]})
	}
	want := [][2]string{
		{"ac-discovery", testHost + "/team/app http://" + testHost + "/appc/{name}/{version}/{os}/{arch}.{ext}"},
		{"ac-discovery", testHost + "/team/app http://" + testHost + "/appc/{name}/latest/{os}/{arch}.{ext}"},
	}
	if !reflect.DeepEqual(metas, want) {
		t.Fatalf("meta tags %q, want %q\n%s", metas, want, r.body)
	}
	// HEAD answers like GET, without the page.
	if r := env.must(env.doHost("HEAD", testHost, "/team/app?ac-discovery=1"), http.StatusOK); len(r.body) != 0 {
		t.Errorf("HEAD body %q", r.body)
	}
	// A proxy that terminates TLS says so; the templates follow.
	req, _ := http.NewRequest("GET", env.srv.URL+"/team/app?ac-discovery=1", nil)
	req.Host = testHost
	req.Header.Set("X-Forwarded-Proto", "https")
	res, err := env.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(page), `content="`+testHost+`/team/app https://`+testHost+`/appc/{name}/{version}/{os}/{arch}.{ext}"`) {
		t.Errorf("behind TLS the page says\n%s", page)
	}

	// Expanding the templates gives URLs the registry serves.
	name := testHost + "/team/app"
	for _, tc := range []struct {
		tmpl    string
		version string
	}{{want[0][1], "1.0"}, {want[1][1], "latest"}} {
		_, tmpl, _ := strings.Cut(tc.tmpl, " ")
		u := expand(tmpl, map[string]string{"name": name, "version": tc.version, "os": "linux", "arch": "amd64", "ext": "aci"})
		p := strings.TrimPrefix(u, "http://"+testHost)
		if p != "/appc/"+name+"/"+tc.version+"/linux/amd64.aci" {
			t.Fatalf("template expands to %s", u)
		}
		r := env.must(env.doHost("GET", testHost, p), http.StatusOK)
		m, _ := readACI(t, r.body)
		if m["name"] != name || !strings.Contains(fmt.Sprint(m["labels"]), "map[name:version value:"+tc.version+"]") {
			t.Errorf("%s: manifest %v", p, m)
		}
		sig := expand(tmpl, map[string]string{"name": name, "version": tc.version, "os": "linux", "arch": "amd64", "ext": "aci.asc"})
		r = env.doHost("GET", testHost, strings.TrimPrefix(sig, "http://"+testHost))
		if r.status != http.StatusNotFound || r.code() != "SIGNATURE_UNKNOWN" {
			t.Errorf("signature: %d %s", r.status, r.body)
		}
	}

	// Unknown repositories, their parents and the root are 404, so a
	// client walks up and finds nothing; bad names likewise.
	for _, p := range []string{"/team/nope", "/team", "/", "/team/app/sub", "/Team/App", "/team/app/../x"} {
		r := env.doHost("GET", testHost, p+"?ac-discovery=1")
		if r.status != http.StatusNotFound || r.code() != "NAME_UNKNOWN" {
			t.Errorf("%s: %d %s", p, r.status, r.body)
		}
	}
	// Without the parameter the request goes on to the routes.
	if r := env.doHost("GET", testHost, "/team/app"); r.status != http.StatusNotFound || r.code() != "NOT_FOUND" {
		t.Errorf("/team/app: %d %s", r.status, r.body)
	}
	env.must(env.doHost("GET", testHost, "/v2/team/app/tags/list?ac-discovery=0"), http.StatusOK)
}

// aciEntry is what the tests check of each ACI tar entry.
type aciEntry struct {
	Name string
	Type byte
	Mode int64
	Link string
	Body string
	Uid  int
}

func (e aciEntry) String() string {
	return fmt.Sprintf("%s %c %o %q %q %d", e.Name, e.Type, e.Mode, e.Link, e.Body, e.Uid)
}

// readACI returns the manifest and the entries of an ACI.
func readACI(t *testing.T, b []byte) (map[string]any, []aciEntry) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(b))
	var man map[string]any
	var out []aciEntry
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("reading ACI: %v", err)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "manifest" {
			if err := json.Unmarshal(body, &man); err != nil {
				t.Fatalf("manifest: %v\n%s", err, body)
			}
		}
		if h.Name != "manifest" && h.Name != "rootfs/" && !strings.HasPrefix(h.Name, "rootfs/") {
			t.Errorf("entry %q outside manifest and rootfs/", h.Name)
		}
		if h.Name == "manifest" {
			body = nil
		}
		out = append(out, aciEntry{h.Name, h.Typeflag, h.Mode, h.Linkname, string(body), h.Uid})
	}
	if man == nil {
		t.Fatal("ACI has no manifest")
	}
	validateACIManifest(t, man)
	return man, out
}

// validateACIManifest checks what the appc schema requires of an image
// manifest (actool is not a test dependency).
func validateACIManifest(t *testing.T, m map[string]any) {
	t.Helper()
	if m["acKind"] != "ImageManifest" || m["acVersion"] != aciVersion {
		t.Errorf("acKind %v, acVersion %v", m["acKind"], m["acVersion"])
	}
	if name, _ := m["name"].(string); !regexp.MustCompile(`^[a-z0-9]+([-._~/][a-z0-9]+)*$`).MatchString(name) {
		t.Errorf("name %q is not an AC identifier", m["name"])
	}
	seen := map[string]bool{}
	for _, l := range m["labels"].([]any) {
		n := l.(map[string]any)["name"].(string)
		if seen[n] || n == "name" || !acIdentifierRe.MatchString(n) {
			t.Errorf("label %q", n)
		}
		seen[n] = true
	}
	if app, ok := m["app"].(map[string]any); ok {
		exec, _ := app["exec"].([]any)
		if len(exec) == 0 || !strings.HasPrefix(exec[0].(string), "/") {
			t.Errorf("exec %v", app["exec"])
		}
		if app["user"] == nil || app["group"] == nil {
			t.Errorf("app lacks user or group: %v", app)
		}
		for _, p := range asList(app["ports"]) {
			p := p.(map[string]any)
			if !acIdentifierRe.MatchString(p["name"].(string)) || p["port"].(float64) < 1 || p["port"].(float64) > 65535 || p["protocol"] == "" {
				t.Errorf("port %v", p)
			}
		}
		for _, e := range asList(app["environment"]) {
			if !envNameRe.MatchString(e.(map[string]any)["name"].(string)) {
				t.Errorf("environment %v", e)
			}
		}
	}
	for _, a := range asList(m["annotations"]) {
		if !acIdentifierRe.MatchString(a.(map[string]any)["name"].(string)) {
			t.Errorf("annotation %v", a)
		}
	}
}

func asList(v any) []any { l, _ := v.([]any); return l }

func TestACIFromLayers(t *testing.T) {
	env := newTestEnv(t, Config{})
	passwd := "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"
	lower := layerTar(t, false,
		tarEntry{name: "bin/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "bin/busybox", mode: 0o755, body: "BUSYBOX"},
		tarEntry{name: "bin/sh", typ: tar.TypeSymlink, link: "busybox", mode: 0o777},
		tarEntry{name: "etc/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "etc/passwd", body: passwd},
		tarEntry{name: "opt/", typ: tar.TypeDir, mode: 0o750},
		tarEntry{name: "opt/old.txt", body: "old"},
		tarEntry{name: "opt/sub/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "opt/sub/deep.txt", body: "deep"},
		tarEntry{name: "var/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "var/gone.txt", body: "gone"},
		tarEntry{name: "var/kept.txt", body: "kept"},
		tarEntry{name: "data/", typ: tar.TypeDir, mode: 0o700},
		tarEntry{name: "data/a.txt", body: "shared by a and hard"},
		tarEntry{name: "data/hard", typ: tar.TypeLink, link: "data/a.txt"},
		tarEntry{name: "data/b.txt", body: "b"},
		tarEntry{name: "data/b-link", typ: tar.TypeLink, link: "data/b.txt"},
		tarEntry{name: "lib/", typ: tar.TypeDir, mode: 0o755},
		tarEntry{name: "lib/up", typ: tar.TypeSymlink, link: "../etc/passwd"},
		tarEntry{name: "lib/evil", typ: tar.TypeSymlink, link: "../../../etc/shadow"},
		tarEntry{name: "usr/local/bin/app", mode: 0o755, body: "APP"},
	)
	upper := layerTar(t, true,
		tarEntry{name: "var/.wh.gone.txt"},
		tarEntry{name: "opt/.wh..wh..opq"},
		tarEntry{name: "opt/new.txt", body: "new"},
		tarEntry{name: "data/.wh.a.txt"},
		tarEntry{name: "etc/motd", body: "hello", mode: 0o600, xattrs: map[string]string{"user.note": "kept"}},
		tarEntry{name: "bin/busybox", mode: 0o4755, body: "BUSYBOX2"},
	)
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	md := env.pushLayered("team/app", "2.1", map[string]any{
		"os": "linux", "architecture": "amd64", "created": created, "author": "Team <team@example.com>",
		"config": map[string]any{
			"Entrypoint":   []string{"app"},
			"Cmd":          []string{"--serve", "x y"},
			"User":         "app",
			"Env":          []string{"PATH=/usr/local/bin:/usr/bin:/bin", "MODE=prod", "bad-name=1"},
			"WorkingDir":   "/data",
			"ExposedPorts": map[string]any{"80/tcp": map[string]any{}, "53/udp": map[string]any{}, "8000-8002/tcp": map[string]any{}},
			"Labels":       map[string]string{"org.example.team": "core", "Not An Identifier": "x"},
		},
	}, lower, upper)

	r := env.must(env.doHost("GET", testHost, "/appc/"+testHost+"/team/app/2.1/linux/amd64.aci"), http.StatusOK)
	if r.header.Get("Docker-Content-Digest") != md {
		t.Errorf("Docker-Content-Digest %q, want %s", r.header.Get("Docker-Content-Digest"), md)
	}
	man, entries := readACI(t, r.body)
	got := make([]string, len(entries))
	for i, e := range entries {
		got[i] = e.String()
	}
	want := []aciEntry{
		{"manifest", tar.TypeReg, 0o644, "", "", 0},
		{"rootfs/", tar.TypeDir, 0o755, "", "", 0},
		{"rootfs/bin/", tar.TypeDir, 0o755, "", "", 0},
		{"rootfs/bin/busybox", tar.TypeReg, 0o4755, "", "BUSYBOX2", 0},
		{"rootfs/bin/sh", tar.TypeSymlink, 0o777, "busybox", "", 0},
		{"rootfs/data/", tar.TypeDir, 0o700, "", "", 0},
		{"rootfs/data/b-link", tar.TypeReg, 0o644, "", "b", 0},
		{"rootfs/data/b.txt", tar.TypeLink, 0o644, "rootfs/data/b-link", "", 0},
		{"rootfs/data/hard", tar.TypeReg, 0o644, "", "shared by a and hard", 0},
		{"rootfs/etc/", tar.TypeDir, 0o755, "", "", 0},
		{"rootfs/etc/motd", tar.TypeReg, 0o600, "", "hello", 0},
		{"rootfs/etc/passwd", tar.TypeReg, 0o644, "", passwd, 0},
		{"rootfs/lib/", tar.TypeDir, 0o755, "", "", 0},
		{"rootfs/lib/evil", tar.TypeSymlink, 0o644, "/etc/shadow", "", 0},
		{"rootfs/lib/up", tar.TypeSymlink, 0o644, "../etc/passwd", "", 0},
		{"rootfs/opt/", tar.TypeDir, 0o750, "", "", 0},
		{"rootfs/opt/new.txt", tar.TypeReg, 0o644, "", "new", 0},
		{"rootfs/usr/", tar.TypeDir, 0o755, "", "", 0},
		{"rootfs/usr/local/", tar.TypeDir, 0o755, "", "", 0},
		{"rootfs/usr/local/bin/", tar.TypeDir, 0o755, "", "", 0},
		{"rootfs/usr/local/bin/app", tar.TypeReg, 0o755, "", "APP", 0},
		{"rootfs/var/", tar.TypeDir, 0o755, "", "", 0},
		{"rootfs/var/kept.txt", tar.TypeReg, 0o644, "", "kept", 0},
	}
	var ws []string
	for _, w := range want {
		ws = append(ws, w.String())
	}
	if !reflect.DeepEqual(got, ws) {
		t.Errorf("ACI entries:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(ws, "\n"))
	}
	// The xattr survives the conversion.
	tr := tar.NewReader(bytes.NewReader(r.body))
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatal("no rootfs/etc/motd")
		}
		if h.Name == "rootfs/etc/motd" {
			if h.PAXRecords["SCHILY.xattr.user.note"] != "kept" {
				t.Errorf("motd PAX records %v", h.PAXRecords)
			}
			break
		}
	}

	wantMan := map[string]any{
		"acKind":    "ImageManifest",
		"acVersion": aciVersion,
		"name":      testHost + "/team/app",
		"labels": []any{
			map[string]any{"name": "version", "value": "2.1"},
			map[string]any{"name": "os", "value": "linux"},
			map[string]any{"name": "arch", "value": "amd64"},
		},
		"app": map[string]any{
			"exec":             []any{"/usr/local/bin/app", "--serve", "x y"},
			"user":             "app",
			"group":            "1001",
			"workingDirectory": "/data",
			"environment": []any{
				map[string]any{"name": "PATH", "value": "/usr/local/bin:/usr/bin:/bin"},
				map[string]any{"name": "MODE", "value": "prod"},
			},
			"ports": []any{
				map[string]any{"name": "53-udp", "protocol": "udp", "port": 53.0},
				map[string]any{"name": "80-tcp", "protocol": "tcp", "port": 80.0},
				map[string]any{"name": "8000-8002-tcp", "protocol": "tcp", "port": 8000.0, "count": 3.0},
			},
		},
		"annotations": []any{
			map[string]any{"name": "created", "value": "2026-01-02T03:04:05Z"},
			map[string]any{"name": "authors", "value": "Team <team@example.com>"},
			map[string]any{"name": "dockyard/manifest-digest", "value": md},
			map[string]any{"name": "org.example.team", "value": "core"},
		},
	}
	if !reflect.DeepEqual(man, wantMan) {
		g, _ := json.MarshalIndent(man, "", "  ")
		w, _ := json.MarshalIndent(wantMan, "", "  ")
		t.Errorf("manifest:\n%s\nwant:\n%s", g, w)
	}

	// HEAD prepares the same image and sends no body.
	if r := env.must(env.doHost("HEAD", testHost, "/appc/"+testHost+"/team/app/2.1/linux/amd64.aci"), http.StatusOK); len(r.body) != 0 {
		t.Errorf("HEAD sent %d bytes", len(r.body))
	}
}

func TestACIUserGroupAndExec(t *testing.T) {
	env := newTestEnv(t, Config{})
	layer := layerTar(t, false,
		tarEntry{name: "usr/bin/tool", mode: 0o755, body: "T"},
		tarEntry{name: "bin", typ: tar.TypeSymlink, link: "usr/bin"},
		tarEntry{name: "etc/passwd", body: "svc:x:70:71::/:/bin/false\n"})
	for _, tc := range []struct {
		user, wantUser, wantGroup string
		entrypoint, cmd           []string
		wantExec                  []string // nil: no app section
	}{
		{"", "0", "0", nil, []string{"tool", "-v"}, []string{"/usr/bin/tool", "-v"}},
		{"svc", "svc", "71", []string{"/bin/tool"}, nil, []string{"/bin/tool"}},
		{"70", "70", "71", nil, []string{"tool"}, []string{"/usr/bin/tool"}},
		{"99", "99", "0", nil, []string{"tool"}, []string{"/usr/bin/tool"}},
		{"svc:wheel", "svc", "wheel", nil, []string{"tool"}, []string{"/usr/bin/tool"}},
		{"", "", "", nil, []string{"missing"}, nil},
		{"", "", "", nil, nil, nil},
	} {
		t.Run(tc.user+strings.Join(tc.cmd, "_"), func(t *testing.T) {
			// No PATH in Env: the default PATH finds /bin/tool through /bin -> usr/bin.
			env.pushLayered("team/users", "t", map[string]any{"os": "linux", "architecture": "amd64",
				"config": map[string]any{"User": tc.user, "Entrypoint": tc.entrypoint, "Cmd": tc.cmd}}, layer)
			r := env.must(env.doHost("GET", testHost, "/appc/"+testHost+"/team/users/t/linux/amd64.aci"), http.StatusOK)
			man, _ := readACI(t, r.body)
			app, ok := man["app"].(map[string]any)
			if tc.wantExec == nil {
				if ok {
					t.Fatalf("app %v, want none", app)
				}
				return
			}
			if !ok {
				t.Fatalf("no app section: %v", man)
			}
			if fmt.Sprint(app["exec"]) != fmt.Sprint(tc.wantExec) || app["user"] != tc.wantUser || app["group"] != tc.wantGroup {
				t.Errorf("exec %v user %v group %v", app["exec"], app["user"], app["group"])
			}
		})
	}
}

func TestACIHostileLayers(t *testing.T) {
	env := newTestEnv(t, Config{})
	base := tarEntry{name: "ok.txt", body: "fine"}
	for _, tc := range []struct {
		name  string
		layer []tarEntry
	}{
		{"dotdot", []tarEntry{base, {name: "../escape", body: "x"}}},
		{"dotdot-inside", []tarEntry{base, {name: "a/../../escape", body: "x"}}},
		{"absolute", []tarEntry{base, {name: "/etc/cron.d/x", body: "x"}}},
		{"hardlink-out", []tarEntry{base, {name: "h", typ: tar.TypeLink, link: "../../etc/shadow"}}},
		{"hardlink-absolute", []tarEntry{base, {name: "h", typ: tar.TypeLink, link: "/etc/shadow"}}},
		{"through-symlink", []tarEntry{base, {name: "lnk", typ: tar.TypeSymlink, link: "/etc"}, {name: "lnk/passwd", body: "x"}}},
		{"whiteout-dotdot", []tarEntry{base, {name: ".wh..."}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := "hostile/" + tc.name
			env.pushLayered(repo, "v1", map[string]any{"os": "linux", "architecture": "amd64"}, layerTar(t, false, tc.layer...))
			r := env.doHost("GET", testHost, "/appc/"+testHost+"/"+repo+"/v1/linux/amd64.aci")
			if r.status != http.StatusUnprocessableEntity || r.code() != "ACI_INVALID" {
				t.Fatalf("%d %s", r.status, r.body)
			}
			if bytes.Contains(r.body, []byte("fine")) || !bytes.Contains(r.body, []byte(`"errors"`)) {
				t.Errorf("body %s", r.body)
			}
		})
	}
	// A hostile entry in a lower layer fails the image even when an upper
	// layer whites it out.
	env.pushLayered("hostile/hidden", "v1", map[string]any{"os": "linux", "architecture": "amd64"},
		layerTar(t, false, tarEntry{name: "../x", body: "x"}), layerTar(t, false, tarEntry{name: ".wh..."}))
	if r := env.doHost("GET", testHost, "/appc/"+testHost+"/hostile/hidden/v1/linux/amd64.aci"); r.status != http.StatusUnprocessableEntity {
		t.Errorf("hidden: %d %s", r.status, r.body)
	}
}

func TestACIErrors(t *testing.T) {
	env := newTestEnv(t, Config{})
	layer := layerTar(t, false, tarEntry{name: "f", body: "amd64"})
	armLayer := layerTar(t, false, tarEntry{name: "f", body: "arm64"})
	env.pushLayered("team/app", "1", map[string]any{"os": "linux", "architecture": "amd64"}, layer)
	// A multi-platform image: amd64 and arm64/v8 under one index.
	amd := env.pushLayered("team/multi", "", map[string]any{"os": "linux", "architecture": "amd64"}, layer)
	arm := env.pushLayered("team/multi", "", map[string]any{"os": "linux", "architecture": "arm64", "variant": "v8"}, armLayer)
	idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": MediaTypeOCIIndex, "manifests": []any{
		map[string]any{"mediaType": MediaTypeOCIManifest, "digest": amd, "size": 1, "platform": map[string]any{"os": "linux", "architecture": "amd64"}},
		map[string]any{"mediaType": MediaTypeOCIManifest, "digest": arm, "size": 1, "platform": map[string]any{"os": "linux", "architecture": "arm64", "variant": "v8"}},
	}})
	env.must(env.do("PUT", "/v2/team/multi/manifests/m", map[string]string{"Content-Type": MediaTypeOCIIndex}, idx), http.StatusCreated)

	for _, tc := range []struct{ arch, want string }{{"amd64", "amd64"}, {"aarch64", "arm64"}} {
		r := env.must(env.doHost("GET", testHost, "/appc/"+testHost+"/team/multi/m/linux/"+tc.arch+".aci"), http.StatusOK)
		man, entries := readACI(t, r.body)
		if last := entries[len(entries)-1]; last.Name != "rootfs/f" || last.Body != tc.want {
			t.Errorf("%s: got %v", tc.arch, last)
		}
		if !strings.Contains(fmt.Sprint(man["labels"]), "map[name:arch value:"+tc.arch+"]") {
			t.Errorf("%s: labels %v", tc.arch, man["labels"])
		}
	}

	for _, tc := range []struct {
		path   string
		status int
		code   string
	}{
		{"team/app/2/linux/amd64.aci", 404, "MANIFEST_UNKNOWN"},
		{"team/none/1/linux/amd64.aci", 404, "NAME_UNKNOWN"},
		{"team/app/1/linux/aarch64.aci", 404, "ACI_UNKNOWN"},
		{"team/app/1/linux/sparc.aci", 404, "ACI_UNKNOWN"},
		{"team/app/1/windows/amd64.aci", 404, "ACI_UNKNOWN"},
		{"team/app/-1/linux/amd64.aci", 404, "ACI_UNKNOWN"},
		{"team/multi/m/linux/s390x.aci", 404, "ACI_UNKNOWN"},
		{"team/app/1/linux/amd64.aci.asc", 404, "SIGNATURE_UNKNOWN"},
		{"team/app/1/linux/amd64.tar", 404, "NOT_FOUND"},
		{"app/1/linux/amd64.aci", 404, "NOT_FOUND"}, // no host part: too short
		{"Team/App/1/linux/amd64.aci", 400, "NAME_INVALID"},
	} {
		r := env.doHost("GET", testHost, "/appc/"+testHost+"/"+tc.path)
		if tc.path == "app/1/linux/amd64.aci" {
			r = env.doHost("GET", testHost, "/appc/"+tc.path)
		}
		if r.status != tc.status || r.code() != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.path, r.status, r.body, tc.status, tc.code)
		}
	}
	// An artifact is no container image.
	art, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": MediaTypeOCIManifest, "artifactType": "application/x-note",
		"config": map[string]any{"mediaType": "application/vnd.oci.empty.v1+json", "digest": env.pushBlob("team/app", []byte("{}")), "size": 2},
		"layers": []any{}})
	env.must(env.do("PUT", "/v2/team/app/manifests/note", map[string]string{"Content-Type": MediaTypeOCIManifest}, art), http.StatusCreated)
	if r := env.doHost("GET", testHost, "/appc/"+testHost+"/team/app/note/linux/amd64.aci"); r.status != 404 || r.code() != "ACI_UNKNOWN" {
		t.Errorf("artifact: %d %s", r.status, r.body)
	}
}

func TestSymlinkTarget(t *testing.T) {
	for _, tc := range []struct{ link, target, want string }{
		{"bin/sh", "busybox", "busybox"},
		{"bin/sh", "/bin/busybox", "/bin/busybox"},
		{"lib/x", "../etc/passwd", "../etc/passwd"},
		{"lib/x", "../../etc/passwd", "/etc/passwd"},
		{"a/b/c", "../../x/../../../y", "/y"},
		{"top", "..", "/"},
		{"top", "./a/../b", "./a/../b"},
		{"a/l", "b/../../c", "b/../../c"},
	} {
		if got := symlinkTarget(tc.link, tc.target); got != tc.want {
			t.Errorf("symlinkTarget(%q, %q) = %q, want %q", tc.link, tc.target, got, tc.want)
		}
	}
}
