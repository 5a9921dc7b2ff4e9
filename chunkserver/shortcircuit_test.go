//go:build unix

package chunkserver_test

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/dockyard/dockyard/chunkserver"
)

// unixPair returns the two ends of a connected Unix stream socket.
func unixPair(t *testing.T) (*net.UnixConn, *net.UnixConn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	conn := func(fd int) *net.UnixConn {
		f := os.NewFile(uintptr(fd), "pair")
		defer f.Close()
		c, err := net.FileConn(f)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c.(*net.UnixConn)
	}
	return conn(fds[0]), conn(fds[1])
}

func TestShortCircuitFramesCarryADescriptor(t *testing.T) {
	a, b := unixPair(t)
	path := filepath.Join(t.TempDir(), "shard")
	if err := os.WriteFile(path, []byte("shard bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	l := chunkserver.ShardLayout{Size: 5, DataOffset: 6, BlockSize: 64 << 10, SumsOffset: 11}
	if err := chunkserver.WriteShortCircuitFrame(a, chunkserver.ShortCircuitReply{Layout: &l}, f); err != nil {
		t.Fatal(err)
	}
	f.Close() // the receiver has its own descriptor
	var got chunkserver.ShortCircuitReply
	g, err := chunkserver.ReadShortCircuitFrame(b, &got)
	if err != nil || g == nil || got.Layout == nil || *got.Layout != l {
		t.Fatalf("ReadShortCircuitFrame = %v, %+v, %v", g, got, err)
	}
	defer g.Close()
	p := make([]byte, 5)
	if _, err := g.ReadAt(p, 6); err != nil || string(p) != "bytes" {
		t.Errorf("reading the received descriptor: %q, %v", p, err)
	}

	// A frame without one.
	if err := chunkserver.WriteShortCircuitFrame(b, chunkserver.ShortCircuitRequest{Op: chunkserver.SCOpen, Name: "1.0"}, nil); err != nil {
		t.Fatal(err)
	}
	var req chunkserver.ShortCircuitRequest
	if g, err := chunkserver.ReadShortCircuitFrame(a, &req); err != nil || g != nil || req.Name != "1.0" {
		t.Errorf("plain frame = %v, %+v, %v", g, req, err)
	}
}

func TestShortCircuitFramesRefuseDamage(t *testing.T) {
	for _, tc := range []struct {
		name string
		raw  []byte
		want error
	}{
		{"oversized", binary.LittleEndian.AppendUint32(nil, 1<<30), nil},
		{"cut short", append(binary.LittleEndian.AppendUint32(nil, 10), `{"op"`...), io.ErrUnexpectedEOF},
		{"not JSON", append(binary.LittleEndian.AppendUint32(nil, 3), "xyz"...), nil},
		{"two frames", append(binary.LittleEndian.AppendUint32(nil, 2), "{}\x02\x00\x00\x00{}"...), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := unixPair(t)
			if _, err := a.Write(tc.raw); err != nil {
				t.Fatal(err)
			}
			a.CloseWrite()
			var req chunkserver.ShortCircuitRequest
			_, err := chunkserver.ReadShortCircuitFrame(b, &req)
			if err == nil || tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("ReadShortCircuitFrame = %v, want an error (%v)", err, tc.want)
			}
		})
	}
}

func TestShardLayoutCheck(t *testing.T) {
	good := chunkserver.ShardLayout{Size: 100, DataOffset: 64, BlockSize: 64 << 10, SumsOffset: 164}
	if err := good.Check(); err != nil || good.FileSize() != 172 || good.Blocks() != 1 {
		t.Errorf("good layout: %v, file %d, blocks %d", err, good.FileSize(), good.Blocks())
	}
	for _, bad := range []chunkserver.ShardLayout{
		{Size: -1, DataOffset: 64, BlockSize: 1, SumsOffset: 64},
		{Size: 100, DataOffset: 64, BlockSize: 0, SumsOffset: 164},
		{Size: 100, DataOffset: 64, BlockSize: 64 << 10, SumsOffset: 100},
	} {
		if bad.Check() == nil {
			t.Errorf("layout %+v passed Check", bad)
		}
	}
}
