package transport

import (
	"fmt"
	"net"
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
