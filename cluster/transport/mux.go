package transport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// Defaults of Options.
const (
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultMaxHandshakes    = 64
	DefaultHandoffTimeout   = 5 * time.Second
)

// Options tunes a Mux; the zero value is usable.
type Options struct {
	// Log receives one line per refused connection, rate limited; nil
	// discards.
	Log *slog.Logger
	// HandshakeTimeout bounds the TLS handshake and the protocol byte
	// together (DefaultHandshakeTimeout if zero).
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the connections in handshake at once; more
	// wait in the kernel's backlog (DefaultMaxHandshakes if zero).
	MaxHandshakes int
	// HandoffTimeout is how long an authenticated connection waits for
	// the Accept of its protocol's listener before it is dropped
	// (DefaultHandoffTimeout if zero).
	HandoffTimeout time.Duration
	// Advertise, if set, is the host:port the protocol listeners report
	// as Addr, for a mux bound to a wildcard address: Raft takes its own
	// address from its stream layer.
	Advertise string
	// Join serves ProtoJoin; nil refuses every newcomer.
	Join *JoinHandler
}

// Mux serves every protocol on one listener: it runs the TLS handshakes,
// reads each connection's protocol byte, refuses what is not allowed and
// hands the rest to per-protocol listeners. It is safe for concurrent
// use.
type Mux struct {
	ln    net.Listener
	id    *Identity
	tls   *tls.Config
	opts  Options
	log   *limitedLog
	addr  net.Addr
	slots chan struct{} // one token per handshake in progress
	done  chan struct{} // closed by Close

	mu        sync.Mutex // protects the fields below
	listeners map[byte]*protoListener
	pending   map[net.Conn]struct{} // connections not yet handed off
	closed    bool

	wg sync.WaitGroup // accept loop and connection goroutines
}

// Listen listens on addr (host:port) and serves it with NewMux.
func Listen(addr string, id *Identity, opts Options) (*Mux, error) {
	if err := id.Check(); err != nil {
		return nil, fmt.Errorf("mux: %w", err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("mux listen %s: %w", addr, err)
	}
	return NewMux(ln, id, opts)
}

// NewMux serves ln with identity id until Close; the Mux owns ln.
func NewMux(ln net.Listener, id *Identity, opts Options) (*Mux, error) {
	if err := id.Check(); err != nil {
		ln.Close()
		return nil, fmt.Errorf("mux: %w", err)
	}
	opts = withDefaults(opts)
	addr := ln.Addr()
	if opts.Advertise != "" {
		a, err := net.ResolveTCPAddr("tcp", opts.Advertise)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("mux advertise %q: %w", opts.Advertise, err)
		}
		addr = a
	}
	m := &Mux{
		ln: ln, id: id, tls: serverConfig(id), opts: opts, addr: addr,
		log:       newLimitedLog(opts.Log),
		slots:     make(chan struct{}, opts.MaxHandshakes),
		done:      make(chan struct{}),
		listeners: map[byte]*protoListener{},
		pending:   map[net.Conn]struct{}{},
	}
	m.wg.Add(1)
	go m.serve()
	return m, nil
}

func withDefaults(o Options) Options {
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.MaxHandshakes <= 0 {
		o.MaxHandshakes = DefaultMaxHandshakes
	}
	if o.HandoffTimeout <= 0 {
		o.HandoffTimeout = DefaultHandoffTimeout
	}
	return o
}

// Addr is the address the Mux listens on, or Options.Advertise.
func (m *Mux) Addr() net.Addr { return m.addr }

// Identity is the identity the Mux serves with.
func (m *Mux) Identity() *Identity { return m.id }

// Close stops accepting, closes every protocol listener and every
// connection still in handshake, and waits for them. Connections already
// accepted through a protocol listener belong to their acceptor and stay
// open.
func (m *Mux) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.done)
	for _, l := range m.listeners {
		l.close()
	}
	for c := range m.pending {
		c.Close()
	}
	m.mu.Unlock()
	err := m.ln.Close()
	m.wg.Wait()
	return err
}

// serve accepts until the listener closes. A slot is taken before each
// Accept so that at most MaxHandshakes connections are in handshake.
func (m *Mux) serve() {
	defer m.wg.Done()
	var backoff time.Duration
	for {
		select {
		case m.slots <- struct{}{}:
		case <-m.done:
			return
		}
		c, err := m.ln.Accept()
		if err != nil {
			<-m.slots
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors and the like: wait, as net/http
			// does, rather than spin or give up the port.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			m.log.refuse("mux accept", "err", err, "retry", backoff)
			select {
			case <-time.After(backoff):
			case <-m.done:
				return
			}
			continue
		}
		backoff = 0
		if !m.track(c) {
			<-m.slots
			c.Close()
			return
		}
		m.wg.Add(1)
		go m.handle(c)
	}
}

// track records c as pending, so that Close can abort its handshake;
// false if the Mux is closed.
func (m *Mux) track(c net.Conn) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return false
	}
	m.pending[c] = struct{}{}
	return true
}

func (m *Mux) untrack(c net.Conn) {
	m.mu.Lock()
	delete(m.pending, c)
	m.mu.Unlock()
}

// handle runs one connection's handshake and dispatches it.
func (m *Mux) handle(c net.Conn) {
	defer m.wg.Done()
	defer m.untrack(c)
	slot := true
	release := func() {
		if slot {
			slot = false
			<-m.slots
		}
	}
	defer release()

	remote := c.RemoteAddr().String()
	tc, proto, err := m.handshake(c)
	if err != nil {
		m.log.refuse("refused: "+err.Error(), "remote", remote)
		c.Close()
		return
	}
	if proto == ProtoJoin {
		// Joins run unauthenticated work, so they keep their slot.
		m.serveJoin(tc, remote)
		tc.Close()
		return
	}
	release()
	if len(tc.ConnectionState().VerifiedChains) == 0 {
		m.log.refuse("refused: no cluster certificate", "remote", remote, "proto", protoName(proto))
		tc.Close()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	m.untrack(c)
	m.handoff(tc, proto, remote)
}

// handshake runs the TLS handshake and reads the protocol byte, both
// under one deadline. Errors are log messages: they never reach a peer.
func (m *Mux) handshake(c net.Conn) (*tls.Conn, byte, error) {
	_ = c.SetDeadline(time.Now().Add(m.opts.HandshakeTimeout))
	tc := tls.Server(c, m.tls)
	if err := tc.Handshake(); err != nil {
		return nil, 0, fmt.Errorf("tls handshake: %w", err)
	}
	var b [1]byte
	if _, err := io.ReadFull(tc, b[:]); err != nil {
		return nil, 0, fmt.Errorf("no protocol byte: %w", err)
	}
	if !knownProto(b[0]) {
		return nil, 0, fmt.Errorf("unknown protocol byte %#02x", b[0])
	}
	return tc, b[0], nil
}

// handoff passes an authenticated connection to its protocol listener,
// waiting at most HandoffTimeout for an Accept.
func (m *Mux) handoff(tc *tls.Conn, proto byte, remote string) {
	m.mu.Lock()
	l := m.listeners[proto]
	m.mu.Unlock()
	if l == nil {
		m.log.refuse("refused: protocol not served", "remote", remote, "proto", protoName(proto))
		tc.Close()
		return
	}
	t := time.NewTimer(m.opts.HandoffTimeout)
	defer t.Stop()
	select {
	case l.conns <- tc:
	case <-l.done:
		tc.Close()
	case <-t.C:
		m.log.refuse("dropped: protocol listener not accepting", "remote", remote, "proto", protoName(proto))
		tc.Close()
	}
}
