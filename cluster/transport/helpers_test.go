package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// testCA and testNode make identities; CA creation is cheap with P-256.
func testCA(t *testing.T) *CA {
	t.Helper()
	ca, err := NewCA("test-cluster")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func testNode(t *testing.T, ca *CA, name string) *Identity {
	t.Helper()
	id, err := NewIdentity(ca, name, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// logBuf collects log lines for assertions.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitLog polls until the log holds a line containing all of parts.
func (b *logBuf) waitLog(t *testing.T, parts ...string) {
	t.Helper()
	ok := waitFor(3*time.Second, func() bool {
		for _, line := range strings.Split(b.String(), "\n") {
			if containsAll(line, parts) {
				return true
			}
		}
		return false
	})
	if !ok {
		t.Fatalf("no log line with %q; log:\n%s", parts, b.String())
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testMux serves id on 127.0.0.1 with short timeouts, logging into the
// returned buffer.
func testMux(t *testing.T, id *Identity, opts Options) (*Mux, *logBuf) {
	t.Helper()
	lb := &logBuf{}
	opts.Log = slog.New(slog.NewTextHandler(lb, nil))
	if opts.HandshakeTimeout == 0 {
		opts.HandshakeTimeout = time.Second
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m, err := NewMux(ln, id, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, lb
}

// echo serves l, echoing every connection, and counts accepted ones.
type echo struct {
	mu       sync.Mutex
	accepted int
	peers    []string
}

func startEcho(t *testing.T, l net.Listener) *echo {
	e := &echo{}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.accepted++
			e.peers = append(e.peers, PeerName(c))
			e.mu.Unlock()
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return e
}

func (e *echo) count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.accepted
}

// roundTrip writes msg on c and expects it echoed back.
func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(got) != msg {
		t.Fatalf("echo %q, want %q", got, msg)
	}
}

// assertDialEcho checks that id can still use ProtoRPC on m: the server
// survived whatever the test did before.
func assertDialEcho(t *testing.T, m *Mux, id *Identity) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := Dial(ctx, m.Addr().String(), ProtoRPC, id)
	if err != nil {
		t.Fatalf("legitimate dial: %v", err)
	}
	defer c.Close()
	roundTrip(t, c, "still alive")
}

// assertDisconnected expects the server to close c within wait, without
// having sent application data: the read ends in an error that is not
// our own deadline.
func assertDisconnected(t *testing.T, c net.Conn, wait time.Duration) {
	t.Helper()
	_ = c.SetDeadline(time.Now().Add(wait))
	_, _ = c.Write([]byte("hello?"))
	n, err := io.Copy(io.Discard, c)
	if isTimeout(err) {
		t.Fatalf("still connected after %v", wait)
	}
	if n != 0 {
		t.Fatalf("server sent %d bytes of data", n)
	}
}

// tlsConnect makes a TLS connection to addr with cfg and sends proto.
func tlsConnect(t *testing.T, addr string, cfg *tls.Config, proto byte) net.Conn {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	tc, err := clientHandshake(ctx, raw, cfg, proto)
	if err != nil {
		// TLS 1.3 reports a refused client certificate only after the
		// client's side of the handshake; either way is a refusal.
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("handshake timed out: %v", err)
		}
		return closedConn{}
	}
	return tc
}

// closedConn stands for a connection the handshake already refused.
type closedConn struct{ net.Conn }

func (closedConn) Write([]byte) (int, error)   { return 0, net.ErrClosed }
func (closedConn) Read([]byte) (int, error)    { return 0, io.EOF }
func (closedConn) SetDeadline(time.Time) error { return nil }
func (closedConn) Close() error                { return nil }
