package transport

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// joinServer is a member admitting newcomers, with a token set and
// rules that can change at run time and a record of the handler's calls.
type joinServer struct {
	m    *Mux
	logs *logBuf
	id   *Identity

	mu       sync.Mutex
	tokens   []string
	admits   []string
	refuse   error
	status   error      // what Status answers
	spendErr error      // what Spend answers
	spent    []Newcomer // Spend's calls
	issued   []*x509.Certificate
	redirect string // what Redirect answers
}

// newJoinServer serves joins with a CA key of its own.
func newJoinServer(t *testing.T, tokens ...string) *joinServer {
	t.Helper()
	return newJoinServerAs(t, testNode(t, testCA(t), "first"), tokens...)
}

// newJoinServerAs serves joins as id, which may hold no CA key.
func newJoinServerAs(t *testing.T, id *Identity, tokens ...string) *joinServer {
	t.Helper()
	s := &joinServer{id: id, tokens: tokens}
	locked := func(f func()) {
		s.mu.Lock()
		defer s.mu.Unlock()
		f()
	}
	h := &JoinHandler{
		Tokens: func() (out []string) {
			locked(func() { out = append([]string(nil), s.tokens...) })
			return out
		},
		Status: func(Newcomer) (err error) {
			locked(func() { err = s.status })
			return err
		},
		Admit: func(name string, ips []net.IP) (err error) {
			locked(func() { s.admits = append(s.admits, name); err = s.refuse })
			return err
		},
		Spend: func(_ context.Context, n Newcomer) (err error) {
			locked(func() { s.spent = append(s.spent, n); err = s.spendErr })
			return err
		},
		Issued: func(_ context.Context, name string, cert *x509.Certificate) error {
			locked(func() { s.issued = append(s.issued, cert) })
			return nil
		},
		Redirect: func() (addr string) {
			locked(func() { addr = s.redirect })
			return addr
		},
		Welcome: func(name string) ([]byte, error) {
			return []byte(`{"cluster":"test","for":"` + name + `"}`), nil
		},
		CertLifetime: time.Hour,
	}
	s.m, s.logs = testMux(t, s.id, Options{Join: h})
	startEcho(t, s.m.Listener(ProtoRPC))
	return s
}

// set changes the server's rules under its lock.
func (s *joinServer) set(f func(s *joinServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

func (s *joinServer) setTokens(tokens ...string) {
	s.mu.Lock()
	s.tokens = tokens
	s.mu.Unlock()
}

func (s *joinServer) admitted() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.admits...)
}

func join(s *joinServer, token, name string) (*Identity, []byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return Join(ctx, s.m.Addr().String(), token, name, []net.IP{net.ParseIP("10.0.0.2")})
}

func newToken(t *testing.T) string {
	t.Helper()
	tok, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestJoin(t *testing.T) {
	tok := newToken(t)
	s := newJoinServer(t, tok)
	id, blob, err := join(s, tok, "n2")
	if err != nil {
		t.Fatal(err)
	}
	if id.Name() != "n2" || !id.CA.Cert.Equal(s.id.CA.Cert) {
		t.Fatal("joined identity is not of the server's cluster")
	}
	// The CA key stays with the members that issue.
	if id.CA.Key != nil || id.Signer() != nil {
		t.Fatal("the newcomer was given the ca key")
	}
	// The certificate lives CertLifetime, and was recorded before the
	// reply, with the token's use spent on the newcomer's key.
	if life := time.Until(id.Cert.NotAfter); life > time.Hour || life < 50*time.Minute {
		t.Errorf("certificate valid for %v more, want about the handler's hour", life)
	}
	s.mu.Lock()
	issued, spent := s.issued, s.spent
	s.mu.Unlock()
	if len(issued) != 1 || Serial(issued[0]) != Serial(id.Cert) {
		t.Errorf("certificates recorded %v, want the newcomer's", issued)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&id.Key.PublicKey)
	sum := sha256.Sum256(pub)
	if len(spent) != 1 || spent[0].Name != "n2" || spent[0].TokenHash != TokenHash(tok) || spent[0].Key != hex.EncodeToString(sum[:]) {
		t.Errorf("token uses spent %+v", spent)
	}
	if len(id.Cert.IPAddresses) != 1 || !id.Cert.IPAddresses[0].Equal(net.ParseIP("10.0.0.2")) {
		t.Errorf("ips %v", id.Cert.IPAddresses)
	}
	if string(blob) != `{"cluster":"test","for":"n2"}` {
		t.Errorf("blob %q", blob)
	}
	if got := s.admitted(); len(got) != 1 || got[0] != "n2" {
		t.Errorf("admission calls %q", got)
	}
	s.logs.waitLog(t, "admitted node", "node=n2")
	// The new identity is a member: it uses ProtoRPC, and survives disk.
	dir := t.TempDir()
	if err := id.Save(dir); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadIdentity(dir)
	if err != nil {
		t.Fatal(err)
	}
	assertDialEcho(t, s.m, loaded)
}

func TestJoinWithStoredHash(t *testing.T) {
	tok := newToken(t)
	s := newJoinServer(t, "junk", TokenHash(tok))
	if _, _, err := join(s, tok, "n2"); err != nil {
		t.Fatalf("join against a stored hash: %v", err)
	}
}

func TestJoinWrongToken(t *testing.T) {
	s := newJoinServer(t, newToken(t))
	id, _, err := join(s, newToken(t), "n2")
	if !errors.Is(err, ErrBadToken) || id != nil {
		t.Fatalf("wrong token: %v, %v", id, err)
	}
	s.logs.waitLog(t, "refused join: unknown token")
	if got := s.admitted(); len(got) != 0 {
		t.Fatalf("admission hook called for %q", got)
	}
}

// A token the cluster forgot is unknown: the newcomer learns nothing
// more than that.
func TestJoinForgottenToken(t *testing.T) {
	tok, other := newToken(t), newToken(t)
	s := newJoinServer(t, tok, other)
	if _, _, err := join(s, tok, "n2"); err != nil {
		t.Fatal(err)
	}
	s.setTokens(other)
	if _, _, err := join(s, tok, "n3"); !errors.Is(err, ErrBadToken) {
		t.Fatalf("revoked token: %v", err)
	}
	if _, _, err := join(s, other, "n4"); err != nil {
		t.Fatalf("remaining token: %v", err)
	}
	if got := s.admitted(); strings.Join(got, ",") != "n2,n4" {
		t.Fatalf("admitted %q", got)
	}
}

func TestJoinAdmissionRefused(t *testing.T) {
	tok := newToken(t)
	s := newJoinServer(t, tok)
	s.set(func(s *joinServer) { s.refuse = fmt.Errorf("node name %q already in use", "n2") })
	_, _, err := join(s, tok, "n2")
	if !errors.Is(err, ErrJoinRefused) || !strings.Contains(err.Error(), `node name "n2" already in use`) {
		t.Fatalf("refused admission: %v", err)
	}
	s.logs.waitLog(t, "refused join: not admitted", "node=n2")
}

func TestJoinNotServed(t *testing.T) {
	tok := newToken(t)
	m, logs := testMux(t, testNode(t, testCA(t), "a"), Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if id, _, err := Join(ctx, m.Addr().String(), tok, "n2", nil); err == nil || id != nil {
		t.Fatal("joined a node that serves no joins")
	}
	logs.waitLog(t, "refused: join not served here")
}

func TestJoinBadInput(t *testing.T) {
	ctx := context.Background()
	if _, _, err := Join(ctx, "127.0.0.1:1", "nope", "n2", nil); !errors.Is(err, ErrTokenFormat) {
		t.Errorf("junk token: %v", err)
	}
	if _, _, err := Join(ctx, "127.0.0.1:1", newToken(t), "bad name", nil); !errors.Is(err, ErrNodeName) {
		t.Errorf("bad name: %v", err)
	}
}

// A client that names a valid token but cannot prove it is refused by
// the server's HMAC check, before the admission hook.
func TestJoinClientBadProof(t *testing.T) {
	tok := newToken(t)
	s := newJoinServer(t, tok)
	// Even of a spent token, a client without it learns nothing.
	s.set(func(s *joinServer) { s.status = ErrTokenRevoked })
	c := tlsConnect(t, s.m.Addr().String(), joinClientConfig(), ProtoJoin)
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if err := writeFrame(c, joinHello{V: joinVersion, ID: joinID(TokenHash(tok))}); err != nil {
		t.Fatal(err)
	}
	var ch joinChallenge
	if err := readFrame(c, &ch); err != nil || len(ch.Proof) == 0 {
		t.Fatalf("challenge: %+v %v", ch, err)
	}
	key, _ := NewKey()
	req := joinRequest{Proof: bytes.Repeat([]byte{7}, 32), Name: "n2", PublicKey: mustPKIX(t, key)}
	if err := writeFrame(c, req); err != nil {
		t.Fatal(err)
	}
	var reply joinReply
	if err := readFrame(c, &reply); err != nil {
		t.Fatal(err)
	}
	if reply.Code != codeBadToken || reply.Cert != nil {
		t.Fatalf("reply to a bad proof: %+v", reply)
	}
	s.logs.waitLog(t, "refused join: bad token proof")
	if got := s.admitted(); len(got) != 0 {
		t.Fatalf("admission hook called for %q", got)
	}
}

// A server that does not know the token cannot prove it: the newcomer
// gives up without sending its name or key.
func TestJoinFakeServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fake := testNode(t, testCA(t), "fake")
	received := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		tc := tls.Server(c, serverConfig(fake))
		var hdr [1]byte
		var hello joinHello
		if _, err := io.ReadFull(tc, hdr[:]); err != nil || readFrame(tc, &hello) != nil {
			received <- nil
			return
		}
		p := make([]byte, 32)
		_, _ = rand.Read(p)
		_ = writeFrame(tc, joinChallenge{Proof: p})
		rest, _ := io.ReadAll(tc)
		received <- rest
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err = Join(ctx, ln.Addr().String(), newToken(t), "secretname", nil)
	if !errors.Is(err, ErrBadToken) {
		t.Fatalf("join with a fake server: %v", err)
	}
	select {
	case rest := <-received:
		if rest == nil {
			t.Fatal("fake server got no hello")
		}
		if len(rest) != 0 {
			t.Fatalf("newcomer sent %d bytes after a bad proof", len(rest))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("fake server never finished")
	}
}

func mustPKIX(t *testing.T, key *ecdsa.PrivateKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// An expired, a revoked and a used-up token are each refused with their
// own error, after the proof and before anything else; the same join
// works once the token is valid.
func TestJoinSpentToken(t *testing.T) {
	for _, why := range []error{ErrTokenExpired, ErrTokenRevoked, ErrTokenUsedUp} {
		t.Run(why.Error(), func(t *testing.T) {
			tok := newToken(t)
			s := newJoinServer(t, TokenHash(tok))
			s.set(func(s *joinServer) { s.status = why })
			id, _, err := join(s, tok, "n2")
			if !errors.Is(err, why) || id != nil {
				t.Fatalf("join with a spent token: %v, want %v", err, why)
			}
			for _, other := range []error{ErrTokenExpired, ErrTokenRevoked, ErrTokenUsedUp, ErrBadToken, ErrJoinRefused} {
				if other != why && errors.Is(err, other) {
					t.Errorf("%v is also %v", err, other)
				}
			}
			s.logs.waitLog(t, "refused join: "+why.Error(), "node=n2")
			s.mu.Lock()
			admits, spent, issued := len(s.admits), len(s.spent), len(s.issued)
			s.mu.Unlock()
			if admits+spent+issued != 0 {
				t.Fatalf("a spent token went on: %d admits, %d spends, %d certificates", admits, spent, issued)
			}
			s.set(func(s *joinServer) { s.status = nil })
			if _, _, err := join(s, tok, "n2"); err != nil {
				t.Fatalf("the same join with a valid token: %v", err)
			}
		})
	}
}

// The token's last use taken by another join between the status check
// and the spend: Spend's refusal reaches the newcomer as such, and no
// certificate is issued.
func TestJoinLosesTheLastUse(t *testing.T) {
	tok := newToken(t)
	s := newJoinServer(t, tok)
	s.set(func(s *joinServer) { s.spendErr = fmt.Errorf("token use: %w", ErrTokenUsedUp) })
	if _, _, err := join(s, tok, "n2"); !errors.Is(err, ErrTokenUsedUp) {
		t.Fatalf("join that lost the last use: %v", err)
	}
	s.set(func(s *joinServer) { s.spendErr = errors.New("no quorum") })
	if _, _, err := join(s, tok, "n2"); !errors.Is(err, ErrJoinProtocol) || !strings.Contains(err.Error(), "cannot record the token's use") {
		t.Fatalf("join whose use could not be spent: %v", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.issued) != 0 {
		t.Fatalf("%d certificates issued without a spent use", len(s.issued))
	}
}

// A retry that keeps its key is the same newcomer to the member.
func TestJoinRetryKeepsKey(t *testing.T) {
	tok := newToken(t)
	s := newJoinServer(t, tok)
	key, _ := NewKey()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for range 2 {
		if _, _, err := JoinWithKey(ctx, s.m.Addr().String(), tok, "n2", nil, key); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := join(s, tok, "n2"); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.spent) != 3 || s.spent[0].Key != s.spent[1].Key || s.spent[0].Key == s.spent[2].Key {
		t.Fatalf("newcomers %+v: want the first two alike, the third another", s.spent)
	}
}

// keyless is id without the CA key: a member that is not a voter.
func keyless(id *Identity) *Identity {
	return &Identity{Key: id.Key, Cert: id.Cert, CA: &CA{Cert: id.CA.Cert}}
}

// A member without the CA key sends the newcomer to one that has it;
// the newcomer follows once, and its certificate comes from there.
func TestJoinRedirect(t *testing.T) {
	tok := newToken(t)
	ca := testCA(t)
	issuer := newJoinServerAs(t, testNode(t, ca, "voter"), tok)
	member := newJoinServerAs(t, keyless(testNode(t, ca, "member")), tok)
	member.set(func(s *joinServer) { s.redirect = issuer.m.Addr().String() })
	id, blob, err := join(member, tok, "n2")
	if err != nil {
		t.Fatalf("join through a member without the ca key: %v", err)
	}
	if id.Name() != "n2" || !id.CA.Cert.Equal(ca.Cert) || string(blob) != `{"cluster":"test","for":"n2"}` {
		t.Fatalf("joined %s of %s, blob %q", id.Name(), id.ClusterID(), blob)
	}
	member.logs.waitLog(t, "sent the newcomer to "+issuer.m.Addr().String())
	issuer.logs.waitLog(t, "admitted node", "node=n2")
	member.mu.Lock()
	defer member.mu.Unlock()
	if len(member.spent) != 0 || len(member.issued) != 0 {
		t.Fatalf("the member without the key spent %d uses, issued %d certificates", len(member.spent), len(member.issued))
	}
}

// Without a member to send it to, or sent to another member without the
// key, the newcomer is told so; it follows one redirect only.
func TestJoinNoIssuer(t *testing.T) {
	tok := newToken(t)
	ca := testCA(t)
	a := newJoinServerAs(t, keyless(testNode(t, ca, "a")), tok)
	if _, _, err := join(a, tok, "n2"); !errors.Is(err, ErrJoinProtocol) || !strings.Contains(err.Error(), "holds no ca key") {
		t.Fatalf("join of a keyless member that knows no issuer: %v", err)
	}
	b := newJoinServerAs(t, keyless(testNode(t, ca, "b")), tok)
	a.set(func(s *joinServer) { s.redirect = b.m.Addr().String() })
	b.set(func(s *joinServer) { s.redirect = a.m.Addr().String() })
	if _, _, err := join(a, tok, "n2"); !errors.Is(err, ErrNoIssuer) {
		t.Fatalf("two keyless members sending the newcomer to each other: %v", err)
	}
	// A spent token is refused by whoever is asked, key or not.
	a.set(func(s *joinServer) { s.status = ErrTokenExpired })
	if _, _, err := join(a, tok, "n2"); !errors.Is(err, ErrTokenExpired) {
		t.Fatalf("expired token at a keyless member: %v", err)
	}
}
