package main

import (
	"maps"
	"strings"
	"testing"
)

func TestParseVolumeOpts(t *testing.T) {
	got, err := parseVolumeOpts([]string{"mode=0770", "uid=1000", "from=data@before"})
	if want := map[string]string{"mode": "0770", "uid": "1000", "from": "data@before"}; err != nil || !maps.Equal(got, want) {
		t.Fatalf("parseVolumeOpts = %v, %v; want %v", got, err, want)
	}
	if got, err := parseVolumeOpts(nil); err != nil || len(got) != 0 {
		t.Fatalf("no options: %v, %v", got, err)
	}
	for _, c := range []struct {
		opts []string
		want string
	}{
		{[]string{"mode"}, `option "mode": want KEY=VALUE`},
		{[]string{"=1"}, `option "=1": want KEY=VALUE`},
		{[]string{"uid=1", "uid=2"}, "option uid given twice"},
	} {
		if _, err := parseVolumeOpts(c.opts); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parseVolumeOpts(%q) = %v, want an error containing %q", c.opts, err, c.want)
		}
	}
}
