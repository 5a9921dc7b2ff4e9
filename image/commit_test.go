package image

import (
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestApplyChanges(t *testing.T) {
	base := func() ocispec.ImageConfig {
		return ocispec.ImageConfig{
			Env:        []string{"PATH=/bin", "A=1"},
			Cmd:        []string{"sh"},
			WorkingDir: "/srv",
			Labels:     map[string]string{"old": "x"},
		}
	}
	for _, tc := range []struct {
		change string
		want   func(*ocispec.ImageConfig)
	}{
		{`CMD ["echo", "hi there"]`, func(c *ocispec.ImageConfig) { c.Cmd = []string{"echo", "hi there"} }},
		{`CMD echo $HOME`, func(c *ocispec.ImageConfig) { c.Cmd = []string{"/bin/sh", "-c", "echo $HOME"} }},
		{`cmd ["x"]`, func(c *ocispec.ImageConfig) { c.Cmd = []string{"x"} }},
		{`ENTRYPOINT ["/init"]`, func(c *ocispec.ImageConfig) { c.Entrypoint = []string{"/init"} }},
		{`ENV A=2 B="two words" C=a\ b`, func(c *ocispec.ImageConfig) {
			c.Env = []string{"PATH=/bin", "A=2", "B=two words", "C=a b"}
		}},
		{`ENV GREETING hello world`, func(c *ocispec.ImageConfig) { c.Env = append(c.Env, "GREETING=hello world") }},
		{`LABEL version=1.0 "maintainer"='a b'`, func(c *ocispec.ImageConfig) {
			c.Labels = map[string]string{"old": "x", "version": "1.0", "maintainer": "a b"}
		}},
		{`EXPOSE 80 53/udp 443/TCP`, func(c *ocispec.ImageConfig) {
			c.ExposedPorts = map[string]struct{}{"80/tcp": {}, "53/udp": {}, "443/tcp": {}}
		}},
		{`USER nobody:nogroup`, func(c *ocispec.ImageConfig) { c.User = "nobody:nogroup" }},
		{`WORKDIR /app`, func(c *ocispec.ImageConfig) { c.WorkingDir = "/app" }},
		{`WORKDIR sub/../data`, func(c *ocispec.ImageConfig) { c.WorkingDir = "/srv/data" }},
		{`VOLUME ["/data", "/logs/"]`, func(c *ocispec.ImageConfig) { c.Volumes = map[string]struct{}{"/data": {}, "/logs": {}} }},
		{`STOPSIGNAL SIGINT`, func(c *ocispec.ImageConfig) { c.StopSignal = "SIGINT" }},
	} {
		got, want := base(), base()
		if err := ApplyChanges(&got, []string{tc.change}); err != nil {
			t.Errorf("%s: %v", tc.change, err)
			continue
		}
		tc.want(&want)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got %+v\nwant %+v", tc.change, got, want)
		}
	}
}

func TestApplyChangesRefuses(t *testing.T) {
	for change, msg := range map[string]string{
		`RUN apt-get update`:    "unsupported instruction",
		`CMD`:                   "needs an argument",
		`CMD ["unterminated"`:   "not a JSON array",
		`ENV =x`:                "want KEY=VALUE",
		`LABEL a="open`:         "unterminated",
		`EXPOSE 70000`:          "not a port number",
		`EXPOSE 80/icmp`:        "protocol",
		`EXPOSE 08`:             "not a port number",
		`VOLUME relative/path`:  "not an absolute path",
		`FROM scratch`:          "unsupported instruction",
		`LABEL justakey`:        "want KEY=VALUE",
		`ENTRYPOINT [1, 2]`:     "not a JSON array",
		`   `:                   "unsupported instruction",
		`WORKDIR`:               "needs an argument",
		`USER  `:                "needs an argument",
		`HEALTHCHECK CMD true`:  "unsupported instruction",
		`ONBUILD RUN something`: "unsupported instruction",
	} {
		var c ocispec.ImageConfig
		err := ApplyChanges(&c, []string{change})
		if err == nil || !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), "--change") {
			t.Errorf("%q: err = %v, want one naming --change and saying %q", change, err, msg)
		}
	}
}

func TestBuildConfig(t *testing.T) {
	created := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	older := created.Add(-time.Hour)
	base := &ocispec.Image{
		Created:  &older,
		Author:   "base author",
		Platform: ocispec.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"},
		Config:   ocispec.ImageConfig{Env: []string{"A=1"}, Cmd: []string{"sh"}, Labels: map[string]string{"k": "v"}},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromString("l1"), digest.FromString("l2")}},
		History: []ocispec.History{
			{Created: &older, CreatedBy: "ADD l1"},
			{Created: &older, CreatedBy: "ENV A=1", EmptyLayer: true},
			{Created: &older, CreatedBy: "ADD l2"},
		},
	}
	d := digest.FromString("new")
	got, err := BuildConfig(base, d, CommitConfig{Created: created, Author: "me", Comment: "fix", CreatedBy: "dockyard commit",
		Changes: []string{"ENV A=2", "LABEL k=w"}})
	if err != nil {
		t.Fatal(err)
	}
	if got.OS != "linux" || got.Architecture != "arm64" || got.Variant != "v8" {
		t.Errorf("platform %+v, want the base's", got.Platform)
	}
	if !got.Created.Equal(created) || got.Author != "me" {
		t.Errorf("created %v author %q", got.Created, got.Author)
	}
	if want := []digest.Digest{digest.FromString("l1"), digest.FromString("l2"), d}; !reflect.DeepEqual(got.RootFS.DiffIDs, want) || got.RootFS.Type != "layers" {
		t.Errorf("rootfs %+v", got.RootFS)
	}
	if len(got.History) != 4 {
		t.Fatalf("history %+v", got.History)
	}
	if h := got.History[3]; !h.Created.Equal(created) || h.CreatedBy != "dockyard commit" || h.Author != "me" || h.Comment != "fix" || h.EmptyLayer {
		t.Errorf("new history entry %+v", h)
	}
	if !reflect.DeepEqual(got.Config.Env, []string{"A=2"}) || got.Config.Labels["k"] != "w" || !reflect.DeepEqual(got.Config.Cmd, []string{"sh"}) {
		t.Errorf("config %+v", got.Config)
	}
	// The base is left as it was.
	if base.Config.Env[0] != "A=1" || base.Config.Labels["k"] != "v" || len(base.RootFS.DiffIDs) != 2 || len(base.History) != 3 || base.Author != "base author" {
		t.Errorf("the base config was modified: %+v", base)
	}

	got, err = BuildConfig(nil, d, CommitConfig{Created: created})
	if err != nil {
		t.Fatal(err)
	}
	if got.OS != runtime.GOOS || got.Architecture != runtime.GOARCH {
		t.Errorf("scratch image platform %+v, want this host's", got.Platform)
	}
	if !reflect.DeepEqual(got.RootFS.DiffIDs, []digest.Digest{d}) || len(got.History) != 1 || got.Author != "" {
		t.Errorf("scratch image %+v", got)
	}
	if _, err := BuildConfig(nil, d, CommitConfig{Created: created, Changes: []string{"RUN x"}}); err == nil {
		t.Error("a bad change was accepted")
	}
}
