package server

import (
	"encoding/json"
	"reflect"
	"testing"

	ms "github.com/dockyard/dockyard/metaserver"
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

// A log entry may carry binary arguments; every replica decodes them from
// the entry and answers in the same form, so the remembered reply of a
// request id is the same bytes everywhere.
func TestBinaryPayloadInLogEntry(t *testing.T) {
	args, _ := ms.AppendBinary(nil, ms.CreateIn{Parent: ms.RootIno, Name: "b", Mode: sIFREG | 0o640, Exclusive: true})
	want := command{Type: ms.OpCreate, ReqID: "c-1", Time: 5, Seed: 6, Payload: args}
	var got command
	if err := decodeCommand(encodeCommand(&want), &got); err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	var replies [][]byte
	for range 2 { // two replicas
		f := NewFSM()
		c := got
		r := f.apply(&c, 1)
		if r.Err != nil || !ms.IsBinary(r.Value) {
			t.Fatalf("apply: %+v", r)
		}
		replies = append(replies, r.Value)
	}
	var a ms.Attr
	if string(replies[0]) != string(replies[1]) || ms.Unmarshal(replies[0], &a) != nil || a.Mode != sIFREG|0o640 || a.Ctime != 5 {
		t.Fatalf("replies %q %q (%+v)", replies[0], replies[1], a)
	}
	// Arguments that claim to be binary but are not fail the command with
	// "invalid", the same way on every replica, never a panic.
	bad := command{Type: ms.OpCreate, ReqID: "c-2", Time: 7, Payload: []byte{ms.BinaryMagic, 3, 1}}
	if r := NewFSM().apply(&bad, 1); r.Err == nil || r.Err.Kind != ms.KindInvalid {
		t.Fatalf("bad binary arguments: %+v", r)
	}
}
