package converter

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/gzip"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// testData mixes incompressible, repetitive and text-like bytes so deflate
// emits stored, fixed and dynamic blocks.
func testData(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	var b bytes.Buffer
	words := []string{"alpha ", "beta ", "gamma\n", "delta ", "/usr/lib/", "x86_64-linux-gnu ", "\x00\x00\x00\x00"}
	for b.Len() < n {
		switch r.IntN(3) {
		case 0:
			b.Write(randBytes(r, r.IntN(64<<10)))
		case 1:
			b.Write(bytes.Repeat([]byte{byte(r.IntN(256))}, r.IntN(100<<10)))
		default:
			for i := r.IntN(20000); i > 0; i-- {
				b.WriteString(words[r.IntN(len(words))])
			}
		}
	}
	return b.Bytes()[:n]
}

func TestInflaterMatchesGzip(t *testing.T) {
	data := testData(1, 3<<20)
	for _, level := range []int{gzip.NoCompression, gzip.BestSpeed, gzip.DefaultCompression, gzip.BestCompression, gzip.HuffmanOnly} {
		var z bytes.Buffer
		// Two members, as concatenating gzip files produces.
		for _, part := range [][]byte{data[:1<<20], data[1<<20:]} {
			w, _ := gzip.NewWriterLevel(&z, level)
			w.Write(part)
			w.Close()
		}
		var bounds []boundary
		f, err := newInflater(bufio.NewReader(bytes.NewReader(z.Bytes())), 0, nil, true)
		if err != nil {
			t.Fatal(err)
		}
		f.onBoundary = func(b boundary) { bounds = append(bounds, b) }
		got, err := io.ReadAll(f)
		if err != nil {
			t.Fatalf("level %d: %v", level, err)
		}
		if !bytes.Equal(got, data) {
			t.Fatalf("level %d: output differs", level)
		}
		var members int
		for _, b := range bounds {
			if b.memberStart {
				members++
				if b.out != 1<<20 {
					t.Errorf("member boundary at %d", b.out)
				}
			}
		}
		if members != 1 {
			t.Errorf("level %d: %d member boundaries, want 1", level, members)
		}
		if len(bounds) < 2 {
			t.Errorf("level %d: only %d boundaries", level, len(bounds))
		}
		// Resume at every boundary inside the first member, aligned ones with
		// the standard library and the others with our inflater.
		for _, b := range bounds {
			if b.memberStart || b.out >= 1<<20 {
				continue
			}
			win := data[max(0, b.out-windowSize):b.out]
			src := bufio.NewReader(bytes.NewReader(z.Bytes()[b.bitPos/8:]))
			var r io.Reader
			if b.bitPos%8 == 0 {
				r = flate.NewReaderDict(src, win)
			} else {
				r, err = newInflater(src, uint(b.bitPos%8), win, false)
				if err != nil {
					t.Fatal(err)
				}
			}
			want := data[b.out : 1<<20]
			got := make([]byte, len(want))
			if _, err := io.ReadFull(r, got); err != nil {
				t.Fatalf("level %d resume at bit %d: %v", level, b.bitPos, err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("level %d resume at bit %d: output differs", level, b.bitPos)
			}
		}
	}
}

func TestInflaterErrors(t *testing.T) {
	var z bytes.Buffer
	w := gzip.NewWriter(&z)
	w.Write(testData(2, 200<<10))
	w.Close()
	read := func(b []byte) error {
		f, err := newInflater(bufio.NewReader(bytes.NewReader(b)), 0, nil, true)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, f)
		return err
	}
	if err := read(z.Bytes()[:z.Len()/2]); !errors.Is(err, ErrTruncated) {
		t.Errorf("truncated: %v", err)
	}
	if err := read(z.Bytes()[:z.Len()-3]); !errors.Is(err, ErrTruncated) {
		t.Errorf("truncated trailer: %v", err)
	}
	bad := bytes.Clone(z.Bytes())
	bad[len(bad)-6] ^= 0xff // CRC
	if err := read(bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("bad crc: %v", err)
	}
	bad = bytes.Clone(z.Bytes())
	bad[10] = 0xff // first block header: reserved type 3
	if err := read(bad); !errors.Is(err, ErrCorrupt) {
		t.Errorf("bad block: %v", err)
	}
}
