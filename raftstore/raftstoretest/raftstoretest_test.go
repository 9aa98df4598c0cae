package raftstoretest_test

import (
	"errors"
	"slices"
	"testing"

	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

func TestNewLeadsAndApplies(t *testing.T) {
	s := raftstoretest.New(t)
	if !s.IsLeader() {
		t.Fatal("New returned a store that does not lead")
	}
	if id, addr := s.Leader(); id != "node1" || addr != s.Addr() {
		t.Fatalf("leader %q at %q, want node1 at %q", id, addr, s.Addr())
	}

	raftstoretest.AddNode(t, s, "node1", s.Addr())
	raftstoretest.AddNode(t, s, "node2", "127.0.0.1:2")
	cpid := raftstoretest.AddProc(t, s, raftstore.ProcAdd{Home: "node1", Node: "node2", UID: 1000, Argv: []string{"sleep", "1"}})

	n, ok := s.Node("node2")
	if !ok || n.State != raftstore.NodeUp || n.Addr != "127.0.0.1:2" {
		t.Fatalf("node2 = %+v, %v; want up at 127.0.0.1:2", n, ok)
	}
	p, ok := s.Proc(cpid)
	if !ok || p.Home != "node1" || p.Node != "node2" || p.State != raftstore.ProcRunning || !slices.Equal(p.Argv, []string{"sleep", "1"}) {
		t.Fatalf("proc %d = %+v, %v", cpid, p, ok)
	}
	if got := s.NextCPID(); got != cpid+1 {
		t.Fatalf("next cpid %d, want %d", got, cpid+1)
	}
}

// A state error is the command's result, not a failure to commit: tests
// that expect one call Store.Apply themselves.
func TestStateErrorComesBack(t *testing.T) {
	s := raftstoretest.New(t, raftstoretest.WithNodeID("solo"))
	if id, _ := s.Leader(); id != "solo" {
		t.Fatalf("leader %q, want solo", id)
	}
	_, err := s.Apply(t.Context(), raftstore.ProcAdd{Home: "nowhere"})
	if !errors.Is(err, raftstore.ErrNotFound) {
		t.Fatalf("proc add on an unknown home: %v, want ErrNotFound", err)
	}
}

// Stores of one test are independent clusters.
func TestTwoStores(t *testing.T) {
	a := raftstoretest.New(t, raftstoretest.WithNodeID("a"))
	b := raftstoretest.New(t, raftstoretest.WithNodeID("b"), raftstoretest.WithConfig(func(c *raftstore.Config) {
		c.SnapshotThreshold = 1
	}))
	raftstoretest.AddNode(t, a, "a", a.Addr())
	if _, ok := b.Node("a"); ok {
		t.Fatal("b sees a's node")
	}
	if err := b.Snapshot(); err != nil {
		t.Fatal(err)
	}
}
