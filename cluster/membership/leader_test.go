package membership

import (
	"context"
	"testing"
	"time"

	"ssi/cluster/discovery"
	"ssi/cluster/telemetry"
	"ssi/cluster/transport"
	"ssi/raftstore"
)

// The node that formed the cluster records its token and the home's
// limits, then registers: it is a node of the state, up, heard from.
func TestAnnounceFormed(t *testing.T) {
	tok, _ := transport.NewToken()
	m, fc, tel := leading(t, Config{JoinToken: tok, HomeQuota: 1 << 20})
	m.Announce(testContext(t), true)
	if !fc.s.HasToken(transport.TokenHash(tok)) {
		t.Fatal("token not recorded")
	}
	if q := fc.s.HomeStatfs().Quota; q != 1<<20 {
		t.Fatalf("home quota %d, want 1 MiB", q)
	}
	if got := m.TokenHashes(); len(got) != 1 || got[0] != transport.TokenHash(tok) {
		t.Fatalf("token hashes %v", got)
	}
	n, ok := fc.s.Node("n1")
	if !ok || n.State != raftstore.NodeUp || n.Addr != fc.s.Addr() || n.CPUs == 0 {
		t.Fatalf("n1 = %+v, %v", n, ok)
	}
	if _, ok := tel.Get("n1"); !ok {
		t.Fatal("n1 not counted as heard from")
	}
	if b := m.Beacon(); b.State != discovery.StateMember {
		t.Fatalf("a member's beacon says %q", b.State)
	}
	// Announcing again (a restart) finds the token there.
	m.Announce(testContext(t), true)
}

// A registering node becomes a Raft server (a non-voter past the voter
// count) and a node; registering again keeps when it first joined.
func TestHandleJoin(t *testing.T) {
	_, fc, _ := leading(t, Config{})
	register(t, fc, "n2", "127.0.0.1:2")
	first, _ := fc.s.Node("n2")
	register(t, fc, "n2", "127.0.0.1:2")
	again, ok := fc.s.Node("n2")
	if !ok || again.State != raftstore.NodeUp || again.CPUs != 2 || !again.JoinedAt.Equal(first.JoinedAt) {
		t.Fatalf("n2 = %+v (first %v)", again, first.JoinedAt)
	}
	servers, err := fc.s.Servers()
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range servers {
		if srv.ID == "n2" && !srv.Voter && srv.Addr == "127.0.0.1:2" {
			return
		}
	}
	t.Fatalf("n2 is not a non-voter: %+v", servers)
}

// A name taken by a node that is up and heard from is refused; a silent
// one may come back, and so may this node's own name.
func TestAdmit(t *testing.T) {
	m, fc, tel := leading(t, Config{})
	register(t, fc, "n2", "127.0.0.1:2")
	if err := m.Admit("n2", nil); err == nil {
		t.Fatal("admitted a second n2")
	}
	tel.Forget("n2")
	if err := m.Admit("n2", nil); err != nil {
		t.Fatalf("n2 gone silent: %v", err)
	}
	if err := m.Admit("n1", nil); err != nil {
		t.Fatalf("own name: %v", err)
	}
	if err := New(Config{}, &fakeCluster{}, telemetry.NewTable()).Admit("n3", nil); err == nil {
		t.Fatal("a node that is not a member admitted someone")
	}
}

// The leader marks a silent node down, brings it back up when it is
// heard from, and removes it once it is gone longer than remove_after.
func TestReconcile(t *testing.T) {
	m, fc, tel := leading(t, Config{TelemetryInterval: 10 * time.Millisecond, RemoveAfter: time.Hour})
	ctx := testContext(t)
	register(t, fc, "n1", fc.s.Addr())
	register(t, fc, "n2", "127.0.0.1:2")
	state := func() raftstore.NodeState { n, _ := fc.s.Node("n2"); return n.State }

	if err := m.reconcile(ctx, fc.s, time.Now()); err != nil || state() != raftstore.NodeUp {
		t.Fatalf("just registered: %v, %v", state(), err)
	}
	tel.Forget("n2")
	longAgo := time.Now().Add(-time.Minute)
	if err := m.reconcile(ctx, fc.s, longAgo); err != nil || state() != raftstore.NodeDown {
		t.Fatalf("silent: %v, %v", state(), err)
	}
	tel.Put(telemetry.Sample{Node: "n2", At: time.Now()})
	if err := m.reconcile(ctx, fc.s, longAgo); err != nil || state() != raftstore.NodeUp {
		t.Fatalf("heard again: %v, %v", state(), err)
	}
	tel.Forget("n2")
	m.cfg.RemoveAfter = time.Second
	if err := m.reconcile(ctx, fc.s, longAgo); err != nil {
		t.Fatal(err)
	}
	if _, ok := fc.s.Node("n2"); ok {
		t.Fatal("n2 not removed")
	}
	if n, ok := fc.s.Node("n1"); !ok || n.State != raftstore.NodeUp {
		t.Fatal("the leader removed or downed itself")
	}
}

// The loop runs the housekeeping while this node leads: a node that
// registered and went silent is soon marked down.
func TestLeaderLoop(t *testing.T) {
	m, fc, tel := leading(t, Config{TelemetryInterval: 10 * time.Millisecond, RemoveAfter: time.Hour})
	register(t, fc, "n1", fc.s.Addr())
	register(t, fc, "n2", "127.0.0.1:2")
	tel.Forget("n2")
	ctx, cancel := context.WithCancel(testContext(t))
	done := make(chan struct{})
	go func() { m.LeaderLoop(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	for {
		changed := fc.s.Changed()
		if n, _ := fc.s.Node("n2"); n.State == raftstore.NodeDown {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			t.Fatal("n2 never marked down")
		}
	}
}
