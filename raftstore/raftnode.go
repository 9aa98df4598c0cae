package raftstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// pollInterval paces the waits that have no notification to wake them:
// another node's election and raft's applied index.
const pollInterval = 10 * time.Millisecond

// raftNode is this node's raft instance as the rest of the store sees
// it: its role and indexes, its log, snapshots on demand, and the one
// place where raft's futures and errors become this package's. Store and
// the parts embedded in it share one raftNode; it owns no agreed state.
type raftNode struct {
	raft *raft.Raft
	// logs is raft's log store, with its cache: WaitApplied looks up
	// the kind of entries in it.
	logs   raft.LogStore
	closed chan struct{} // closed by Store.Close
}

// IsLeader reports whether this node is the leader right now.
func (n *raftNode) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the leader's ID and address as this node knows them,
// both empty when no leader is known.
func (n *raftNode) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// WaitForLeader returns the leader once one is known, or ctx's error.
func (n *raftNode) WaitForLeader(ctx context.Context) (id, addr string, err error) {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		if id, addr = n.Leader(); addr != "" {
			return id, addr, nil
		}
		select {
		case <-t.C:
		case <-n.closed:
			return "", "", ErrClosed
		case <-ctx.Done():
			return "", "", fmt.Errorf("wait for leader: %w", ctx.Err())
		}
	}
}

// AppliedIndex returns the index of the last entry raft has applied on
// this node (see WaitApplied for a wait that is exact).
func (n *raftNode) AppliedIndex() uint64 { return n.raft.AppliedIndex() }

// LastIndex returns the index of the last entry in this node's log,
// committed or not.
func (n *raftNode) LastIndex() uint64 { return n.raft.LastIndex() }

// Snapshot takes a snapshot now and compacts the log behind it, instead
// of waiting for SnapshotThreshold. Nothing new to snapshot is not an
// error.
func (n *raftNode) Snapshot() error {
	err := n.raft.Snapshot().Error()
	if err == nil || errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	return fmt.Errorf("snapshot: %w", n.mapErr(err))
}

// Stats returns raft's counters (state, term, indexes, peers...) for
// status pages and benchmarks.
func (n *raftNode) Stats() map[string]string { return n.raft.Stats() }

// leaderOnly fails fast, with the leader's address, on a follower.
func (n *raftNode) leaderOnly(ctx context.Context) error {
	select {
	case <-n.closed:
		return ErrClosed
	default:
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	return nil
}

func (n *raftNode) notLeader() error {
	addr, id := n.raft.LeaderWithID()
	return &NotLeaderError{LeaderID: string(id), LeaderAddr: string(addr)}
}

// enqueueTimeout is how long raft may wait to accept a command: the rest
// of ctx's time, or forever (0) without a deadline.
func enqueueTimeout(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return 0
}

// wait waits for a raft future or ctx, whichever ends first, and turns
// raft's errors into this package's.
func (n *raftNode) wait(ctx context.Context, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		return n.mapErr(err)
	case <-ctx.Done():
		return fmt.Errorf("outcome unknown: %w", ctx.Err())
	}
}

// mapErr keeps raft's error values inside the package. Errors without a
// counterpart are flattened to text on purpose (%v).
func (n *raftNode) mapErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrNotVoter):
		return n.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrAbortedByRestore):
		return ErrLeadershipLost
	case errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("leadership transfer in progress: %w", ErrNoLeader)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return ErrTimeout
	}
	return fmt.Errorf("raft: %v", err)
}
