package transport

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// Defaults of Options.
const (
	DefaultHandshakeTimeout = 5 * time.Second
	DefaultStrangerTimeout  = 2 * time.Second
	DefaultMaxHandshakes    = 64
	DefaultMaxPerSource     = 4
	DefaultMemberHandshakes = 64
	DefaultHandoffTimeout   = 5 * time.Second
)

// Options tunes a Mux; the zero value is usable.
//
// Until its TLS handshake and protocol byte are through, a connection
// holds a handshake slot. A connection from a member's address (IsMember)
// takes one of that address's own slots, which nobody else can take: a
// newcomer past MemberHandshakes takes the place of that address's
// oldest handshake, so that connections held open doing nothing cannot
// keep the member out. Any other connection is a stranger's: it takes a
// slot only while fewer than MaxPerSource handshakes run from its source
// and fewer than MaxHandshakes from strangers in all, and is closed at
// once otherwise, never queued; its handshake has the shorter
// StrangerTimeout. However many strangers connect, members' connections
// are neither delayed nor refused for them.
type Options struct {
	// Log receives one line per refused connection, rate limited; nil
	// discards.
	Log *slog.Logger
	// IsMember reports whether a connection's source address is a known
	// member's. It is called once per accepted connection, before any
	// byte is read, so it must be quick and safe for concurrent use. Nil
	// counts loopback addresses only (this machine).
	IsMember func(addr netip.Addr) bool
	// HandshakeTimeout bounds the TLS handshake and the protocol byte
	// together of a member's connection (DefaultHandshakeTimeout if
	// zero).
	HandshakeTimeout time.Duration
	// StrangerTimeout bounds them for a stranger's connection
	// (DefaultStrangerTimeout if zero; never more than HandshakeTimeout).
	StrangerTimeout time.Duration
	// MaxHandshakes bounds the strangers' connections in handshake at
	// once, all sources together (DefaultMaxHandshakes if zero).
	MaxHandshakes int
	// MaxPerSource bounds the strangers' connections in handshake at once
	// from one source: an IPv4 address or an IPv6 /64
	// (DefaultMaxPerSource if zero).
	MaxPerSource int
	// MemberHandshakes bounds the connections in handshake at once from
	// one member address (DefaultMemberHandshakes if zero).
	MemberHandshakes int
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
	ln   net.Listener
	id   *Identity
	tls  *tls.Config
	opts Options
	log  *limitedLog
	addr net.Addr
	done chan struct{} // closed by Close

	mu        sync.Mutex // protects the fields below and every muxConn's slot and leaf
	listeners map[byte]*protoListener
	conns     map[*muxConn]struct{}     // from accept until closed, whoever owns them then
	strangers int                       // strangers' handshake slots taken
	bySource  map[netip.Addr]int        // strangers' slots taken, by sourceKey
	byMember  map[netip.Addr][]*muxConn // members' connections holding a slot, oldest first
	dropGen   uint64                    // Drop calls so far
	drops     []dropRecord              // the latest ones, for connections still in handshake then
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
		done:      make(chan struct{}),
		listeners: map[byte]*protoListener{},
		conns:     map[*muxConn]struct{}{},
		bySource:  map[netip.Addr]int{},
		byMember:  map[netip.Addr][]*muxConn{},
	}
	m.wg.Add(1)
	go m.serve()
	return m, nil
}

func withDefaults(o Options) Options {
	if o.HandshakeTimeout <= 0 {
		o.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if o.StrangerTimeout <= 0 {
		o.StrangerTimeout = DefaultStrangerTimeout
	}
	o.StrangerTimeout = min(o.StrangerTimeout, o.HandshakeTimeout)
	if o.MaxHandshakes <= 0 {
		o.MaxHandshakes = DefaultMaxHandshakes
	}
	if o.MaxPerSource <= 0 {
		o.MaxPerSource = DefaultMaxPerSource
	}
	if o.MemberHandshakes <= 0 {
		o.MemberHandshakes = DefaultMemberHandshakes
	}
	if o.HandoffTimeout <= 0 {
		o.HandoffTimeout = DefaultHandoffTimeout
	}
	if o.IsMember == nil {
		o.IsMember = netip.Addr.IsLoopback
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
	var pending []*muxConn
	for c := range m.conns {
		if c.leaf == nil {
			pending = append(pending, c)
		}
	}
	m.mu.Unlock()
	for _, c := range pending {
		c.Close()
	}
	err := m.ln.Close()
	m.wg.Wait()
	return err
}

// serve accepts until the listener closes. It never waits for a slot:
// a connection that gets none is closed at once (seat), so that the
// kernel's backlog never fills with strangers in front of members.
func (m *Mux) serve() {
	defer m.wg.Done()
	var backoff time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
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
		mc, evicted, refused := m.seat(c)
		if evicted != nil {
			m.log.refuse("dropped: a newer handshake from the same member address", "remote", evicted.RemoteAddr().String())
			evicted.Close()
		}
		if mc == nil {
			closeNow(c)
			if refused == "" { // the Mux is closed
				return
			}
			m.log.refuse("refused: "+refused, "remote", c.RemoteAddr().String())
			continue
		}
		m.wg.Add(1)
		go m.handle(mc)
	}
}

// closeNow closes a refused connection with a reset: the kernel keeps
// nothing of it for a stranger who holds its end open.
func closeNow(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	c.Close()
}

// handle runs one connection's handshake and dispatches it.
func (m *Mux) handle(c *muxConn) {
	defer m.wg.Done()
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
	m.release(c)
	chains := tc.ConnectionState().VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		m.log.refuse("refused: no cluster certificate", "remote", remote, "proto", protoName(proto))
		tc.Close()
		return
	}
	_ = tc.SetDeadline(time.Time{})
	if !m.authenticated(c, chains[0][0]) {
		m.log.refuse("dropped: its certificate was dropped during its handshake", "remote", remote, "proto", protoName(proto))
		tc.Close()
		return
	}
	m.handoff(tc, proto, remote)
}

// handshake runs the TLS handshake and reads the protocol byte, both
// under one deadline. Errors are log messages: they never reach a peer.
func (m *Mux) handshake(c *muxConn) (*tls.Conn, byte, error) {
	timeout := m.opts.StrangerTimeout
	if c.member {
		timeout = m.opts.HandshakeTimeout
	}
	_ = c.SetDeadline(time.Now().Add(timeout))
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

// seat gives an accepted connection its handshake slot (see Options):
// it returns the connection to serve, and a member's connection it
// takes the place of (to close), or why it is refused ("" once the Mux
// is closed).
func (m *Mux) seat(c net.Conn) (mc *muxConn, evicted *muxConn, refused string) {
	src := sourceOf(c)
	member := src.IsValid() && m.opts.IsMember(src) // the caller's code: not under m.mu
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, nil, ""
	}
	mc = &muxConn{Conn: c, m: m, src: src, member: member, gen: m.dropGen, slot: true}
	if member {
		q := m.byMember[src]
		if len(q) >= m.opts.MemberHandshakes {
			evicted, q = q[0], q[1:]
			evicted.slot = false
		}
		m.byMember[src] = append(q, mc)
	} else {
		key := sourceKey(src)
		switch {
		case m.bySource[key] >= m.opts.MaxPerSource:
			return nil, nil, "too many handshakes from its source"
		case m.strangers >= m.opts.MaxHandshakes:
			return nil, nil, "too many handshakes from strangers"
		}
		m.strangers++
		m.bySource[key]++
	}
	m.conns[mc] = struct{}{}
	return mc, evicted, ""
}

// release gives back c's handshake slot, if it holds one.
func (m *Mux) release(c *muxConn) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.releaseLocked(c)
}

// releaseLocked is release with m.mu held.
func (m *Mux) releaseLocked(c *muxConn) {
	if !c.slot {
		return
	}
	c.slot = false
	if c.member {
		q := m.byMember[c.src]
		for i, o := range q {
			if o == c {
				q = append(q[:i:i], q[i+1:]...)
				break
			}
		}
		if len(q) == 0 {
			delete(m.byMember, c.src)
		} else {
			m.byMember[c.src] = q
		}
		return
	}
	m.strangers--
	key := sourceKey(c.src)
	if m.bySource[key]--; m.bySource[key] <= 0 {
		delete(m.bySource, key)
	}
}

// sourceOf is c's source address; the zero Addr if c has none.
func sourceOf(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap().WithZone("")
	}
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap().WithZone("")
}

// sourceKey is what a stranger's slots are counted by: its IPv4 address,
// or its IPv6 /64, which one machine commonly has whole.
func sourceKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().Addr()
	}
	return a
}
