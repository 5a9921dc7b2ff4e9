package server

import (
	"encoding/json"
	"reflect"
	"testing"
)

// TestDecodeLegacyJSONEntries: a node upgraded in place still has log entries
// written as JSON before the binary envelope; it must apply them, not stop.
func TestDecodeLegacyJSONEntries(t *testing.T) {
	want := command{Type: "create", ReqID: "c1-7", Time: 1764197000123456789, Seed: 42, Lease: 99,
		Payload: json.RawMessage(`{"parent":1,"name":"f","mode":33188}`)}
	legacy, err := json.Marshal(want) // the format of the first releases
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"legacy JSON": legacy, "binary": encodeCommand(&want)} {
		var got command
		if err := decodeCommand(b, &got); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: got %+v, want %+v", name, got, want)
		}
	}
	for _, bad := range [][]byte{nil, {7}, []byte("{not json"), {codecVersion, 200}} {
		var c command
		if err := decodeCommand(bad, &c); err == nil {
			t.Fatalf("decoded garbage %q", bad)
		}
	}
}
