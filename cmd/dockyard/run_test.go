package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseVolumeSpecs(t *testing.T) {
	got, err := parseVolumeSpecs([]string{"data:/data", "/srv/www:/www:ro", "logs:/var/log:rw"})
	if err != nil {
		t.Fatal(err)
	}
	want := []volumeSpec{
		{Name: "data", Dest: "/data"},
		{HostDir: "/srv/www", Dest: "/www", ReadOnly: true},
		{Name: "logs", Dest: "/var/log"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parsed %+v, want %+v", got, want)
	}
	for _, bad := range []string{"data", ":/data", "data:", "data:/d:rx", "a:/b:ro:x"} {
		if _, err := parseVolumeSpecs([]string{bad}); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("-v %q: %v, want an error naming it", bad, err)
		}
	}
}
