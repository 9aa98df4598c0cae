package raftstore

import (
	"errors"
	"testing"
	"time"
)

func TestTokenLifecycle(t *testing.T) {
	h := HashToken("secret")
	f := newTestFSM()
	f.must(t, TokenAdd{Hash: h, ID: "t1", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour), Uses: 2})
	r := stateReader{f.fsm}
	f.must(t, TokenUse{Hash: h, At: t0.Add(time.Minute)})
	if tok, _ := r.Token(h); tok.Used != 1 || tok.Status(t0) != TokenValid {
		t.Fatalf("after one use: %+v", tok)
	}
	if res := f.apply(t, TokenUse{Hash: h, At: t0.Add(2 * time.Hour)}); !errors.Is(res.err, ErrTokenSpent) {
		t.Fatalf("use after expiry: %v, want ErrTokenSpent", res.err)
	}
	f.must(t, TokenUse{Hash: h, At: t0})
	if res := f.apply(t, TokenUse{Hash: h, At: t0}); !errors.Is(res.err, ErrTokenSpent) {
		t.Fatalf("third use of a two-use token: %v", res.err)
	}
	if tok, _ := r.Token(h); tok.Status(t0) != TokenUsedUp || tok.Status(t0.Add(time.Hour)) != TokenExpired {
		t.Fatalf("status: %+v", tok)
	}
	f.must(t, TokenRevoke{Key: "t1"})
	if tok, _ := r.Token(h); tok.Status(t0) != TokenRevoked {
		t.Fatalf("after revoke: %+v", tok)
	}
	if res := f.apply(t, TokenRevoke{Key: "nope"}); !errors.Is(res.err, ErrNotFound) {
		t.Fatalf("revoke unknown: %v", res.err)
	}
	if res := f.apply(t, TokenAdd{Hash: HashToken("other"), ID: "t1", CreatedAt: t0}); !errors.Is(res.err, ErrExists) {
		t.Fatalf("duplicate id: %v", res.err)
	}
}

func TestRemovedNodesCertsAreRevoked(t *testing.T) {
	f := newTestFSM()
	f.must(t, twoNodes()...)
	f.must(t,
		CertIssue{Serial: "a1", Node: "n1", NotAfter: t0.Add(time.Hour), At: t0},
		CertIssue{Serial: "b1", Node: "n2", NotAfter: t0.Add(time.Hour), At: t0},
		CertIssue{Serial: "b2", Node: "n2", NotAfter: t0.Add(2 * time.Hour), At: t0},
	)
	r := stateReader{f.fsm}
	if r.CertRevoked("b1") {
		t.Fatal("b1 revoked before its node was removed")
	}
	f.must(t, NodeRemove{Name: "n2", At: t0})
	if !r.CertRevoked("b1") || !r.CertRevoked("b2") || r.CertRevoked("a1") {
		t.Fatalf("after removing n2: %+v", r.Certs())
	}
	// A later issue drops the records of certificates expired by then.
	f.must(t, CertIssue{Serial: "a2", Node: "n1", NotAfter: t0.Add(3 * time.Hour), At: t0.Add(90 * time.Minute)})
	if got := len(r.Certs()); got != 2 {
		t.Fatalf("want b2 and a2 left, got %+v", r.Certs())
	}
	f.must(t, CertRevoke{Serial: "ff"})
	if !r.CertRevoked("ff") {
		t.Fatal("an unknown serial revoked is not refused")
	}
}
