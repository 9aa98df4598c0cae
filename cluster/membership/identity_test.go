package membership

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ssi/cluster/discovery"
	"ssi/cluster/telemetry"
	"ssi/cluster/transport"
	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// Alone (no seeds, no discovery) a node forms its cluster; it comes back
// with the same identity.
func TestFormThenComeBack(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{Node: "n1", Advertise: "127.0.0.1:7700", DataDir: dir}
	id, formed, err := New(cfg, &fakeCluster{}, telemetry.NewTable()).ObtainIdentity(testContext(t))
	if err != nil || !formed || id.Name() != "n1" || id.ClusterID() == "" {
		t.Fatalf("formed %v, %v: %v", formed, err, id)
	}
	again, formed, err := New(cfg, &fakeCluster{}, telemetry.NewTable()).ObtainIdentity(testContext(t))
	if err != nil || formed || again.ClusterID() != id.ClusterID() {
		t.Fatalf("came back with %q, formed %v, %v; want %q", again.ClusterID(), formed, err, id.ClusterID())
	}
}

// seed is a formed one-node cluster serving joins on a real port.
type seed struct {
	m    *Membership
	fc   *fakeCluster
	addr string
	id   *transport.Identity
}

func newSeed(t *testing.T, cmds ...raftstore.Command) *seed {
	t.Helper()
	leader, fc, _ := leading(t, Config{DataDir: t.TempDir(), CertLifetime: time.Hour})
	mid, formed, err := leader.ObtainIdentity(testContext(t))
	if err != nil || !formed {
		t.Fatal(formed, err)
	}
	for _, c := range cmds {
		raftstoretest.Apply(t, fc.s, c)
	}
	mux, err := transport.Listen("127.0.0.1:0", mid, transport.Options{Join: leader.JoinHandler(), Log: raftstoretest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mux.Close() })
	return &seed{m: leader, fc: fc, addr: mux.Addr().String(), id: mid}
}

// newcomer is node name's membership, to join through the seed with tok.
func (s *seed) newcomer(t *testing.T, name, tok string) *Membership {
	cfg := Config{Node: name, Advertise: "127.0.0.1:7701", DataDir: t.TempDir(), JoinToken: tok, Join: []string{s.addr}}
	return New(cfg, &fakeCluster{}, telemetry.NewTable())
}

// A newcomer with the token joins through a seed: the member's join
// handler checks the token against the state, spends a use of it and
// records the certificate it issues, and keeps the CA key.
func TestJoinThroughSeed(t *testing.T) {
	tok, err := transport.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	s := newSeed(t, newTokenAdd(tok, time.Hour, 0, time.Now()))
	m := s.newcomer(t, "n2", tok)
	if b := m.Beacon(); b.State != discovery.StateSeeking || b.Tag != transport.TokenTag(tok) || b.Addr != m.cfg.Advertise {
		t.Fatalf("beacon %+v", b)
	}
	id, formed, err := m.ObtainIdentity(testContext(t))
	if err != nil || formed || id.Name() != "n2" || id.ClusterID() != s.id.ClusterID() {
		t.Fatalf("joined %v, formed %v, %v", id, formed, err)
	}
	if !id.Cert.IPAddresses[0].Equal(net.IPv4(127, 0, 0, 1)) {
		t.Fatalf("certificate for %v, want the advertised address", id.Cert.IPAddresses)
	}
	if m.joinedVia != s.addr {
		t.Fatalf("joined via %q", m.joinedVia)
	}
	if id.Signer() != nil {
		t.Fatal("the newcomer holds the ca key")
	}
	if _, err := os.Stat(filepath.Join(m.tlsDir(), transport.CAKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the newcomer's data directory has a ca key: %v", err)
	}
	if life := time.Until(id.Cert.NotAfter); life > time.Hour {
		t.Fatalf("certificate lives %v more, want at most the configured hour", life)
	}
	if tk, _ := s.fc.s.Token(transport.TokenHash(tok)); tk.Used != 1 {
		t.Fatalf("token used %d times, want 1", tk.Used)
	}
	var recorded bool
	for _, c := range s.fc.s.Certs() {
		recorded = recorded || c.Serial == transport.Serial(id.Cert) && c.Node == "n2" && c.NotAfter.Equal(id.Cert.NotAfter)
	}
	if !recorded {
		t.Fatalf("certificate %s not recorded: %+v", transport.Serial(id.Cert), s.fc.s.Certs())
	}
}

// An expired, a revoked and a used-up token each end the newcomer's
// attempts at once, with their own error; the cluster spends nothing.
func TestJoinWithSpentToken(t *testing.T) {
	now := time.Now()
	expired, revoked, usedUp := mustToken(t), mustToken(t), mustToken(t)
	s := newSeed(t,
		raftstore.TokenAdd{Hash: transport.TokenHash(expired), ID: "expired", CreatedAt: now.Add(-time.Hour), ExpiresAt: now.Add(-time.Minute)},
		raftstore.TokenAdd{Hash: transport.TokenHash(revoked), ID: "revoked", CreatedAt: now},
		raftstore.TokenAdd{Hash: transport.TokenHash(usedUp), ID: "usedup", CreatedAt: now, Uses: 1},
		raftstore.TokenRevoke{Key: "revoked"},
		raftstore.TokenUse{Hash: transport.TokenHash(usedUp), At: now})
	for _, c := range []struct {
		tok  string
		want error
	}{{expired, transport.ErrTokenExpired}, {revoked, transport.ErrTokenRevoked}, {usedUp, transport.ErrTokenUsedUp}} {
		id, _, err := s.newcomer(t, "n2", c.tok).ObtainIdentity(testContext(t))
		if !errors.Is(err, c.want) || id != nil || !strings.Contains(err.Error(), "needs a new token") {
			t.Errorf("join with a token %v: %v", c.want, err)
		}
	}
	if tk, _ := s.fc.s.Token(transport.TokenHash(usedUp)); tk.Used != 1 {
		t.Fatalf("used-up token used %d times", tk.Used)
	}
	if n := len(s.fc.s.Certs()); n != 0 {
		t.Fatalf("%d certificates issued", n)
	}
}

// Two newcomers racing for a one-use token: one joins, the other is
// told the token is used up. A retry by the winner with its key (a lost
// reply) spends no second use.
func TestJoinRaceForOneUse(t *testing.T) {
	tok := mustToken(t)
	s := newSeed(t, newTokenAdd(tok, time.Hour, 1, time.Now()))
	keys := [2]*ecdsa.PrivateKey{}
	errs := make(chan error, 2)
	for i := range keys {
		keys[i], _ = transport.NewKey()
		go func() {
			_, _, err := transport.JoinWithKey(testContext(t), s.addr, tok, fmt.Sprintf("n%d", i+2), nil, keys[i])
			errs <- err
		}()
	}
	var won, lost int
	for range keys {
		switch err := <-errs; {
		case err == nil:
			won++
		case errors.Is(err, transport.ErrTokenUsedUp):
			lost++
		default:
			t.Fatalf("racing join: %v", err)
		}
	}
	if won != 1 || lost != 1 {
		t.Fatalf("%d joined, %d refused: want one each", won, lost)
	}
	var winner string
	for _, c := range s.fc.s.Certs() {
		winner = c.Node
	}
	key := keys[0]
	if winner == "n3" {
		key = keys[1]
	}
	if _, _, err := transport.JoinWithKey(testContext(t), s.addr, tok, winner, nil, key); err != nil {
		t.Fatalf("the winner's retry: %v", err)
	}
	if tk, _ := s.fc.s.Token(transport.TokenHash(tok)); tk.Used != 1 || len(s.fc.s.Certs()) != 2 {
		t.Fatalf("token used %d times, %d certificates, after a retry", tk.Used, len(s.fc.s.Certs()))
	}
}

// The founder records the token it formed the cluster with under an id,
// living token_ttl.
func TestFormationToken(t *testing.T) {
	tok := mustToken(t)
	m, fc, _ := leading(t, Config{JoinToken: tok, TokenTTL: time.Hour})
	before := time.Now()
	m.Announce(testContext(t), true)
	tk, ok := fc.s.Token(transport.TokenHash(tok))
	if !ok || tk.ID == "" || tk.Uses != 0 || tk.CreatedAt.Before(before) || !tk.ExpiresAt.Equal(tk.CreatedAt.Add(time.Hour)) {
		t.Fatalf("formation token %+v, %v", tk, ok)
	}
	if c := newTokenAdd(tok, 0, 0, time.Now()); !c.ExpiresAt.IsZero() {
		t.Fatalf("without a ttl the token expires at %v", c.ExpiresAt)
	}
}

// A one-node cluster knows no other voter to send newcomers to.
func TestIssuerAlone(t *testing.T) {
	s := newSeed(t)
	a := &admission{m: s.m, spent: map[string]time.Time{}}
	if got := a.issuer(); got != "" {
		t.Fatalf("the only voter sends newcomers to %q", got)
	}
}

func mustToken(t *testing.T) string {
	t.Helper()
	tok, err := transport.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestAdvertiseIP(t *testing.T) {
	if ip, err := AdvertiseIP("10.1.2.3"); err != nil || ip != "10.1.2.3" {
		t.Fatalf("configured: %q, %v", ip, err)
	}
	if ip, err := AdvertiseIP(""); err != nil || net.ParseIP(ip) == nil {
		t.Fatalf("picked %q, %v", ip, err)
	}
}
