package main

import (
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	text := `# HELP dockyard_meta_log_append_seconds Raft log appends by role.
# TYPE dockyard_meta_log_append_seconds histogram
dockyard_meta_log_append_seconds_bucket{role="leader",le="5e-06"} 3
dockyard_meta_log_append_seconds_sum{role="leader"} 0.25
dockyard_meta_log_append_seconds_count{role="leader"} 100
dockyard_meta_op_seconds_sum{op="create"} 1.5e-03
dockyard_meta_op_seconds_sum{op="lookup"} 9
dockyard_meta_commit_seconds_count 7
`
	s, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := sample{
		`dockyard_meta_log_append_seconds_sum{role="leader"}`:   0.25,
		`dockyard_meta_log_append_seconds_count{role="leader"}`: 100,
		`dockyard_meta_op_seconds_sum{op="create"}`:             0.0015,
		`dockyard_meta_commit_seconds_count`:                    7,
	}
	if len(s) != len(want) {
		t.Fatalf("parsed %v, want %v", s, want)
	}
	for k, v := range want {
		if s[k] != v {
			t.Errorf("%s = %v, want %v", k, s[k], v)
		}
	}
	if _, err := parseMetrics(strings.NewReader("dockyard_meta_commit_seconds_count x\n")); err == nil {
		t.Fatal("a malformed value parsed")
	}
}

// FuzzParseMetrics: whatever a node serves, the parser returns an error or
// a sample, never a panic, and keeps only the series the breakdown reads.
func FuzzParseMetrics(f *testing.F) {
	f.Add("dockyard_meta_commit_seconds_count 7\n# x\n\n")
	f.Add(`dockyard_meta_op_seconds_sum{op="create"} 1e-3` + "\nother 1\n")
	f.Fuzz(func(t *testing.T, text string) {
		s, err := parseMetrics(strings.NewReader(text))
		if err != nil {
			return
		}
		known := map[string]bool{}
		for _, k := range breakdownSeries {
			known[k] = true
		}
		for k := range s {
			if !known[k] {
				t.Fatalf("kept series %q the breakdown does not read", k)
			}
		}
	})
}
