package store

import "testing"

func TestAdvance(t *testing.T) {
	bufs := [][]byte{[]byte("head"), []byte("data"), nil, []byte("tail")}
	bufs = advance(bufs, 6)
	if len(bufs) != 3 || string(bufs[0]) != "ta" || bufs[1] != nil || string(bufs[2]) != "tail" {
		t.Fatalf("advance(6) = %q", bufs)
	}
	if bufs = advance(bufs, 2); len(bufs) != 1 || string(bufs[0]) != "tail" {
		t.Fatalf("advance past an empty part = %q", bufs)
	}
	if bufs = advance(bufs, 4); len(bufs) != 0 {
		t.Fatalf("advance(all) = %q", bufs)
	}
}
