package metaserver

import (
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// binaryCases are values of every type with a binary form, with their
// fields at the edges (zero, maximal, negative times, empty and long
// strings).
func binaryCases() []any {
	return []any{
		NameArgs{},
		NameArgs{Parent: 1, Name: "hello"},
		NameArgs{Parent: ^Ino(0), Name: string(make([]byte, 300))},
		InoArgs{},
		InoArgs{Ino: 1 << 62},
		CreateIn{},
		CreateIn{Parent: 7, Name: "f", Mode: 0o100644, Uid: 1000, Gid: 1000, Exclusive: true},
		CreateIn{Parent: 7, Name: "dev", Mode: 0o20600, Rdev: 259<<8 | 3, Uid: ^uint32(0), Gid: ^uint32(0)},
		CreateIn{Parent: 7, Name: "l", Mode: 0o120777, Target: "../x/y"},
		CreateIn{Parent: 7, Name: "x", Mode: 0o100600,
			Xattrs: map[string][]byte{"user.a": []byte("1"), "security.capability": {0, 1, 2, 255}, "user.empty": {}}},
		Attr{},
		Attr{Ino: 9, Mode: 0o40755, Uid: 1, Gid: 2, Size: 1 << 40, Nlink: 3, Rdev: 5,
			Atime: -1, Mtime: 1764197000123456789, Ctime: -1 << 62, Gen: ^uint64(0)},
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	for _, v := range binaryCases() {
		b, ok := AppendBinary(nil, v)
		if !ok || !IsBinary(b) || !HasBinary(v) {
			t.Fatalf("%T has no binary form (ok %v)", v, ok)
		}
		got := reflect.New(reflect.TypeOf(v))
		if err := Unmarshal(b, got.Interface()); err != nil {
			t.Fatalf("%#v: %v", v, err)
		}
		if !reflect.DeepEqual(got.Elem().Interface(), v) {
			t.Fatalf("round trip of %T:\n got %#v\nwant %#v", v, got.Elem().Interface(), v)
		}
		// Same value, same bytes: map order must not leak into the form.
		again, _ := AppendBinary(nil, v)
		if string(again) != string(b) {
			t.Fatalf("%T encodes two ways", v)
		}
		// Every strict prefix is malformed, never a panic nor a value.
		for i := range len(b) {
			if err := Unmarshal(b[:i], got.Interface()); i > 0 && !errors.Is(err, ErrBadBinary) {
				t.Fatalf("%T cut to %d of %d bytes: %v", v, i, len(b), err)
			}
		}
		if err := Unmarshal(append(b, 0), got.Interface()); !errors.Is(err, ErrBadBinary) {
			t.Fatalf("%T with a trailing byte: %v", v, err)
		}
	}
}

// The JSON form keeps working through the same entry point, so old clients
// and old log entries decode as before.
func TestUnmarshalStillReadsJSON(t *testing.T) {
	for _, v := range binaryCases() {
		if in, ok := v.(CreateIn); ok && len(in.Xattrs) > 0 {
			continue // JSON turns the empty value into "", decoded as []byte{}: compared below
		}
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		got := reflect.New(reflect.TypeOf(v))
		if err := Unmarshal(j, got.Interface()); err != nil {
			t.Fatalf("%s: %v", j, err)
		}
		if !reflect.DeepEqual(got.Elem().Interface(), v) {
			t.Fatalf("JSON %s decoded to %#v", j, got.Elem().Interface())
		}
	}
}

func TestBinaryRejectsMalformed(t *testing.T) {
	name, _ := AppendBinary(nil, NameArgs{Parent: 1, Name: "x"})
	for what, c := range map[string]struct {
		b []byte
		v any
	}{
		"magic only":         {[]byte{BinaryMagic}, &NameArgs{}},
		"other record type":  {name, &CreateIn{}},
		"unknown type":       {[]byte{BinaryMagic, 99, 1}, &InoArgs{}},
		"no binary form":     {name, &Chunk{}},
		"overlong varint":    {[]byte{BinaryMagic, binInoArgs, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, &InoArgs{}},
		"string past end":    {[]byte{BinaryMagic, binNameArgs, 1, 200, 'a'}, &NameArgs{}},
		"mode over 32 bits":  {append([]byte{BinaryMagic, binAttr, 1}, 0x80, 0x80, 0x80, 0x80, 0x10), &Attr{}},
		"xattr count lies":   {[]byte{BinaryMagic, binCreateIn, 1, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0x0f, 0}, &CreateIn{}},
		"bool out of range":  {[]byte{BinaryMagic, binCreateIn, 1, 1, 'a', 0, 0, 0, 0, 0, 0, 7}, &CreateIn{}},
		"bool missing":       {[]byte{BinaryMagic, binCreateIn, 1, 1, 'a', 0, 0, 0, 0, 0, 0}, &CreateIn{}},
		"empty after header": {[]byte{BinaryMagic, binAttr}, &Attr{}},
	} {
		if err := Unmarshal(c.b, c.v); !errors.Is(err, ErrBadBinary) {
			t.Errorf("%s: %v, want ErrBadBinary", what, err)
		}
	}
}

func TestMarshalReplyFollowsTheRequest(t *testing.T) {
	a := Attr{Ino: 3, Mode: 0o100644}
	b, err := MarshalReply(a, true)
	if err != nil || !IsBinary(b) {
		t.Fatalf("binary reply %q, %v", b, err)
	}
	j, err := MarshalReply(a, false)
	if err != nil || IsBinary(j) || j[0] != '{' {
		t.Fatalf("JSON reply %q, %v", j, err)
	}
	// Types without a binary form answer in JSON either way, and append
	// nothing.
	if b, ok := AppendBinary(nil, KVGetArgs{Bucket: "b"}); ok || b != nil {
		t.Fatalf("KVGetArgs appended %q, %v", b, ok)
	}
	l, err := MarshalReply([]Ino{1, 2}, true)
	if err != nil || string(l) != "[1,2]" {
		t.Fatalf("reply without a binary form: %q, %v", l, err)
	}
}

func FuzzUnmarshalBinary(f *testing.F) {
	for _, v := range binaryCases() {
		b, _ := AppendBinary(nil, v)
		f.Add(b)
	}
	f.Add([]byte{BinaryMagic})
	f.Fuzz(func(t *testing.T, b []byte) {
		b = append([]byte{BinaryMagic}, b...)
		for _, v := range []any{&NameArgs{}, &InoArgs{}, &CreateIn{}, &Attr{}} {
			if err := Unmarshal(b, v); err != nil {
				if !errors.Is(err, ErrBadBinary) {
					t.Fatalf("%T: error %v is not ErrBadBinary", v, err)
				}
				continue
			}
			// What decodes re-encodes to a record that decodes the same.
			val := reflect.ValueOf(v).Elem().Interface()
			re, _ := AppendBinary(nil, val)
			back := reflect.New(reflect.TypeOf(val))
			if err := Unmarshal(re, back.Interface()); err != nil || !reflect.DeepEqual(back.Elem().Interface(), val) {
				t.Fatalf("%T: re-encoding %#v: %v", v, val, err)
			}
		}
	})
}
