package transport

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"
)

// protoListener is the listener of one protocol on a Mux. Its Accept
// returns *tls.Conn whose protocol byte was consumed and whose peer holds
// a cluster certificate.
type protoListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

// Listener returns the listener of proto (ProtoRaft, ProtoRPC,
// ProtoMigrate, ...), creating it on first use; until then connections
// of that protocol are refused. Closing it stops that protocol only; a
// later call makes a new one. ProtoJoin has no listener (Options.Join
// serves it): asking for it, or for an unknown byte, is a programming
// error and panics.
func (m *Mux) Listener(proto byte) net.Listener {
	if proto == ProtoJoin || !knownProto(proto) {
		panic(fmt.Sprintf("transport: no listener for protocol %#02x", proto))
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if l := m.listeners[proto]; l != nil && !l.isClosed() {
		return l
	}
	l := &protoListener{addr: m.addr, conns: make(chan net.Conn), done: make(chan struct{})}
	if m.closed {
		l.close()
	}
	m.listeners[proto] = l
	return l
}

// Accept waits for the next connection of the protocol.
func (l *protoListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, fmt.Errorf("accept: %w", net.ErrClosed)
	}
}

// Close stops this protocol's listener; the Mux keeps serving others.
func (l *protoListener) Close() error {
	l.close()
	return nil
}

// Addr is the Mux's address (or its advertised address).
func (l *protoListener) Addr() net.Addr { return l.addr }

func (l *protoListener) close() { l.once.Do(func() { close(l.done) }) }

func (l *protoListener) isClosed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

// StreamLayer is one protocol of a Mux as a listener plus a dialer of
// the same protocol on other nodes: the shape of hashicorp/raft's
// StreamLayer, whose Dial takes a raft.ServerAddress (a string type), so
// the Raft layer wraps it in a one-line adapter.
type StreamLayer struct {
	net.Listener
	id    *Identity
	proto byte
}

// StreamLayer returns proto's listener (see Listener) together with a
// dialer of proto.
func (m *Mux) StreamLayer(proto byte) *StreamLayer {
	return &StreamLayer{Listener: m.Listener(proto), id: m.id, proto: proto}
}

// Dial connects to the same protocol on the node at address (host:port).
func (s *StreamLayer) Dial(address string, timeout time.Duration) (net.Conn, error) {
	return DialTimeout(address, s.proto, s.id, timeout)
}

// muxConn is a connection from its accept until it is closed, whoever
// owns it then: the Mux counts its handshake slot, and once it is
// authenticated, keeps its peer's certificate for Drop. It is the
// transport under the *tls.Conn that a protocol listener returns, so
// that closing that (or a Drop) is seen here.
type muxConn struct {
	net.Conn
	m      *Mux
	src    netip.Addr // its source address
	member bool       // from a member's address (Options.IsMember)
	gen    uint64     // Drop calls before its accept
	once   sync.Once

	// Protected by m.mu.
	slot bool              // holds a handshake slot
	leaf *x509.Certificate // the peer's, once authenticated
}

// Close forgets c and closes it.
func (c *muxConn) Close() error {
	c.forget()
	return c.Conn.Close()
}

// forget takes c out of the Mux's books, once; true if this call did.
func (c *muxConn) forget() bool {
	did := false
	c.once.Do(func() {
		did = true
		c.m.mu.Lock()
		defer c.m.mu.Unlock()
		c.m.releaseLocked(c)
		delete(c.m.conns, c)
	})
	return did
}

// dropRecord is one Drop call, kept while a connection accepted before it
// may still be in its handshake: Drop could not see that one's
// certificate yet.
type dropRecord struct {
	gen   uint64
	match func(*x509.Certificate) bool
}

// Drop closes every connection that the Mux authenticated and whose
// peer's leaf certificate matches, whoever holds it now, and returns how
// many it closed: a node whose certificate was revoked loses the
// connections it made before (the handshake refuses new ones, see
// Identity). A connection still in its handshake is checked when the
// handshake ends, and closed then if it matches (not counted). match is
// called without the Mux's locks, from Drop and from the goroutines of
// such handshakes, so it must be safe for concurrent use; it is kept
// only while a handshake begun before this Drop may still end.
func (m *Mux) Drop(match func(leaf *x509.Certificate) bool) int {
	type authed struct {
		c    *muxConn
		leaf *x509.Certificate
	}
	var cands []authed
	m.mu.Lock()
	m.dropGen++
	m.drops = append(m.drops, dropRecord{gen: m.dropGen, match: match})
	for c := range m.conns {
		if c.leaf != nil {
			cands = append(cands, authed{c, c.leaf})
		}
	}
	m.pruneDropsLocked()
	m.mu.Unlock()
	n := 0
	for _, a := range cands {
		if match(a.leaf) && a.c.forget() {
			a.c.Conn.Close()
			n++
		}
	}
	return n
}

// authenticated records c's peer certificate, for Drop, unless a Drop
// called since c's accept matches it: false then, and c must be closed.
func (m *Mux) authenticated(c *muxConn, leaf *x509.Certificate) bool {
	var late []func(*x509.Certificate) bool
	m.mu.Lock()
	c.leaf = leaf // from here on a Drop sees c
	for _, d := range m.drops {
		if d.gen > c.gen {
			late = append(late, d.match)
		}
	}
	m.pruneDropsLocked()
	m.mu.Unlock()
	for _, match := range late {
		if match(leaf) {
			return false
		}
	}
	return true
}

// pruneDropsLocked forgets the Drop calls that no connection still in
// its handshake was accepted before; m.mu is held.
func (m *Mux) pruneDropsLocked() {
	if len(m.drops) == 0 {
		return
	}
	oldest := m.dropGen
	for c := range m.conns {
		if c.leaf == nil {
			oldest = min(oldest, c.gen)
		}
	}
	keep := m.drops[:0]
	for _, d := range m.drops {
		if d.gen > oldest {
			keep = append(keep, d)
		}
	}
	clear(m.drops[len(keep):])
	m.drops = keep
}
