package raftstore

import (
	"context"
	"errors"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"ssi/raftstore/internal/testutil"
)

// someState is a workload touching every part of the state.
func someState() []Command {
	return append(twoNodes(),
		NodeUpsert{Name: "n3", Addr: "10.0.0.3:7000", CPUs: 1, JoinedAt: t0},
		AdminSet{Node: "n2", Switch: SwitchBlock, Value: true},
		AdminSet{Node: "n3", Switch: SwitchStay, Value: true},
		NodeSetState{Name: "n3", State: NodeDown},
		ProcAdd{CPID: 100, Home: "n1", UID: 1000, Argv: []string{"make"}, StartedAt: t0},
		ProcAdd{Home: "n2", StartedAt: t0},
		ProcUpdate{CPID: 100, Lock: ptr(true)},
		MigrationStart{ID: "m1", CPID: 101, To: "n1", StartedAt: t0},
		TokenAdd{Hash: HashToken("join-me"), CreatedAt: t0},
	)
}

func TestClusterReplicatesAndForwards(t *testing.T) {
	c := newCluster(t, 3)
	leader := c.leader()

	servers, err := leader.store.Servers()
	if err != nil {
		t.Fatal(err)
	}
	if len(servers) != 3 || slices.ContainsFunc(servers, func(s Server) bool { return !s.Voter }) {
		t.Fatalf("servers = %+v, want 3 voters", servers)
	}

	res := c.mustApply(someState()...)
	for _, nd := range c.followers() {
		if err := nd.store.WaitApplied(testutil.Context(t), res[len(res)-1].Index); err != nil {
			t.Fatal(err)
		}
	}
	want := viewOf(leader.store)
	if len(want.Nodes) != 3 || len(want.Procs) != 2 || len(want.Migrations) != 1 || len(want.Tokens) != 1 {
		t.Fatalf("leader view = %+v", want)
	}
	c.sameView(want)

	follower := c.followers()[0]
	_, err = follower.store.Apply(testutil.Context(t), NodeRemove{Name: "n1"})
	var nle *NotLeaderError
	if !errors.Is(err, ErrNotLeader) || !errors.As(err, &nle) || nle.LeaderID != leader.id || nle.LeaderAddr != leader.addr {
		t.Fatalf("apply on follower: %v, want NotLeaderError naming %s at %s", err, leader.id, leader.addr)
	}
	if _, ok := follower.store.Node("n1"); !ok {
		t.Fatal("refused apply changed the state")
	}

	// Forwarding: the follower encodes, the leader applies the bytes.
	b, err := EncodeCommand(ProcAdd{CPID: 100, Home: "n3", Argv: []string{"fwd"}, StartedAt: t0})
	if err != nil {
		t.Fatal(err)
	}
	fres, err := leader.store.ApplyEncoded(testutil.Context(t), b)
	if err != nil || fres.CPID != 102 {
		t.Fatalf("forwarded proc add: %+v, %v; want cpid 102 (100 is taken)", fres, err)
	}
	if err := follower.store.WaitApplied(testutil.Context(t), fres.Index); err != nil {
		t.Fatal(err)
	}
	if p, ok := follower.store.Proc(102); !ok || p.Home != "n3" || !slices.Equal(p.Argv, []string{"fwd"}) {
		t.Fatalf("follower proc 102 = %+v, %v", p, ok)
	}

	// A state error comes back as the result, with the entry's index.
	sres, err := leader.store.Apply(testutil.Context(t), MigrationStart{ID: "m2", CPID: 101, To: "n3"})
	if !errors.Is(err, ErrBusy) || sres.Index == 0 {
		t.Fatalf("second migration: %+v, %v; want ErrBusy at an index", sres, err)
	}
}

func TestApplyEncodedRejectsBadBytes(t *testing.T) {
	c := newCluster(t, 1)
	s := c.leader().store
	good, err := EncodeCommand(NodeRemove{Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	before := s.LastIndex()
	for name, b := range map[string][]byte{
		"garbage":         []byte("\x07\x01{not json"),
		"unknown type":    append([]byte{250, 1}, good[2:]...),
		"unknown version": append([]byte{good[0], 9}, good[2:]...),
		"short":           {good[0]},
	} {
		if _, err := s.ApplyEncoded(testutil.Context(t), b); !errors.Is(err, ErrBadCommand) {
			t.Errorf("%s: err = %v, want ErrBadCommand", name, err)
		}
	}
	if got := s.LastIndex(); got != before {
		t.Fatalf("last index %d -> %d: rejected bytes reached the log", before, got)
	}
}

func TestLeaderFailoverAndCatchUp(t *testing.T) {
	c := newCluster(t, 3)
	c.mustApply(twoNodes()...)
	old := c.sync()
	c.stop(old)

	newLeader := c.leader()
	if newLeader == old {
		t.Fatal("stopped node still leads")
	}
	id, addr, err := c.followers()[0].store.WaitForLeader(testutil.Context(t))
	if err != nil || id != newLeader.id || addr != newLeader.addr {
		t.Fatalf("WaitForLeader = %s %s %v, want %s", id, addr, err, newLeader.id)
	}
	c.mustApply(ProcAdd{Home: "n1", StartedAt: t0}, AdminSet{Node: "n1", Switch: SwitchExpel, Value: true})

	// The old leader comes back from its data dir, without bootstrap,
	// and catches up with what was committed while it was away.
	c.start(c.index(old), false)
	c.sync()
	want := viewOf(c.leader().store)
	if n, _ := c.leader().store.Node("n1"); !n.Admin.Expel || len(want.Procs) != 1 {
		t.Fatalf("leader view = %+v", want)
	}
	c.sameView(want)
}

func TestRestartAllKeepsState(t *testing.T) {
	c := newCluster(t, 3)
	c.mustApply(someState()...)
	c.sync()
	// A snapshot on one node: its restart goes through snapshot + log.
	if err := c.nodes[1].store.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if snaps, _ := filepath.Glob(filepath.Join(c.nodes[1].dir, "snapshots", "*", "state.bin")); len(snaps) != 1 {
		t.Fatalf("snapshots = %v, want one", snaps)
	}
	c.mustApply(ProcAdd{Home: "n3", StartedAt: t0}, TokenRemove{Hash: HashToken("join-me")})
	want := viewOf(c.sync().store)

	for _, nd := range c.nodes {
		c.stop(nd)
	}
	for i := range c.nodes {
		// Bootstrap is ignored on a data dir with state.
		c.start(i, i == 0)
	}
	c.sync()
	c.sameView(want)
	c.mustApply(ProcAdd{Home: "n1", StartedAt: t0})
	if servers, err := c.leader().store.Servers(); err != nil || len(servers) != 3 {
		t.Fatalf("servers after restart = %+v, %v", servers, err)
	}
}

func TestLeaderChangesAndClose(t *testing.T) {
	c := newCluster(t, 1)
	s := c.leader().store
	ch, stop := s.LeaderChanges()
	defer stop()
	if v := <-ch; !v {
		t.Fatal("first value on the leader is false")
	}
	ch2, _ := s.LeaderChanges()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	c.nodes[0].store = nil
	// The subscription ends with the store: drain to the close.
	deadline := time.After(5 * time.Second)
	for open := true; open; {
		select {
		case _, open = <-ch2:
		case <-deadline:
			t.Fatal("subscription not closed by Close")
		}
	}
	if _, err := s.Apply(context.Background(), NodeRemove{Name: "x"}); !errors.Is(err, ErrClosed) {
		t.Fatalf("apply after close: %v, want ErrClosed", err)
	}
	if err := s.WaitApplied(context.Background(), 1<<40); !errors.Is(err, ErrClosed) {
		t.Fatalf("wait after close: %v, want ErrClosed", err)
	}
}

func TestWaitAppliedHonoursContext(t *testing.T) {
	c := newCluster(t, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := c.leader().store.WaitApplied(ctx, c.leader().store.LastIndex()+100)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	ok := Config{NodeID: "n", Addr: "127.0.0.1:7000", DataDir: t.TempDir(), Layer: testutil.TCPLayer{}}
	for name, mut := range map[string]func(*Config){
		"no id":       func(c *Config) { c.NodeID = "" },
		"no dir":      func(c *Config) { c.DataDir = "" },
		"no layer":    func(c *Config) { c.Layer = nil },
		"no port":     func(c *Config) { c.Addr = "127.0.0.1" },
		"wildcard":    func(c *Config) { c.Addr = "0.0.0.0:7000" },
		"port zero":   func(c *Config) { c.Addr = "127.0.0.1:0" },
		"bad timings": func(c *Config) { c.LeaderLeaseTimeout = 2 * time.Second },
	} {
		cfg := ok
		mut(&cfg)
		if _, err := Open(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: err = %v, want ErrConfig", name, err)
		}
	}
}

// A node that was away while the leader compacted its log catches up
// from a snapshot sent over the wire, and WaitApplied sees it through.
func TestCatchUpFromInstalledSnapshot(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) { cfg.TrailingLogs = 1 })
	c.mustApply(twoNodes()...)
	leader := c.sync()
	away := c.followers()[0]
	c.stop(away)

	res := c.mustApply(someState()[2:]...)
	if err := leader.store.Snapshot(); err != nil {
		t.Fatal(err)
	}
	last := res[len(res)-1].Index
	c.start(c.index(away), false)
	if err := away.store.WaitApplied(testutil.Context(t), last); err != nil {
		t.Fatal(err)
	}
	if got, want := viewOf(away.store), viewOf(leader.store); !reflect.DeepEqual(got, want) {
		t.Fatalf("caught-up node shows\n%+v\nwant\n%+v", got, want)
	}
}

func TestNotLeaderWithoutLeader(t *testing.T) {
	err := error(&NotLeaderError{})
	if !errors.Is(err, ErrNotLeader) || !errors.Is(err, ErrNoLeader) {
		t.Fatalf("%v: want both ErrNotLeader and ErrNoLeader", err)
	}
	if errors.Is(&NotLeaderError{LeaderID: "a", LeaderAddr: "b:1"}, ErrNoLeader) {
		t.Fatal("known leader reported as no leader")
	}
}
