package membership

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/transport"
	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// peerConn stands for a peer's authenticated connection: the
// certificate PeerLeaf and PeerName read.
type peerConn struct {
	net.Conn
	leaf *x509.Certificate
}

func (c peerConn) ConnectionState() tls.ConnectionState {
	return tls.ConnectionState{PeerCertificates: []*x509.Certificate{c.leaf},
		VerifiedChains: [][]*x509.Certificate{{c.leaf}}}
}

// trustNet is a cluster of one store, led by n1, whose peer routes
// answer every node's calls, each made with the caller's live
// certificate.
type trustNet struct {
	s      *raftstore.Store
	ca     *transport.CA
	routes *http.ServeMux
}

// trustPeer is one node's Cluster in a trustNet.
type trustPeer struct {
	raftstoretest.Local
	net *trustNet
	id  *transport.Identity
}

func (p trustPeer) Forward(ctx context.Context, path string, in, out any) error {
	b, _ := json.Marshal(in)
	return p.Post(ctx, "the leader", path, b, out)
}

func (p trustPeer) Post(ctx context.Context, _, path string, body []byte, out any) error {
	ctx = api.ConnContext(ctx, peerConn{leaf: p.id.Leaf()})
	rec := httptest.NewRecorder()
	p.net.routes.ServeHTTP(rec, httptest.NewRequestWithContext(ctx, http.MethodPost, path, bytes.NewReader(body)))
	if rec.Code != http.StatusOK {
		return api.ReadError(rec.Result())
	}
	if out == nil {
		return nil
	}
	return json.Unmarshal(rec.Body.Bytes(), out)
}

func newTrustNet(t *testing.T) *trustNet {
	ca, err := transport.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	s := raftstoretest.New(t, raftstoretest.WithNodeID("n1"))
	return &trustNet{s: s, ca: ca, routes: http.NewServeMux()}
}

// node makes node name's identity (with the CA key if holdsKey), saves
// it in a data directory of its own and returns its Trust.
func (n *trustNet) node(t *testing.T, name string, holdsKey bool, cfg TrustConfig) *Trust {
	t.Helper()
	id, err := transport.NewIdentity(n.ca, name, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if !holdsKey {
		_ = id.SetCAKey(nil)
	}
	cfg.Node, cfg.DataDir, cfg.Log = name, t.TempDir(), raftstoretest.Logger(t)
	if err := id.Save(filepath.Join(cfg.DataDir, "tls")); err != nil {
		t.Fatal(err)
	}
	return NewTrust(cfg, trustPeer{Local: raftstoretest.Local{S: n.s}, net: n, id: id}, id)
}

// leader makes n1, holding the CA key, answer the peer routes.
func (n *trustNet) leader(t *testing.T, cfg TrustConfig) *Trust {
	l := n.node(t, "n1", true, cfg)
	n.routes.HandleFunc("POST "+CAPath, l.HandleCA)
	n.routes.HandleFunc("POST "+RenewPath, l.HandleRenew)
	return l
}

// fakeClock drives renewLoop: each wait it asks for is sent on waits,
// and ends when the test sends on fire.
type fakeClock struct {
	mu    sync.Mutex
	at    time.Time
	waits chan time.Duration
	fire  chan time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.at
}

func (c *fakeClock) set(at time.Time) {
	c.mu.Lock()
	c.at = at
	c.mu.Unlock()
}

func (c *fakeClock) after(d time.Duration) <-chan time.Time {
	c.waits <- d
	return c.fire
}

func (c *fakeClock) nextWait(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.waits:
		return d
	case <-time.After(5 * time.Second):
		t.Fatal("renewLoop asked for no wait")
		return 0
	}
}

// withClock makes tr run on a fake clock set at at.
func withClock(tr *Trust, at time.Time) *fakeClock {
	c := &fakeClock{at: at, waits: make(chan time.Duration, 16), fire: make(chan time.Time)}
	tr.now, tr.after = c.now, c.after
	return c
}

// shortCert gives tr's identity a certificate of the given life, as a
// leader with that cert_lifetime would have issued.
func (n *trustNet) shortCert(t *testing.T, tr *Trust, life time.Duration) *x509.Certificate {
	t.Helper()
	cert, err := transport.IssueFor(n.ca, tr.cfg.Node, &tr.id.Key.PublicKey, nil, life)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.id.Renew(cert); err != nil {
		t.Fatal(err)
	}
	return cert
}

func TestRenewAt(t *testing.T) {
	n := newTrustNet(t)
	key, _ := transport.NewKey()
	for _, c := range []struct {
		name           string
		life, lifetime time.Duration
		want           time.Duration // after the issue
	}{
		{"a 20 s certificate", 20 * time.Second, 20 * time.Second, 20 * time.Second * 2 / 3},
		{"a 30 day certificate", 30 * 24 * time.Hour, 30 * 24 * time.Hour, 20 * 24 * time.Hour},
		{"longer than the configured lifetime", 30 * 24 * time.Hour, 30 * time.Second, 20 * time.Second},
		{"shorter than the configured lifetime", 30 * time.Second, time.Hour, 20 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			cert, err := transport.IssueFor(n.ca, "n2", &key.PublicKey, nil, c.life)
			if err != nil {
				t.Fatal(err)
			}
			if got := renewAt(cert, c.lifetime).Sub(transport.IssuedAt(cert)); got != c.want {
				t.Fatalf("renews %v after its issue, want %v", got, c.want)
			}
		})
	}
}

// A member renews at two thirds of its certificate's life: the leader
// signs for its name and key and records the new serial, and the member
// swaps it in and saves it; the next renewal is two thirds into the new
// certificate's life.
func TestRenewalAtTwoThirds(t *testing.T) {
	n := newTrustNet(t)
	n.leader(t, TrustConfig{CertLifetime: 30 * time.Second})
	raftstoretest.AddNode(t, n.s, "n2", "127.0.0.1:1")
	m := n.node(t, "n2", false, TrustConfig{CertLifetime: 30 * time.Second})
	old := n.shortCert(t, m, 30*time.Second)
	issued := transport.IssuedAt(old)
	clock := withClock(m, issued)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go m.renewLoop(ctx)

	if d := clock.nextWait(t); d != 20*time.Second {
		t.Fatalf("first renewal in %v, want 20s (two thirds of 30s)", d)
	}
	clock.set(issued.Add(20 * time.Second))
	clock.fire <- time.Time{}
	next := clock.nextWait(t)
	cur := m.id.Leaf()
	if transport.Serial(cur) == transport.Serial(old) || cur.Subject.CommonName != "n2" ||
		!cur.PublicKey.(*ecdsa.PublicKey).Equal(old.PublicKey) {
		t.Fatalf("after the renewal the live certificate is %s for %s", transport.Serial(cur), cur.Subject.CommonName)
	}
	if want := renewAt(cur, 30*time.Second).Sub(clock.now()); next != want {
		t.Fatalf("next renewal in %v, want %v (two thirds into the new certificate)", next, want)
	}
	saved, err := transport.LoadIdentity(m.tlsDir())
	if err != nil || transport.Serial(saved.Leaf()) != transport.Serial(cur) {
		t.Fatalf("saved certificate %v: %v", saved, err)
	}
	if !recorded(n.s, transport.Serial(cur), "n2") {
		t.Fatalf("the renewed certificate is not recorded: %+v", n.s.Certs())
	}
}

func recorded(s *raftstore.Store, serial, node string) bool {
	for _, c := range s.Certs() {
		if c.Serial == serial && c.Node == node && !c.Revoked {
			return true
		}
	}
	return false
}

// A renewal that fails is retried sooner and sooner apart, within the
// certificate's remaining life, and logged.
func TestRenewalRetries(t *testing.T) {
	n := newTrustNet(t)
	n.leader(t, TrustConfig{})
	// n3 is no member: the leader refuses it.
	m := n.node(t, "n3", false, TrustConfig{CertLifetime: 30 * time.Second})
	old := n.shortCert(t, m, 30*time.Second)
	clock := withClock(m, transport.IssuedAt(old))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go m.renewLoop(ctx)
	clock.nextWait(t)
	clock.set(transport.IssuedAt(old).Add(20 * time.Second))
	for _, want := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second} {
		clock.fire <- time.Time{}
		if d := clock.nextWait(t); d != want {
			t.Fatalf("retry in %v, want %v", d, want)
		}
	}
	if m.id.Leaf() != old {
		t.Fatal("a refused renewal changed the certificate")
	}
}

// The leader signs only for the caller's own name, and not for a
// revoked certificate.
func TestRenewRefusals(t *testing.T) {
	n := newTrustNet(t)
	n.leader(t, TrustConfig{})
	raftstoretest.AddNode(t, n.s, "n2", "127.0.0.1:1")
	m := n.node(t, "n2", false, TrustConfig{})
	var reply renewReply
	body, _ := json.Marshal(renewRequest{Node: "n1"})
	if err := m.c.Post(t.Context(), "", RenewPath, body, &reply); err == nil {
		t.Fatal("n2 got a certificate for n1")
	}
	if err := m.renew(t.Context()); err != nil {
		t.Fatalf("n2's own renewal: %v", err)
	}
	raftstoretest.Apply(t, n.s, raftstore.CertRevoke{Serial: transport.Serial(m.id.Leaf())})
	if err := m.renew(t.Context()); err == nil {
		t.Fatal("a revoked certificate was renewed")
	}
}

// The CA key follows the voters: a non-voter deletes it, a voter takes
// it, a non-voter is refused it; the founder's own certificate is
// recorded.
func TestCAKeyFollowsVoters(t *testing.T) {
	n := newTrustNet(t)
	l := n.leader(t, TrustConfig{})
	l.checkCA(t.Context())
	if !recorded(n.s, transport.Serial(l.id.Leaf()), "n1") {
		t.Fatalf("the founder's certificate is not recorded: %+v", n.s.Certs())
	}
	if l.id.Signer() == nil {
		t.Fatal("the only voter gave up the ca key")
	}

	// n2, a non-voter that holds the key (as every member once did).
	if err := n.s.AddNonvoter(t.Context(), "n2", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	raftstoretest.AddNode(t, n.s, "n2", "127.0.0.1:1")
	nv := n.node(t, "n2", true, TrustConfig{})
	keyFile := filepath.Join(nv.tlsDir(), transport.CAKeyFile)
	if _, err := os.Stat(keyFile); err != nil {
		t.Fatal(err)
	}
	nv.checkCA(t.Context())
	if _, err := os.Stat(keyFile); !errors.Is(err, os.ErrNotExist) || nv.id.Signer() != nil {
		t.Fatalf("a non-voter kept the ca key: %v, signer %v", err, nv.id.Signer())
	}
	if err := nv.pullCA(t.Context(), []string{"n1"}); err == nil || nv.id.Signer() != nil {
		t.Fatalf("a non-voter was handed the ca key: %v", err)
	}

	// A voter without the key (n1 again, from another data directory)
	// takes it and keeps it 0600.
	v := n.node(t, "n1", false, TrustConfig{})
	if err := v.pullCA(t.Context(), []string{"n1"}); err != nil {
		t.Fatal(err)
	}
	if s := v.id.Signer(); s == nil || !s.Key.Equal(n.ca.Key) {
		t.Fatal("the voter does not hold the ca key")
	}
	st, err := os.Stat(filepath.Join(v.tlsDir(), transport.CAKeyFile))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("the voter's ca key file: %v, %v", st, err)
	}
}

// A revoked certificate is refused at the handshake (the identity's
// check) and its live connections are dropped, as are a removed node's.
func TestRevocationDropsConnections(t *testing.T) {
	n := newTrustNet(t)
	drops := make(chan func(*x509.Certificate) bool, 4)
	l := n.leader(t, TrustConfig{Drop: func(match func(*x509.Certificate) bool) int { drops <- match; return 1 }})
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go l.watchRevoked(ctx)
	leaf := func(name string) *x509.Certificate {
		key, _ := transport.NewKey()
		c, err := transport.Issue(n.ca, name, &key.PublicKey, nil)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	next := func() func(*x509.Certificate) bool {
		select {
		case m := <-drops:
			return m
		case <-time.After(5 * time.Second):
			t.Fatal("no connections dropped")
			return nil
		}
	}

	revoked, other := leaf("n2"), leaf("n2")
	if err := l.refuse(revoked); err != nil {
		t.Fatal(err)
	}
	raftstoretest.Apply(t, n.s, raftstore.CertRevoke{Serial: transport.Serial(revoked)})
	if match := next(); !match(revoked) || match(other) {
		t.Fatal("the drop does not match the revoked certificate alone")
	}
	if err := l.refuse(revoked); !errors.Is(err, transport.ErrRevoked) || l.refuse(other) != nil {
		t.Fatalf("handshake check: %v", err)
	}

	raftstoretest.AddNode(t, n.s, "n5", "127.0.0.1:1")
	old := leaf("n5")
	raftstoretest.Apply(t, n.s, raftstore.NodeRemove{Name: "n5"})
	if match := next(); !match(old) || match(leaf("n6")) {
		t.Fatal("the drop does not match the removed node's connections alone")
	}
}
