package transport

import (
	"errors"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

var dataProtos = []byte{ProtoRaft, ProtoRPC, ProtoMigrate}

func TestDialEcho(t *testing.T) {
	ca := testCA(t)
	a, b := testNode(t, ca, "a"), testNode(t, ca, "b")
	m, _ := testMux(t, a, Options{})
	e := startEcho(t, m.Listener(ProtoRPC))

	c, err := DialTimeout(m.Addr().String(), ProtoRPC, b, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "ping from b")
	roundTrip(t, c, "and again")
	if got := PeerName(c); got != "a" {
		t.Errorf("dialer sees peer %q, want a", got)
	}
	e.mu.Lock()
	peers := e.peers
	e.mu.Unlock()
	if len(peers) != 1 || peers[0] != "b" {
		t.Errorf("server saw peers %q, want [b]", peers)
	}
}

func TestStreamLayerRaft(t *testing.T) {
	ca := testCA(t)
	a, b := testNode(t, ca, "a"), testNode(t, ca, "b")
	ma, _ := testMux(t, a, Options{})
	mb, _ := testMux(t, b, Options{})
	la, lb := ma.StreamLayer(ProtoRaft), mb.StreamLayer(ProtoRaft)
	if la.Addr().String() != ma.Addr().String() {
		t.Errorf("stream layer addr %v, mux %v", la.Addr(), ma.Addr())
	}
	startEcho(t, lb)

	c, err := la.Dial(lb.Addr().String(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "append entries")

	// The RPC protocol of b has no listener: a raft stream is not
	// delivered to another protocol.
	c2, err := DialTimeout(mb.Addr().String(), ProtoRPC, a, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	assertDisconnected(t, c2, 3*time.Second)
}

func TestAdvertise(t *testing.T) {
	id := testNode(t, testCA(t), "a")
	m, _ := testMux(t, id, Options{Advertise: "10.1.2.3:7700"})
	if got := m.StreamLayer(ProtoRaft).Addr().String(); got != "10.1.2.3:7700" {
		t.Fatalf("addr %s, want the advertised one", got)
	}
}

func TestRefusedWithoutCertificate(t *testing.T) {
	ca := testCA(t)
	a, b := testNode(t, ca, "a"), testNode(t, ca, "b")
	m, logs := testMux(t, a, Options{})
	echoes := map[byte]*echo{}
	for _, p := range dataProtos {
		echoes[p] = startEcho(t, m.Listener(p))
	}
	for _, p := range dataProtos {
		c := tlsConnect(t, m.Addr().String(), joinClientConfig(), p)
		local := c.LocalAddr().String()
		assertDisconnected(t, c, 3*time.Second)
		logs.waitLog(t, "refused: no cluster certificate", local, protoName(p))
	}
	for p, e := range echoes {
		if n := e.count(); n != 0 {
			t.Errorf("protocol %c delivered %d unauthenticated connections", p, n)
		}
	}
	assertDialEcho(t, m, b)
}

func TestRefusedOtherCA(t *testing.T) {
	ca := testCA(t)
	a, b := testNode(t, ca, "a"), testNode(t, ca, "b")
	stranger := testNode(t, testCA(t), "stranger")
	m, logs := testMux(t, a, Options{Join: &JoinHandler{Tokens: func() []string { return nil }}})
	echoes := map[byte]*echo{}
	for _, p := range dataProtos {
		echoes[p] = startEcho(t, m.Listener(p))
	}
	// The stranger checks the server against its own CA, so it is
	// refused by both sides; pretend it trusts anyone to test the server.
	cfg := clientConfig(stranger)
	cfg.VerifyConnection = nil
	for _, p := range append(dataProtos, ProtoJoin) {
		c := tlsConnect(t, m.Addr().String(), cfg, p)
		assertDisconnected(t, c, 3*time.Second)
	}
	logs.waitLog(t, "refused: tls handshake", "unknown authority")
	for p, e := range echoes {
		if n := e.count(); n != 0 {
			t.Errorf("protocol %c delivered %d foreign connections", p, n)
		}
	}
	assertDialEcho(t, m, b)
}

func TestDialerRefusesForeignServer(t *testing.T) {
	b := testNode(t, testCA(t), "b")
	impostor := testNode(t, testCA(t), "a")
	m, _ := testMux(t, impostor, Options{})
	e := startEcho(t, m.Listener(ProtoRPC))
	_, err := DialTimeout(m.Addr().String(), ProtoRPC, b, 3*time.Second)
	if !errors.Is(err, ErrUntrusted) {
		t.Fatalf("dial foreign server: %v, want ErrUntrusted", err)
	}
	if e.count() != 0 {
		t.Fatal("the foreign server got a connection through")
	}
}

func TestGarbage(t *testing.T) {
	ca := testCA(t)
	a, b := testNode(t, ca, "a"), testNode(t, ca, "b")
	join := &JoinHandler{Tokens: func() []string { return nil }}
	m, logs := testMux(t, a, Options{HandshakeTimeout: 500 * time.Millisecond, Join: join})
	for _, p := range dataProtos {
		startEcho(t, m.Listener(p))
	}
	rng := rand.New(rand.NewPCG(1, 2))
	junk := func() []byte {
		b := make([]byte, 2048)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	// Raw TCP, starting with each protocol byte or nothing special.
	for _, first := range []byte{ProtoRaft, ProtoRPC, ProtoMigrate, ProtoJoin, 0x16, 0} {
		c, err := net.Dial("tcp", m.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_, _ = c.Write(append([]byte{first}, junk()...))
		assertDisconnected(t, c, 3*time.Second)
		c.Close()
		assertDialEcho(t, m, b)
	}
	logs.waitLog(t, "refused: tls handshake")
	// Inside TLS without a certificate: protocol byte, then junk.
	for _, p := range append(dataProtos, ProtoJoin) {
		c := tlsConnect(t, m.Addr().String(), joinClientConfig(), p)
		_, _ = c.Write(junk())
		assertDisconnected(t, c, 3*time.Second)
		assertDialEcho(t, m, b)
	}
	logs.waitLog(t, "refused join")
}

func TestUnknownProtocol(t *testing.T) {
	ca := testCA(t)
	a, b := testNode(t, ca, "a"), testNode(t, ca, "b")
	m, logs := testMux(t, a, Options{})
	startEcho(t, m.Listener(ProtoRPC))
	c := tlsConnect(t, m.Addr().String(), clientConfig(b), 'Z')
	assertDisconnected(t, c, 3*time.Second)
	logs.waitLog(t, "unknown protocol byte 0x5a")
	assertDialEcho(t, m, b)
	if _, err := DialTimeout(m.Addr().String(), 'Z', b, time.Second); err == nil {
		t.Fatal("Dial accepted an unknown protocol")
	}
}

// A client that never speaks holds its handshake slot only until the
// deadline and never delays other clients' handshakes. (The slots and
// their limits: mux_limits_test.go.)
func TestSilentClients(t *testing.T) {
	ca := testCA(t)
	a, b := testNode(t, ca, "a"), testNode(t, ca, "b")
	m, logs := testMux(t, a, Options{HandshakeTimeout: 300 * time.Millisecond})
	startEcho(t, m.Listener(ProtoRPC))

	silent, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	start := time.Now()
	assertDialEcho(t, m, b)
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("a silent client delayed a legitimate one by %v", d)
	}
	_ = silent.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := silent.Read(make([]byte, 1)); isTimeout(err) {
		t.Fatal("silent client not disconnected")
	}
	logs.waitLog(t, "refused: tls handshake", "timeout")
}

func TestMuxClose(t *testing.T) {
	ca := testCA(t)
	a, b := testNode(t, ca, "a"), testNode(t, ca, "b")
	m, _ := testMux(t, a, Options{})
	l := m.Listener(ProtoRPC)
	silent, err := net.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	done := make(chan error, 1)
	go func() { _, err := l.Accept(); done <- err }()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("accept after close: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("accept still blocked after close")
	}
	if _, err := DialTimeout(m.Addr().String(), ProtoRPC, b, time.Second); err == nil {
		t.Fatal("dial succeeded after close")
	}
	if _, err := m.Listener(ProtoRaft).Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("listener of a closed mux: %v", err)
	}
}

func TestListenerJoinPanics(t *testing.T) {
	m, _ := testMux(t, testNode(t, testCA(t), "a"), Options{})
	defer func() {
		if recover() == nil {
			t.Fatal("Listener(ProtoJoin) did not panic")
		}
	}()
	m.Listener(ProtoJoin)
}
