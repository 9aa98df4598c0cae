package raftstoretest

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"testing"
	"time"

	"ssi/raftstore"
	"ssi/raftstore/internal/testutil"
)

// Option changes how New opens its store.
type Option func(*options)

type options struct {
	nodeID string
	logger *slog.Logger
	tweaks []func(*raftstore.Config)
}

// WithNodeID names the store's node (its raft server ID); the default is
// "node1".
func WithNodeID(id string) Option { return func(o *options) { o.nodeID = id } }

// WithLogger sends the store's and raft's logs to l instead of t.Logf.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithConfig lets f change the Config just before Open, after New has
// filled it in (AskLeader, snapshot thresholds, other timings).
func WithConfig(f func(*raftstore.Config)) Option {
	return func(o *options) { o.tweaks = append(o.tweaks, f) }
}

// New opens a one-node store that has bootstrapped its own cluster and
// returns once it leads and has committed an entry of its term, so Apply
// and linearizable reads work at once. The store is closed when the test
// ends; a failure to open or to elect fails the test.
func New(t testing.TB, opts ...Option) *raftstore.Store {
	t.Helper()
	o := options{nodeID: "node1"}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		// Before the store's cleanup, so that the store is closed while
		// its logs still reach the test.
		o.logger = Logger(t)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("raftstoretest: listen: %v", err)
	}
	cfg := raftstore.Config{
		NodeID: o.nodeID, Addr: ln.Addr().String(), DataDir: t.TempDir(),
		Layer: testutil.TCPLayer{Listener: ln}, Logger: o.logger.With("node", o.nodeID), Bootstrap: true,
		// Tight enough that the node elects itself within a few hundred
		// milliseconds.
		HeartbeatTimeout: 100 * time.Millisecond, ElectionTimeout: 100 * time.Millisecond,
		LeaderLeaseTimeout: 50 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
	}
	for _, f := range o.tweaks {
		f(&cfg)
	}
	s, err := raftstore.Open(cfg)
	if err != nil {
		ln.Close()
		t.Fatalf("raftstoretest: open %s: %v", o.nodeID, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("raftstoretest: close %s: %v", o.nodeID, err)
		}
	})
	testutil.WaitFor(t, o.nodeID+" to lead", s.IsLeader)
	if err := s.ReadBarrier(testutil.Context(t)); err != nil {
		t.Fatalf("raftstoretest: %s: %v", o.nodeID, err)
	}
	return s
}

// Logger returns a logger that writes through t.Logf until the test's
// cleanups are done (raft goroutines may log while stores shut down, and
// t.Logf after the test has ended panics). Create it before what logs to
// it, so that its cleanup runs last.
func Logger(t testing.TB) *slog.Logger { return testutil.Logger(t) }

// Apply commits cmd on s, which must lead, and fails the test on any
// error, a state error (ErrNotFound, ErrBusy, ...) included.
func Apply(t testing.TB, s *raftstore.Store, cmd raftstore.Command) raftstore.Result {
	t.Helper()
	res, err := s.Apply(testutil.Context(t), cmd)
	if err != nil {
		t.Fatalf("raftstoretest: apply %v: %v", cmd.Type(), err)
	}
	return res
}

// AddNode records node name, reachable at addr, as up, as the leader does
// when a node joins; it gets one CPU and 1 GiB of memory. Apply a
// raftstore.NodeUpsert directly for other facts.
func AddNode(t testing.TB, s *raftstore.Store, name, addr string) {
	t.Helper()
	Apply(t, s, raftstore.NodeUpsert{Name: name, Addr: addr, State: raftstore.NodeUp,
		CPUs: 1, Memory: 1 << 30, JoinedAt: time.Now()})
}

// AddProc registers a cluster process and returns the cpid the store
// assigned. Its home (and node, when set) must have been added first.
func AddProc(t testing.TB, s *raftstore.Store, c raftstore.ProcAdd) int {
	t.Helper()
	return Apply(t, s, c).CPID
}

// Local is the cluster as the agent's packages see it (their Cluster
// interfaces) when s is the whole of it: applies go straight to s, which
// leads, and the read barrier is s's own. Tests embed it and add what
// else their package asks of the cluster.
type Local struct{ S *raftstore.Store }

// Store is s.
func (l Local) Store() (*raftstore.Store, error) { return l.S, nil }

// Apply applies cmd on s and answers its result as the agent's apply
// does, in JSON.
func (l Local) Apply(ctx context.Context, cmd raftstore.Command) (json.RawMessage, error) {
	res, err := l.S.Apply(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return json.Marshal(res)
}

// Fresh passes s's read barrier; a one-node cluster is never stale.
func (l Local) Fresh(ctx context.Context) (bool, error) { return false, l.S.ReadBarrier(ctx) }

// CatchUp passes s's read barrier.
func (l Local) CatchUp(ctx context.Context) error { return l.S.ReadBarrier(ctx) }
