package transport

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"
)

// leafLog serves l, echoing every connection, and keeps the serial of
// each peer's certificate in accept order.
type leafLog struct {
	mu      sync.Mutex
	serials []string
}

func serveLeaves(t *testing.T, l net.Listener) *leafLog {
	ll := &leafLog{}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			serial := ""
			if leaf := PeerLeaf(c); leaf != nil {
				serial = Serial(leaf)
			}
			ll.mu.Lock()
			ll.serials = append(ll.serials, serial)
			ll.mu.Unlock()
			go func() {
				defer c.Close()
				buf := make([]byte, 64)
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					if _, err := c.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() { l.Close() })
	return ll
}

func (ll *leafLog) last() string {
	ll.mu.Lock()
	defer ll.mu.Unlock()
	if len(ll.serials) == 0 {
		return ""
	}
	return ll.serials[len(ll.serials)-1]
}

func dialRPC(t *testing.T, m *Mux, id *Identity) (net.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := Dial(ctx, m.Addr().String(), ProtoRPC, id)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// refuseSerials is a RefuseFunc refusing the given serials, as the
// agent's refuses what the agreed state revoked.
func refuseSerials(serials ...string) RefuseFunc {
	return func(leaf *x509.Certificate) error {
		for _, s := range serials {
			if Serial(leaf) == s {
				return ErrRevoked
			}
		}
		return nil
	}
}

// A revoked certificate is refused by the server it dials (its
// connection closed at once) and by the client that dials it (Dial
// fails); others go on.
func TestRevokedSerialRefusedBothSides(t *testing.T) {
	ca := testCA(t)
	srv, good, bad := testNode(t, ca, "n1"), testNode(t, ca, "n2"), testNode(t, ca, "n3")
	m, logs := testMux(t, srv, Options{})
	startEcho(t, m.Listener(ProtoRPC))

	// Before the revocation, bad is a member like good.
	c, err := dialRPC(t, m, bad)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "before")

	srv.SetRefuse(refuseSerials(Serial(bad.Cert)))
	c, err = dialRPC(t, m, bad)
	if err == nil {
		assertDisconnected(t, c, 3*time.Second)
	}
	logs.waitLog(t, "refused", "n3", ErrRevoked.Error())
	assertDialEcho(t, m, good)

	// The client side: a dialer refuses a server whose serial it holds
	// revoked, before it sends anything.
	good.SetRefuse(refuseSerials(Serial(srv.Cert)))
	if _, err := dialRPC(t, m, good); !errors.Is(err, ErrRevoked) {
		t.Fatalf("dialing a revoked server: %v", err)
	}
	good.SetRefuse(nil)
	assertDialEcho(t, m, good)
}

// A renewed certificate is what the next handshake presents, on both
// sides, while connections made before go on.
func TestRenewedCertUsedByNextHandshake(t *testing.T) {
	ca := testCA(t)
	srv, cli := testNode(t, ca, "n1"), testNode(t, ca, "n2")
	m, _ := testMux(t, srv, Options{})
	ll := serveLeaves(t, m.Listener(ProtoRPC))

	old, err := dialRPC(t, m, cli)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, old, "first")
	if ll.last() != Serial(cli.Cert) || Serial(PeerLeaf(old)) != Serial(srv.Cert) {
		t.Fatalf("first handshake: server saw %s, want %s", ll.last(), Serial(cli.Cert))
	}

	renewed := renew(t, ca, cli, time.Minute)
	srvRenewed := renew(t, ca, srv, time.Minute)
	c, err := dialRPC(t, m, cli)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, c, "second")
	if ll.last() != Serial(renewed) {
		t.Fatalf("after the renewal the server saw %s, want %s", ll.last(), Serial(renewed))
	}
	if got := Serial(PeerLeaf(c)); got != Serial(srvRenewed) {
		t.Fatalf("after the server's renewal the client saw %s, want %s", got, Serial(srvRenewed))
	}
	if cli.Leaf() != renewed || cli.Expires() != renewed.NotAfter || cli.Name() != "n2" {
		t.Fatalf("live certificate %s, expires %v", Serial(cli.Leaf()), cli.Expires())
	}
	roundTrip(t, old, "the old connection goes on")

	// Saved, the renewal is what the node comes back with.
	dir := t.TempDir()
	if err := cli.Save(dir); err != nil {
		t.Fatal(err)
	}
	again := renew(t, ca, cli, time.Minute)
	if err := cli.SaveCert(dir); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadIdentity(dir)
	if err != nil || Serial(loaded.Leaf()) != Serial(again) {
		t.Fatalf("loaded %v: %v", loaded, err)
	}
}

// renew issues id a new certificate for its own key and swaps it in.
func renew(t *testing.T, ca *CA, id *Identity, life time.Duration) *x509.Certificate {
	t.Helper()
	cert, err := IssueFor(ca, id.Name(), &id.Key.PublicKey, nil, life)
	if err != nil {
		t.Fatal(err)
	}
	if err := id.Renew(cert); err != nil {
		t.Fatal(err)
	}
	return cert
}

// Renew takes only a certificate of the same node, for the same key,
// from the same CA.
func TestRenewRefusesAnotherIdentity(t *testing.T) {
	ca := testCA(t)
	id, other := testNode(t, ca, "n1"), testNode(t, ca, "n2")
	stranger := testNode(t, testCA(t), "n1")
	otherName, _ := IssueFor(ca, "n2", &id.Key.PublicKey, nil, time.Minute)
	otherKey, _ := IssueFor(ca, "n1", &other.Key.PublicKey, nil, time.Minute)
	for what, cert := range map[string]*x509.Certificate{
		"another name": otherName, "another key": otherKey, "another ca": stranger.Cert,
	} {
		if err := id.Renew(cert); !errors.Is(err, ErrBadIdentity) {
			t.Errorf("%s: %v", what, err)
		}
	}
	if id.Leaf() != id.Cert {
		t.Fatal("a refused renewal was swapped in")
	}
	if err := id.SetCAKey(other.Key); !errors.Is(err, ErrBadIdentity) {
		t.Fatalf("a ca key that is not the ca's: %v", err)
	}
	if err := id.SetCAKey(nil); err != nil || id.Signer() != nil {
		t.Fatalf("gave up the ca key: %v, signer %v", err, id.Signer())
	}
	if _, err := Issue(id.Signer(), "n9", &other.Key.PublicKey, nil); err == nil {
		t.Fatal("issued without the ca key")
	}
	if err := id.SetCAKey(ca.Key); err != nil || id.Signer() == nil || !id.Signer().Key.Equal(ca.Key) {
		t.Fatalf("took the ca key: %v", err)
	}
}

// forge signs a certificate for name with signer's key, signer's
// certificate as issuer: what a member without the CA key could mint.
func forge(t *testing.T, signer *Identity, name string) tls.Certificate {
	t.Helper()
	key, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: testSerial(t),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"ssi"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{name},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer.Cert, &key.PublicKey, signer.Key)
	if err != nil {
		t.Fatal(err)
	}
	// The signer's certificate goes along, so the chain is complete and
	// only the signer's not being a CA breaks it.
	return tls.Certificate{Certificate: [][]byte{der, signer.Cert.Raw}, PrivateKey: key}
}

func testSerial(t *testing.T) *big.Int {
	t.Helper()
	s, err := randomSerial()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// A certificate for "node2" signed with node3's node key chains to the
// CA through node3's certificate, which is no CA: refused by the
// server, and by a client when a server presents it.
func TestNodeSignedCertRefused(t *testing.T) {
	ca := testCA(t)
	node1, node3 := testNode(t, ca, "node1"), testNode(t, ca, "node3")
	forged := forge(t, node3, "node2")
	leaf, _ := x509.ParseCertificate(forged.Certificate[0])
	if err := verifyLeaf(ca.Pool(), leaf, []*x509.Certificate{node3.Cert}, x509.ExtKeyUsageClientAuth); err == nil {
		t.Fatal("a node-signed certificate verifies")
	}

	m, logs := testMux(t, node1, Options{})
	e := startEcho(t, m.Listener(ProtoRPC))
	cfg := clientConfig(node3)
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &forged, nil }
	assertDisconnected(t, tlsConnect(t, m.Addr().String(), cfg, ProtoRPC), 3*time.Second)
	logs.waitLog(t, "refused", "tls handshake", "signed by unknown authority")
	if e.count() != 0 {
		t.Fatal("the forged certificate reached the protocol listener")
	}
	assertDialEcho(t, m, node3)

	// A server presenting it is refused by a member dialing it.
	fake := serverConfig(node3)
	fake.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &forged, nil }
	addr := fakeServer(t, fake)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := Dial(ctx, addr, ProtoRPC, node1); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("dialing a server with a node-signed certificate: %v", err)
	}
}

// A certificate the CA signed for a name that is no node name is
// refused: the name is who the peer is.
func TestBadNameCertRefused(t *testing.T) {
	ca := testCA(t)
	node1 := testNode(t, ca, "node1")
	key, _ := NewKey()
	tmpl := &x509.Certificate{
		SerialNumber: testSerial(t),
		Subject:      pkix.Name{CommonName: "node2 evil"},
		NotBefore:    time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		t.Fatal(err)
	}
	bad := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	m, logs := testMux(t, node1, Options{})
	startEcho(t, m.Listener(ProtoRPC))
	cfg := clientConfig(node1)
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &bad, nil }
	assertDisconnected(t, tlsConnect(t, m.Addr().String(), cfg, ProtoRPC), 3*time.Second)
	logs.waitLog(t, "refused", ErrNodeName.Error())
}

// fakeServer accepts TLS with cfg on a local port and holds each
// connection until the test ends.
func fakeServer(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				tc := tls.Server(c, cfg)
				_ = tc.SetDeadline(time.Now().Add(3 * time.Second))
				if err := tc.Handshake(); err != nil {
					return
				}
				_, _ = fmt.Fprint(tc, "")
				buf := make([]byte, 1)
				_, _ = tc.Read(buf)
			}()
		}
	}()
	return ln.Addr().String()
}
