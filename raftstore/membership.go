package raftstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"
)

// Server is one member of the raft configuration.
type Server struct {
	ID    string `json:"id"`
	Addr  string `json:"addr"`
	Voter bool   `json:"voter"`
}

// IsLeader reports whether this node is the leader right now.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// Leader returns the leader's ID and address as this node knows them,
// both empty when no leader is known.
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// Servers returns the raft configuration as this node last saw it (on
// followers it can lag the leader's by a moment).
func (s *Store) Servers() ([]Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", s.mapErr(err))
	}
	servers := f.Configuration().Servers
	out := make([]Server, 0, len(servers))
	for _, sv := range servers {
		out = append(out, Server{ID: string(sv.ID), Addr: string(sv.Address), Voter: sv.Suffrage == raft.Voter})
	}
	return out, nil
}

// AddVoter adds a voting member, or updates the address of a known one.
// Leader only. The new node must already run Open with an empty DataDir
// and no Bootstrap; it then receives the log (or a snapshot) from the
// leader.
func (s *Store) AddVoter(ctx context.Context, id, addr string) error {
	return s.membership(ctx, "add voter "+id, func() raft.IndexFuture {
		return s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, enqueueTimeout(ctx))
	})
}

// AddNonvoter adds a member that receives the log but does not vote.
// Leader only.
func (s *Store) AddNonvoter(ctx context.Context, id, addr string) error {
	return s.membership(ctx, "add nonvoter "+id, func() raft.IndexFuture {
		return s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, enqueueTimeout(ctx))
	})
}

// RemoveServer removes a member from the raft configuration. Leader only;
// a leader may remove itself, after which it steps down.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	return s.membership(ctx, "remove server "+id, func() raft.IndexFuture {
		return s.raft.RemoveServer(raft.ServerID(id), 0, enqueueTimeout(ctx))
	})
}

func (s *Store) membership(ctx context.Context, what string, start func() raft.IndexFuture) error {
	if err := s.leaderOnly(ctx); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := s.wait(ctx, start()); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// TransferLeadership hands leadership to another voter, for a leader that
// is about to stop or leave. Leader only.
func (s *Store) TransferLeadership(ctx context.Context) error {
	if err := s.leaderOnly(ctx); err != nil {
		return fmt.Errorf("transfer leadership: %w", err)
	}
	if err := s.wait(ctx, s.raft.LeadershipTransfer()); err != nil {
		return fmt.Errorf("transfer leadership: %w", err)
	}
	return nil
}

// Snapshot takes a snapshot now and compacts the log behind it, instead
// of waiting for SnapshotThreshold. Nothing new to snapshot is not an
// error.
func (s *Store) Snapshot() error {
	err := s.raft.Snapshot().Error()
	if err == nil || errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	return fmt.Errorf("snapshot: %w", s.mapErr(err))
}

// Stats returns raft's counters (state, term, indexes, peers...) for
// status pages and benchmarks.
func (s *Store) Stats() map[string]string { return s.raft.Stats() }
