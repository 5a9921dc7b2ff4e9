package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	ms "github.com/dockyard/dockyard/metaserver"
)

// rawStream upgrades a plain TCP connection to the stream protocol, to test
// the server without the Go client in between.
type rawStream struct {
	t    *testing.T
	conn net.Conn
	br   *bufio.Reader
}

func dialRawStream(t *testing.T, addr string) *rawStream {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: %s\r\nContent-Length: 0\r\n\r\n", ms.StreamPath, addr, ms.StreamProtocol)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols || resp.Header.Get("Upgrade") != ms.StreamProtocol {
		t.Fatalf("upgrade answered %s, Upgrade %q", resp.Status, resp.Header.Get("Upgrade"))
	}
	return &rawStream{t: t, conn: c, br: br}
}

func (s *rawStream) send(frame []byte) {
	s.t.Helper()
	if _, err := s.conn.Write(frame); err != nil {
		s.t.Fatal(err)
	}
}

func (s *rawStream) recv() (id uint64, status byte, body []byte) {
	s.t.Helper()
	f, err := ms.ReadStreamFrame(s.br, 1<<20)
	if err != nil {
		s.t.Fatal(err)
	}
	id, status, body, err = ms.ParseStreamFrame(f)
	if err != nil {
		s.t.Fatal(err)
	}
	return id, status, body
}

func (s *rawStream) wireError(body []byte) ms.WireError {
	s.t.Helper()
	var we ms.WireError
	if err := json.Unmarshal(body, &we); err != nil {
		s.t.Fatalf("error body %q: %v", body, err)
	}
	return we
}

func TestStreamFrames(t *testing.T) {
	n := startNode(t, testConfig(t, "s1", t.TempDir()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	s := dialRawStream(t, n.APIAddr())
	create, _ := ms.AppendBinary(nil, ms.CreateIn{Parent: ms.RootIno, Name: "f", Mode: sIFREG | 0o644, Exclusive: true})

	// A binary create answers in binary; its retry returns the same bytes.
	s.send(ms.AppendStreamRequest(nil, 1, 0, ms.OpCreate, "t-1", create))
	id, status, first := s.recv()
	var a ms.Attr
	if id != 1 || status != ms.StreamOK || !ms.IsBinary(first) || ms.Unmarshal(first, &a) != nil || a.Ino < 2 || a.Mode != sIFREG|0o644 {
		t.Fatalf("create: id %d status %d reply %q (%+v)", id, status, first, a)
	}
	s.send(ms.AppendStreamRequest(nil, 2, 0, ms.OpCreate, "t-1", create))
	if id, status, again := s.recv(); id != 2 || status != ms.StreamOK || string(again) != string(first) {
		t.Fatalf("retried create: id %d status %d reply %q, first %q", id, status, again, first)
	}

	// JSON arguments get a JSON reply; several frames in flight are
	// matched by id whatever order the replies come in.
	s.send(append(ms.AppendStreamRequest(nil, 3, 0, ms.OpLookup, "", []byte(`{"parent":1,"name":"f"}`)),
		ms.AppendStreamRequest(nil, 4, ms.StreamStale, ms.OpLookup, "", []byte(`{"parent":1,"name":"missing"}`))...))
	got := map[uint64][]byte{}
	statuses := map[uint64]byte{}
	for range 2 {
		id, status, body := s.recv()
		got[id], statuses[id] = body, status
	}
	var b ms.Attr
	if statuses[3] != ms.StreamOK || json.Unmarshal(got[3], &b) != nil || b != a {
		t.Fatalf("JSON lookup: status %d reply %q", statuses[3], got[3])
	}
	if we := s.wireError(got[4]); statuses[4] != ms.StreamError || we.Kind != ms.KindErrno || we.Errno != syscall.ENOENT {
		t.Fatalf("lookup of a missing name: status %d, %+v", statuses[4], we)
	}

	// Malformed requests are answered with "invalid", on the right id.
	truncated := ms.AppendStreamFrame(nil, 5, 0, []byte{200, 'x'})
	s.send(truncated)
	if id, status, body := s.recv(); id != 5 || status != ms.StreamError || s.wireError(body).Kind != ms.KindInvalid {
		t.Fatalf("truncated op: id %d status %d %q", id, status, body)
	}
	s.send(ms.AppendStreamRequest(nil, 6, 0, "nosuchop", "", nil))
	if id, status, body := s.recv(); id != 6 || status != ms.StreamError || s.wireError(body).Kind != ms.KindInvalid {
		t.Fatalf("unknown op: id %d status %d %q", id, status, body)
	}
	s.send(ms.AppendStreamRequest(nil, 7, 0, ms.OpLookup, "", []byte{ms.BinaryMagic, 1, 1}))
	if id, status, body := s.recv(); id != 7 || status != ms.StreamError || s.wireError(body).Kind != ms.KindInvalid {
		t.Fatalf("bad binary arguments: id %d status %d %q", id, status, body)
	}

	// A frame longer than any request ends the connection.
	s.send([]byte{0xff, 0xff, 0xff, 0xff, 0x7f})
	if _, err := s.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("after an oversized frame: %v, want EOF", err)
	}
}

func TestStreamNeedsUpgrade(t *testing.T) {
	n := startNode(t, testConfig(t, "s1", t.TempDir()))
	resp, err := http.Post("http://"+n.APIAddr()+ms.StreamPath, "application/octet-stream", strings.NewReader(""))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusUpgradeRequired || resp.Header.Get("Upgrade") != ms.StreamProtocol {
		t.Fatalf("plain POST to the stream path: %s, Upgrade %q", resp.Status, resp.Header.Get("Upgrade"))
	}
}

// The Go client takes the stream when the server has it, and gives the same
// answers over plain HTTP.
func TestClientOverStreamAndPlainHTTP(t *testing.T) {
	n := startNode(t, testConfig(t, "s1", t.TempDir()))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := n.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"stream", "plain"} {
		var opts []ms.ClientOption
		if mode == "plain" {
			opts = append(opts, ms.WithoutStream())
		}
		c, err := ms.NewClient([]string{n.APIAddr()}, opts...)
		if err != nil {
			t.Fatal(err)
		}
		dir, err := c.Create(ctx, ms.CreateIn{Parent: ms.RootIno, Name: mode, Mode: sIFDIR | 0o755, Exclusive: true})
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		f, err := c.Create(ctx, ms.CreateIn{Parent: dir.Ino, Name: "f", Mode: sIFREG | 0o600, Uid: 7,
			Xattrs: map[string][]byte{"user.k": []byte("v")}, Exclusive: true})
		if err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if l, err := c.Lookup(ctx, dir.Ino, "f"); err != nil || l != f {
			t.Fatalf("%s: lookup %+v, %v; created %+v", mode, l, err, f)
		}
		if v, err := c.GetXattr(ctx, f.Ino, "user.k"); err != nil || string(v) != "v" {
			t.Fatalf("%s: xattr %q, %v", mode, v, err)
		}
		if _, err := c.Create(ctx, ms.CreateIn{Parent: dir.Ino, Name: "f", Mode: sIFREG | 0o600, Exclusive: true}); !errors.Is(err, syscall.EEXIST) {
			t.Fatalf("%s: second exclusive create: %v", mode, err)
		}
		if err := c.Unlink(ctx, dir.Ino, "f"); err != nil {
			t.Fatalf("%s: %v", mode, err)
		}
		if _, err := c.GetAttr(ctx, f.Ino); !errors.Is(err, syscall.ENOENT) {
			t.Fatalf("%s: getattr after unlink: %v", mode, err)
		}
		want := 0.0
		if mode == "stream" {
			want = 1
		}
		if got := gauge(t, n.met.streams); got != want {
			t.Fatalf("%s: %v open streams, want %v", mode, got, want)
		}
		c.Close()
		waitFor(t, 5*time.Second, "the stream to close", func() bool { return gauge(t, n.met.streams) == 0 })
	}
}

// Closing a node ends its streams, so clients move on to another node.
func TestCloseEndsStreams(t *testing.T) {
	n := startNode(t, testConfig(t, "s1", t.TempDir()))
	s := dialRawStream(t, n.APIAddr())
	waitFor(t, 5*time.Second, "the stream to be counted", func() bool { return gauge(t, n.met.streams) == 1 })
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("stream of a closed node: %v, want EOF", err)
	}
}

func gauge(t *testing.T, g prometheus.Gauge) float64 {
	t.Helper()
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetGauge().GetValue()
}
