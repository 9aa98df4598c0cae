package transport

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// joinServer is a member admitting newcomers, with a token set that can
// change at run time and a record of admission calls.
type joinServer struct {
	m    *Mux
	logs *logBuf
	id   *Identity

	mu     sync.Mutex
	tokens []string
	admits []string
	refuse error
}

func newJoinServer(t *testing.T, tokens ...string) *joinServer {
	t.Helper()
	s := &joinServer{id: testNode(t, testCA(t), "first"), tokens: tokens}
	h := &JoinHandler{
		Tokens: func() []string {
			s.mu.Lock()
			defer s.mu.Unlock()
			return append([]string(nil), s.tokens...)
		},
		Admit: func(name string, ips []net.IP) error {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.admits = append(s.admits, name)
			return s.refuse
		},
		Welcome: func(name string) ([]byte, error) {
			return []byte(`{"cluster":"test","for":"` + name + `"}`), nil
		},
	}
	s.m, s.logs = testMux(t, s.id, Options{Join: h})
	startEcho(t, s.m.Listener(ProtoRPC))
	return s
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
	if id.Name() != "n2" || !id.CA.Cert.Equal(s.id.CA.Cert) || !id.CA.Key.Equal(s.id.CA.Key) {
		t.Fatal("joined identity is not of the server's cluster")
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

func TestJoinRevokedToken(t *testing.T) {
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
	s.refuse = fmt.Errorf("node name %q already in use", "n2")
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
	if reply.Code != codeBadToken || reply.Cert != nil || reply.CAKey != nil {
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
