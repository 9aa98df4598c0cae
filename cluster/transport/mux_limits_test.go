package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// The tests tell members from strangers by their loopback address: the
// Mux listens on 127.0.0.1, members dial from 127.0.0.1, strangers from
// 127.0.0.2 and up (Linux routes all of 127/8 to lo).
var memberAddr = netip.MustParseAddr("127.0.0.1")

func onlyMember(a netip.Addr) bool { return a == memberAddr }

// dialFrom opens a raw TCP connection to m from source address src,
// which says nothing: a client in its handshake for as long as the
// server lets it.
func dialFrom(t *testing.T, m *Mux, src string) net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", m.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// refusedAtOnce dials m from src and reports whether the server closed
// the connection at once: it may do so before the dial even returns.
func refusedAtOnce(t *testing.T, m *Mux, src string) bool {
	t.Helper()
	d := net.Dialer{Timeout: 3 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
	c, err := d.Dial("tcp", m.Addr().String())
	if errors.Is(err, syscall.ECONNRESET) {
		return true
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return closedWithin(c, 3*time.Second)
}

// closedWithin reports whether the server closed c within d (the read
// ends in EOF or a reset, not our deadline).
func closedWithin(c net.Conn, d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.Read(make([]byte, 1))
	return err != nil && !isTimeout(err)
}

// slots is what m counts now: strangers' slots in all and from src, and
// src's member slots.
func slots(m *Mux, src string) (strangers, fromSrc, member int) {
	a := netip.MustParseAddr(src)
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.strangers, m.bySource[sourceKey(a)], len(m.byMember[a])
}

// waitSlots waits until m counts want (slots) for src.
func waitSlots(t *testing.T, m *Mux, src string, want [3]int) {
	t.Helper()
	var got [3]int
	if !waitFor(3*time.Second, func() bool {
		got[0], got[1], got[2] = slots(m, src)
		return got == want
	}) {
		t.Fatalf("slots for %s (strangers, from it, member): %v, want %v", src, got, want)
	}
}

// Strangers past the per-source or the global limit are closed at once,
// not queued; those within wait for their (short) deadline; a member
// completes its handshake all the while.
func TestStrangersBeyondTheLimitsAreClosed(t *testing.T) {
	ca := testCA(t)
	a, b := testNode(t, ca, "a"), testNode(t, ca, "b")
	m, logs := testMux(t, a, Options{IsMember: onlyMember, MaxPerSource: 2, MaxHandshakes: 3,
		HandshakeTimeout: 20 * time.Second, StrangerTimeout: 10 * time.Second})
	startEcho(t, m.Listener(ProtoRPC))

	held := []net.Conn{dialFrom(t, m, "127.0.0.2"), dialFrom(t, m, "127.0.0.2")}
	waitSlots(t, m, "127.0.0.2", [3]int{2, 2, 0})
	if !refusedAtOnce(t, m, "127.0.0.2") {
		t.Fatal("a third stranger from one source was not closed")
	}
	logs.waitLog(t, "refused: too many handshakes from its source")
	held = append(held, dialFrom(t, m, "127.0.0.3"))
	waitSlots(t, m, "127.0.0.3", [3]int{3, 1, 0})
	if !refusedAtOnce(t, m, "127.0.0.4") {
		t.Fatal("a stranger past the global limit was not closed")
	}
	logs.waitLog(t, "refused: too many handshakes from strangers")

	// The strangers' slots are all taken: a member gets through at once.
	start := time.Now()
	assertDialEcho(t, m, b)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("a member waited %v behind strangers", d)
	}
	for _, c := range held {
		if closedWithin(c, 10*time.Millisecond) {
			t.Fatal("a stranger within the limits was closed before its deadline")
		}
	}
	// A slot given back is a slot for the next stranger.
	held[0].Close()
	waitSlots(t, m, "127.0.0.2", [3]int{2, 1, 0})
	dialFrom(t, m, "127.0.0.4")
	waitSlots(t, m, "127.0.0.4", [3]int{3, 1, 0})
}

// A stranger's handshake has the short deadline; a member's the long
// one. A stranger that never speaks delays no member.
func TestStrangersHaveTheShortDeadline(t *testing.T) {
	ca := testCA(t)
	a, b := testNode(t, ca, "a"), testNode(t, ca, "b")
	m, logs := testMux(t, a, Options{IsMember: onlyMember, HandshakeTimeout: 20 * time.Second,
		StrangerTimeout: 300 * time.Millisecond})
	startEcho(t, m.Listener(ProtoRPC))
	silentMember := dialFrom(t, m, "127.0.0.1")
	silent := dialFrom(t, m, "127.0.0.2")
	start := time.Now()
	assertDialEcho(t, m, b)
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("a silent stranger delayed a member by %v", d)
	}
	if !closedWithin(silent, 3*time.Second) {
		t.Fatal("a silent stranger outlived its deadline")
	}
	logs.waitLog(t, "refused: tls handshake", "timeout")
	if closedWithin(silentMember, 10*time.Millisecond) {
		t.Fatal("a member's connection got the strangers' deadline")
	}
}

// A member address's slots are its own, and a newcomer past them takes
// the place of the oldest: connections held open doing nothing, from
// the member's machine, cannot keep the member out.
func TestMemberHandshakesTakeTheOldestPlace(t *testing.T) {
	ca := testCA(t)
	a, b := testNode(t, ca, "a"), testNode(t, ca, "b")
	m, logs := testMux(t, a, Options{IsMember: onlyMember, MemberHandshakes: 2, MaxHandshakes: 1,
		HandshakeTimeout: 20 * time.Second})
	startEcho(t, m.Listener(ProtoRPC))
	dialFrom(t, m, "127.0.0.2") // the strangers' only slot
	oldest := dialFrom(t, m, "127.0.0.1")
	waitSlots(t, m, "127.0.0.1", [3]int{1, 0, 1})
	second := dialFrom(t, m, "127.0.0.1")
	waitSlots(t, m, "127.0.0.1", [3]int{1, 0, 2})
	third := dialFrom(t, m, "127.0.0.1")
	if !closedWithin(oldest, 3*time.Second) {
		t.Fatal("the oldest member handshake kept its place")
	}
	logs.waitLog(t, "dropped: a newer handshake from the same member address")
	assertDialEcho(t, m, b)
	if !closedWithin(second, 3*time.Second) {
		t.Fatal("the member's dial did not take the oldest place")
	}
	if closedWithin(third, 10*time.Millisecond) {
		t.Fatal("a newer member handshake lost its place")
	}
}

// Without IsMember, loopback is this machine, a member: every other
// source is a stranger.
func TestLoopbackIsAMemberByDefault(t *testing.T) {
	m, _ := testMux(t, testNode(t, testCA(t), "a"), Options{HandshakeTimeout: 20 * time.Second})
	dialFrom(t, m, "127.0.0.5")
	waitSlots(t, m, "127.0.0.5", [3]int{0, 0, 1})
	if got := sourceKey(netip.MustParseAddr("2001:db8:1:2:3:4:5:6")); got != netip.MustParseAddr("2001:db8:1:2::") {
		t.Fatalf("an IPv6 source counts as %v, want its /64", got)
	}
}

// Drop closes every authenticated connection whose certificate matches,
// whoever holds it, and leaves the others; a connection whose handshake
// was under way is closed when it ends; closed connections are forgotten.
func TestDrop(t *testing.T) {
	ca := testCA(t)
	a, b, c := testNode(t, ca, "a"), testNode(t, ca, "b"), testNode(t, ca, "c")
	m, logs := testMux(t, a, Options{})
	e := startEcho(t, m.Listener(ProtoRPC))
	dial := func(id *Identity) net.Conn {
		conn, err := DialTimeout(m.Addr().String(), ProtoRPC, id, 3*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		roundTrip(t, conn, "hello from "+id.Name())
		return conn
	}
	b1, b2, c1 := dial(b), dial(b), dial(c)
	late := handshakeOnly(t, m, b)
	isB := func(leaf *x509.Certificate) bool { return leaf.Subject.CommonName == "b" }
	if n := m.Drop(isB); n != 2 {
		t.Fatalf("Drop closed %d connections, want b's 2", n)
	}
	for _, conn := range []net.Conn{b1, b2} {
		assertDisconnected(t, conn, 3*time.Second)
	}
	roundTrip(t, c1, "c goes on")
	accepted := e.count()
	if _, err := late.Write([]byte{ProtoRPC}); err != nil {
		t.Fatal(err)
	}
	assertDisconnected(t, late, 3*time.Second)
	logs.waitLog(t, "dropped: its certificate was dropped during its handshake")
	if got := e.count(); got != accepted {
		t.Fatalf("a connection of b was handed on after the Drop (%d accepted, %d before)", got, accepted)
	}
	// b is not shut out for ever: that is the handshake's business.
	b3 := dial(b)
	if n := m.Drop(func(*x509.Certificate) bool { return false }); n != 0 {
		t.Fatalf("a Drop matching nothing closed %d", n)
	}
	for _, conn := range []net.Conn{c1, b3} {
		conn.Close()
	}
	if !waitFor(3*time.Second, func() bool {
		m.mu.Lock()
		defer m.mu.Unlock()
		return len(m.conns) == 0 && len(m.drops) == 0
	}) {
		m.mu.Lock()
		defer m.mu.Unlock()
		t.Fatalf("the Mux still holds %d connections and %d drops after every one closed", len(m.conns), len(m.drops))
	}
}

// handshakeOnly is id's connection to m with its TLS session up, but
// without the protocol byte: the Mux has it in its handshake still.
func handshakeOnly(t *testing.T, m *Mux, id *Identity) *tls.Conn {
	t.Helper()
	raw, err := net.DialTimeout("tcp", m.Addr().String(), 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	tc := tls.Client(raw, clientConfig(id))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	return tc
}

// Drop reaches a connection that its acceptor is using: the acceptor's
// read fails at once.
func TestDropEndsTheAcceptorsRead(t *testing.T) {
	ca := testCA(t)
	a, b := testNode(t, ca, "a"), testNode(t, ca, "b")
	m, _ := testMux(t, a, Options{})
	l := m.Listener(ProtoMigrate)
	got := make(chan error, 1)
	accepted := make(chan struct{})
	go func() {
		conn, err := l.Accept()
		close(accepted)
		if err != nil {
			got <- err
			return
		}
		defer conn.Close()
		_, err = io.ReadAll(conn)
		got <- fmt.Errorf("read ended: %w", err)
	}()
	conn, err := DialTimeout(m.Addr().String(), ProtoMigrate, b, 3*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	select {
	case <-accepted:
	case <-time.After(3 * time.Second):
		t.Fatal("b's connection was not accepted")
	}
	if n := m.Drop(func(leaf *x509.Certificate) bool { return leaf.Subject.CommonName == "b" }); n != 1 {
		t.Fatalf("Drop closed %d connections, want b's", n)
	}
	select {
	case err := <-got:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("the acceptor's read: %v, want its connection closed", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the acceptor's read goes on after the Drop")
	}
}
