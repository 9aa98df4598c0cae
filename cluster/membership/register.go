package membership

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"ssi/cluster/peer"
	"ssi/cluster/telemetry"
	"ssi/cluster/transport"
	"ssi/raftstore"
)

// JoinPath is where a member takes a node's registration (HandleJoin).
const JoinPath = "/v1/join"

// joinRequest registers a node with the leader.
type joinRequest struct {
	Name   string  `json:"name"`
	Addr   string  `json:"addr"`
	CPUs   float64 `json:"cpus"`
	Memory uint64  `json:"memory"`
}

// Announce records the token a new cluster was formed with and the
// home's limits, then registers this node with the leader. Registration
// needs a leader, hence a quorum: members restarting one by one must not
// wait for it, so the agent runs Announce in the background.
func (m *Membership) Announce(ctx context.Context, formed bool) {
	if formed && m.cfg.JoinToken != "" {
		m.record(ctx, "recording the join token",
			raftstore.TokenAdd{Hash: transport.TokenHash(m.cfg.JoinToken), CreatedAt: time.Now()}, raftstore.ErrExists)
	}
	if formed {
		m.record(ctx, "recording the home's limits",
			raftstore.HomeConfig{MaxFileSize: m.cfg.HomeMaxFileSize, Quota: m.cfg.HomeQuota}, nil)
	}
	if err := m.register(ctx); err == nil {
		m.log.Info("registered", "node", m.cfg.Node)
	}
}

// record applies cmd until it is in the state (exists: the error that
// says it already is), or ctx ends.
func (m *Membership) record(ctx context.Context, what string, cmd raftstore.Command, exists error) {
	_ = peer.Retry(ctx, 0, func() (bool, error) {
		_, err := m.c.Apply(ctx, cmd)
		if err == nil || errors.Is(err, exists) || ctx.Err() != nil {
			return true, nil
		}
		m.log.Warn(what, "err", err)
		return false, err
	})
}

// register tells the leader who and where this node is, until it has
// listened: a new node becomes a Raft server and a node in the state, a
// returning one gets its address and resources refreshed.
func (m *Membership) register(ctx context.Context) error {
	s := telemetry.NewSampler(m.cfg.Node).Sample(time.Now())
	req := joinRequest{Name: m.cfg.Node, Addr: m.cfg.Advertise, CPUs: s.CPUs, Memory: s.MemTotal}
	body, _ := json.Marshal(req)
	return peer.Retry(ctx, 200*time.Millisecond, func() (bool, error) {
		// A new node does not know the leader until it is a Raft server:
		// it asks any member it knows, which passes the request on.
		var err error
		for _, t := range m.registerTargets() {
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = m.c.Post(sctx, t, JoinPath, body, nil)
			cancel()
			if err == nil {
				return true, nil
			}
		}
		m.log.Debug("registering with the leader", "err", err)
		return false, err
	})
}

// registerTargets are the members to register with: the leader if known,
// else the member we joined through and those in our Raft configuration.
func (m *Membership) registerTargets() []string {
	s, err := m.c.Store()
	if err != nil {
		return nil
	}
	if _, addr := s.Leader(); addr != "" {
		return []string{addr}
	}
	var out []string
	m.mu.Lock()
	if m.joinedVia != "" {
		out = append(out, m.joinedVia)
	}
	m.mu.Unlock()
	servers, _ := s.Servers()
	for _, srv := range servers {
		if srv.ID != m.cfg.Node {
			out = append(out, srv.Addr)
		}
	}
	return out
}
