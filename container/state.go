package container

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// A named container (`dockyard run --name NAME`) keeps its state after it
// exits, so `dockyard commit --container NAME` can turn what it changed into
// a layer; `dockyard container rm NAME` removes it. Under the run state dir,
// NAME/ holds:
//
//	container.json        the Record
//	bundle/NAME/upper     the overlay's upper dir: every file the container
//	                      wrote, and overlayfs whiteouts for what it deleted
//
// An unnamed container's state is removed when it exits, as before.

// Record is what a kept container remembers of its image.
type Record struct {
	Name string `json:"name"`
	// Image is the reference the container was started from, and
	// Manifest the digest of the platform manifest it ran: a commit builds
	// on exactly that image, even if the tag has moved since.
	Image    string    `json:"image"`
	Manifest string    `json:"manifest"`
	Scheme   string    `json:"scheme"` // how the registry was reached
	Created  time.Time `json:"created"`
}

const recordFile = "container.json"

var nameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// ErrNoContainer is returned for a name with no kept state.
var ErrNoContainer = errors.New("no such container")

// CheckName accepts names as docker does: letters, digits, _ . -, not
// starting with a punctuation mark (so a name is never a path).
func CheckName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("container name %q: want letters, digits, '_', '.' or '-', starting with a letter or digit, at most 63 characters", name)
	}
	return nil
}

// Dir is where the container name keeps its state under stateDir.
func Dir(stateDir, name string) string { return filepath.Join(stateDir, name) }

// UpperDir is the overlay upper dir of the kept container name.
func UpperDir(stateDir, name string) string {
	return filepath.Join(Dir(stateDir, name), "bundle", name, "upper")
}

// Reserve creates the state dir of a new named container and writes its
// record; it fails when the name is taken.
func Reserve(stateDir string, rec Record) error {
	if err := CheckName(rec.Name); err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return err
	}
	dir := Dir(stateDir, rec.Name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("container %q exists: remove it with dockyard container rm %s, or pick another --name", rec.Name, rec.Name)
		}
		return err
	}
	b, err := json.MarshalIndent(rec, "", "  ")
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, recordFile), b, 0o600)
	}
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	return nil
}

// Load reads the record of the kept container name.
func Load(stateDir, name string) (Record, error) {
	var rec Record
	if err := CheckName(name); err != nil {
		return rec, err
	}
	b, err := os.ReadFile(filepath.Join(Dir(stateDir, name), recordFile))
	if errors.Is(err, os.ErrNotExist) {
		return rec, fmt.Errorf("container %q: %w in %s (only containers started with --name are kept)", name, ErrNoContainer, stateDir)
	}
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("container %q: bad record: %w", name, err)
	}
	return rec, nil
}

// List returns the records of the kept containers, by name.
func List(stateDir string) ([]Record, error) {
	ents, err := os.ReadDir(stateDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Record
	for _, e := range ents {
		if !e.IsDir() || CheckName(e.Name()) != nil {
			continue
		}
		if rec, err := Load(stateDir, e.Name()); err == nil {
			out = append(out, rec)
		}
	}
	return out, nil
}

// Remove deletes the kept container name. It refuses while anything is
// mounted under its state dir (the container still runs).
func Remove(stateDir, name string) error {
	if _, err := Load(stateDir, name); err != nil {
		return err
	}
	dir, err := filepath.Abs(Dir(stateDir, name))
	if err != nil {
		return err
	}
	if m, err := mountedUnder(dir); err != nil {
		return err
	} else if m != "" {
		return fmt.Errorf("container %q is running (%s is mounted)", name, m)
	}
	return os.RemoveAll(dir)
}

// InUse reports whether the kept container name is running.
func InUse(stateDir, name string) (bool, error) {
	dir, err := filepath.Abs(Dir(stateDir, name))
	if err != nil {
		return false, err
	}
	m, err := mountedUnder(dir)
	return m != "", err
}

// mountedUnder returns a mount point at or below dir, if any.
func mountedUnder(dir string) (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountinfo(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			return mp, nil
		}
	}
	return "", sc.Err()
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) the kernel
// writes in mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for j := 1; j <= 3; j++ {
				c := s[i+j]
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + (c - '0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
