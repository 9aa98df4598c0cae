package raftstore

import (
	"context"
	"fmt"

	"github.com/hashicorp/raft"
)

// Server is one member of the raft configuration.
type Server struct {
	ID    string `json:"id"`
	Addr  string `json:"addr"`
	Voter bool   `json:"voter"`
}

// members changes the raft configuration: who votes, who only
// listens, who leads. It owns the leadership watch behind LeaderChanges;
// the agreed state's own record of nodes (Node, NodeUpsert) is not its
// business.
type members struct {
	*raftNode
	leader *leaderWatch // set by Open once raft runs
}

// Servers returns the raft configuration as this node last saw it (on
// followers it can lag the leader's by a moment).
func (m *members) Servers() ([]Server, error) {
	f := m.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raft configuration: %w", m.mapErr(err))
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
func (m *members) AddVoter(ctx context.Context, id, addr string) error {
	return m.membership(ctx, "add voter "+id, func() raft.IndexFuture {
		return m.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, enqueueTimeout(ctx))
	})
}

// AddNonvoter adds a member that receives the log but does not vote.
// Leader only.
func (m *members) AddNonvoter(ctx context.Context, id, addr string) error {
	return m.membership(ctx, "add nonvoter "+id, func() raft.IndexFuture {
		return m.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(addr), 0, enqueueTimeout(ctx))
	})
}

// RemoveServer removes a member from the raft configuration. Leader only;
// a leader may remove itself, after which it steps down.
func (m *members) RemoveServer(ctx context.Context, id string) error {
	return m.membership(ctx, "remove server "+id, func() raft.IndexFuture {
		return m.raft.RemoveServer(raft.ServerID(id), 0, enqueueTimeout(ctx))
	})
}

func (m *members) membership(ctx context.Context, what string, start func() raft.IndexFuture) error {
	if err := m.leaderOnly(ctx); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := m.wait(ctx, start()); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// TransferLeadership hands leadership to another voter, for a leader that
// is about to stop or leave. Leader only.
func (m *members) TransferLeadership(ctx context.Context) error {
	if err := m.leaderOnly(ctx); err != nil {
		return fmt.Errorf("transfer leadership: %w", err)
	}
	if err := m.wait(ctx, m.raft.LeadershipTransfer()); err != nil {
		return fmt.Errorf("transfer leadership: %w", err)
	}
	return nil
}
