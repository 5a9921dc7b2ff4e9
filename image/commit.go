package image

import (
	"encoding/json"
	"fmt"
	"path"
	"runtime"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// CommitConfig is what a commit records about itself in the image config.
type CommitConfig struct {
	Created   time.Time
	Author    string
	Comment   string // the history entry's comment (--message)
	CreatedBy string // the history entry's created_by
	// Changes are Dockerfile-like instructions applied to the config (see
	// ApplyChanges).
	Changes []string
}

// BuildConfig returns the config of an image made of base's layers (none
// when base is nil: the image then gets this host's OS and architecture)
// and one more layer with the given diff ID. base is not modified.
func BuildConfig(base *ocispec.Image, diffID digest.Digest, c CommitConfig) (ocispec.Image, error) {
	var img ocispec.Image
	if base != nil {
		// A deep copy through JSON: the slices and maps of the base's
		// config must not be shared with the new one.
		b, err := json.Marshal(base)
		if err != nil {
			return img, err
		}
		if err := json.Unmarshal(b, &img); err != nil {
			return img, err
		}
	} else {
		img.Platform = ocispec.Platform{OS: runtime.GOOS, Architecture: runtime.GOARCH}
		if v := armVariant(); v != "" {
			img.Variant = v
		}
	}
	if err := ApplyChanges(&img.Config, c.Changes); err != nil {
		return img, err
	}
	created := c.Created.UTC()
	img.Created = &created
	if c.Author != "" {
		img.Author = c.Author
	}
	img.RootFS.Type = "layers"
	img.RootFS.DiffIDs = append(img.RootFS.DiffIDs, diffID)
	img.History = append(img.History, ocispec.History{
		Created:   &created,
		CreatedBy: c.CreatedBy,
		Author:    c.Author,
		Comment:   c.Comment,
	})
	return img, nil
}

func armVariant() string {
	switch runtime.GOARCH {
	case "arm64":
		return "v8"
	}
	return ""
}

// ApplyChanges applies Dockerfile-like instructions to cfg, as
// `docker commit --change` does: CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER,
// VOLUME, WORKDIR and STOPSIGNAL. CMD and ENTRYPOINT take a JSON array (exec
// form) or a command line (shell form, run with /bin/sh -c).
func ApplyChanges(cfg *ocispec.ImageConfig, changes []string) error {
	for _, ch := range changes {
		if err := applyChange(cfg, ch); err != nil {
			return fmt.Errorf("--change %q: %w", ch, err)
		}
	}
	return nil
}

func applyChange(cfg *ocispec.ImageConfig, ch string) error {
	instr, arg, _ := strings.Cut(strings.TrimSpace(ch), " ")
	instr, arg = strings.ToUpper(instr), strings.TrimSpace(arg)
	if !changeInstructions[instr] {
		return fmt.Errorf("unsupported instruction %q (want CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR or STOPSIGNAL)", instr)
	}
	if arg == "" {
		return fmt.Errorf("%s needs an argument", instr)
	}
	switch instr {
	case "CMD":
		v, err := commandForm(arg)
		if err != nil {
			return err
		}
		cfg.Cmd = v
	case "ENTRYPOINT":
		v, err := commandForm(arg)
		if err != nil {
			return err
		}
		cfg.Entrypoint = v
	case "ENV":
		kvs, err := keyValues(arg, true)
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			cfg.Env = setEnv(cfg.Env, kv[0], kv[1])
		}
	case "LABEL":
		kvs, err := keyValues(arg, false)
		if err != nil {
			return err
		}
		if cfg.Labels == nil {
			cfg.Labels = map[string]string{}
		}
		for _, kv := range kvs {
			cfg.Labels[kv[0]] = kv[1]
		}
	case "EXPOSE":
		words, err := splitWords(arg)
		if err != nil {
			return err
		}
		if cfg.ExposedPorts == nil {
			cfg.ExposedPorts = map[string]struct{}{}
		}
		for _, w := range words {
			p, err := port(w)
			if err != nil {
				return err
			}
			cfg.ExposedPorts[p] = struct{}{}
		}
	case "VOLUME":
		var vols []string
		if strings.HasPrefix(arg, "[") {
			if err := json.Unmarshal([]byte(arg), &vols); err != nil {
				return fmt.Errorf("VOLUME: not a JSON array of strings: %v", err)
			}
		} else {
			var err error
			if vols, err = splitWords(arg); err != nil {
				return err
			}
		}
		if cfg.Volumes == nil {
			cfg.Volumes = map[string]struct{}{}
		}
		for _, v := range vols {
			if !path.IsAbs(v) {
				return fmt.Errorf("VOLUME %q is not an absolute path", v)
			}
			cfg.Volumes[path.Clean(v)] = struct{}{}
		}
	case "USER":
		cfg.User = arg
	case "WORKDIR":
		w := arg
		if !path.IsAbs(w) {
			// Relative to the current one, as in a Dockerfile.
			base := cfg.WorkingDir
			if base == "" {
				base = "/"
			}
			w = path.Join(base, w)
		}
		cfg.WorkingDir = path.Clean(w)
	case "STOPSIGNAL":
		cfg.StopSignal = arg
	}
	return nil
}

var changeInstructions = map[string]bool{"CMD": true, "ENTRYPOINT": true, "ENV": true, "EXPOSE": true, "LABEL": true,
	"USER": true, "VOLUME": true, "WORKDIR": true, "STOPSIGNAL": true}

// commandForm reads ["a","b"] (exec form) or a command line (shell form).
func commandForm(arg string) ([]string, error) {
	if strings.HasPrefix(arg, "[") {
		var v []string
		if err := json.Unmarshal([]byte(arg), &v); err != nil {
			return nil, fmt.Errorf("not a JSON array of strings: %v", err)
		}
		return v, nil
	}
	return []string{"/bin/sh", "-c", arg}, nil
}

// keyValues reads K=V pairs (quotes allowed); for ENV, the older "K V"
// form (one pair, the value the rest of the line) too.
func keyValues(arg string, env bool) ([][2]string, error) {
	if k, v, ok := strings.Cut(arg, " "); env && ok && !strings.Contains(k, "=") {
		return [][2]string{{k, strings.TrimSpace(v)}}, nil
	}
	words, err := splitWords(arg)
	if err != nil {
		return nil, err
	}
	var out [][2]string
	for _, w := range words {
		k, v, ok := strings.Cut(w, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%q: want KEY=VALUE", w)
		}
		out = append(out, [2]string{k, v})
	}
	return out, nil
}

// splitWords splits on blanks, honouring double and single quotes and
// backslash escapes, as a Dockerfile line is read.
func splitWords(s string) ([]string, error) {
	var (
		out   []string
		cur   strings.Builder
		in    bool // inside a word
		quote rune
	)
	rs := []rune(s)
	for i := 0; i < len(rs); i++ {
		r := rs[i]
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != '\'' && r == '\\' && i+1 < len(rs):
			i++
			cur.WriteRune(rs[i])
			in = true
		case quote != 0:
			cur.WriteRune(r)
		case r == '"' || r == '\'':
			quote, in = r, true
		case r == ' ' || r == '\t':
			if in {
				out = append(out, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteRune(r)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if in {
		out = append(out, cur.String())
	}
	return out, nil
}

func setEnv(env []string, k, v string) []string {
	for i, kv := range env {
		if name, _, _ := strings.Cut(kv, "="); name == k {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}

// port normalises an EXPOSE word to PORT/PROTO (tcp by default).
func port(w string) (string, error) {
	num, proto, ok := strings.Cut(w, "/")
	if !ok {
		proto = "tcp"
	}
	proto = strings.ToLower(proto)
	if proto != "tcp" && proto != "udp" && proto != "sctp" {
		return "", fmt.Errorf("EXPOSE %q: protocol %q, want tcp, udp or sctp", w, proto)
	}
	var n int
	if _, err := fmt.Sscanf(num, "%d", &n); err != nil || n < 1 || n > 65535 || fmt.Sprint(n) != num {
		return "", fmt.Errorf("EXPOSE %q: not a port number", w)
	}
	return num + "/" + proto, nil
}
