package raftstore

import (
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"testing"
	"time"

	"ssi/raftstore/internal/testutil"
)

type testNode struct {
	id, addr, dir string
	store         *Store // nil while stopped
}

// testCluster is N stores in this process talking raft over loopback
// TCP, with timings tight enough for tests.
type testCluster struct {
	t     *testing.T
	log   *slog.Logger
	nodes []*testNode
	tweak func(*Config) // changes every node's config, when set
}

// newCluster starts n nodes: node0 bootstraps, the others join as voters.
func newCluster(t *testing.T, n int, tweak ...func(*Config)) *testCluster {
	c := &testCluster{t: t, log: testutil.Logger(t)}
	if len(tweak) > 0 {
		c.tweak = tweak[0]
	}
	for i := range n {
		c.nodes = append(c.nodes, &testNode{id: fmt.Sprintf("node%d", i), addr: "127.0.0.1:0", dir: t.TempDir()})
	}
	c.start(0, true)
	leader := c.leader()
	for _, nd := range c.nodes[1:] {
		c.start(c.index(nd), false)
		if err := leader.store.AddVoter(testutil.Context(t), nd.id, nd.addr); err != nil {
			t.Fatalf("add voter %s: %v", nd.id, err)
		}
	}
	c.sync()
	return c
}

func (c *testCluster) index(nd *testNode) int {
	for i, x := range c.nodes {
		if x == nd {
			return i
		}
	}
	panic("node not in cluster")
}

// start opens node i on its data dir and address (a fresh port the
// first time, the same one after).
func (c *testCluster) start(i int, bootstrap bool) *testNode {
	c.t.Helper()
	nd := c.nodes[i]
	ln, err := net.Listen("tcp", nd.addr)
	if err != nil {
		c.t.Fatalf("listen %s: %v", nd.addr, err)
	}
	nd.addr = ln.Addr().String()
	cfg := Config{
		NodeID: nd.id, Addr: nd.addr, DataDir: nd.dir, Layer: testutil.TCPLayer{Listener: ln},
		Logger: c.log.With("node", nd.id), Bootstrap: bootstrap,
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
	}
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		ln.Close()
		c.t.Fatalf("open %s: %v", nd.id, err)
	}
	c.t.Cleanup(func() { _ = s.Close() })
	nd.store = s
	return nd
}

func (c *testCluster) stop(nd *testNode) {
	c.t.Helper()
	if err := nd.store.Close(); err != nil {
		c.t.Fatalf("close %s: %v", nd.id, err)
	}
	nd.store = nil
}

func (c *testCluster) running() []*testNode {
	var out []*testNode
	for _, nd := range c.nodes {
		if nd.store != nil {
			out = append(out, nd)
		}
	}
	return out
}

// leader waits until exactly one running node leads and the others
// agree on it.
func (c *testCluster) leader() *testNode {
	c.t.Helper()
	var leader *testNode
	testutil.WaitFor(c.t, "a leader all running nodes know", func() bool {
		leader = nil
		for _, nd := range c.running() {
			if nd.store.IsLeader() {
				if leader != nil {
					return false
				}
				leader = nd
			}
		}
		if leader == nil {
			return false
		}
		for _, nd := range c.running() {
			if id, addr := nd.store.Leader(); id != leader.id || addr != leader.addr {
				return false
			}
		}
		return true
	})
	return leader
}

func (c *testCluster) followers() []*testNode {
	var out []*testNode
	for _, nd := range c.running() {
		if !nd.store.IsLeader() {
			out = append(out, nd)
		}
	}
	return out
}

// sync waits until every running node has applied everything the leader
// has, and returns the leader.
func (c *testCluster) sync() *testNode {
	c.t.Helper()
	leader := c.leader()
	idx, err := leader.store.ReadIndex(testutil.Context(c.t))
	if err != nil {
		c.t.Fatalf("read index: %v", err)
	}
	for _, nd := range c.running() {
		if err := nd.store.WaitApplied(testutil.Context(c.t), idx); err != nil {
			c.t.Fatalf("%s: %v", nd.id, err)
		}
	}
	return leader
}

func (c *testCluster) mustApply(cmds ...Command) []Result {
	c.t.Helper()
	leader := c.leader()
	var out []Result
	for _, cmd := range cmds {
		res, err := leader.store.Apply(testutil.Context(c.t), cmd)
		if err != nil {
			c.t.Fatalf("apply %T on %s: %v", cmd, leader.id, err)
		}
		out = append(out, res)
	}
	return out
}

// view is everything a Store shows, for comparing replicas.
type view struct {
	Nodes      []Node
	Procs      []Proc
	Migrations []Migration
	Tokens     []TokenHash
	NextCPID   int
}

func viewOf(s *Store) view {
	return view{s.Nodes(), s.Procs(), s.Migrations(), s.TokenHashes(), s.NextCPID()}
}

// sameView fails unless every running node shows want.
func (c *testCluster) sameView(want view) {
	c.t.Helper()
	for _, nd := range c.running() {
		if got := viewOf(nd.store); !reflect.DeepEqual(got, want) {
			c.t.Fatalf("%s shows\n%+v\nwant\n%+v", nd.id, got, want)
		}
	}
}
