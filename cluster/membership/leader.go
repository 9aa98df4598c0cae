package membership

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/peer"
	"ssi/cluster/telemetry"
	"ssi/fs"
	"ssi/raftstore"
)

// HandleJoin (leader) makes a registering node a Raft server, a voter
// while there are fewer than Config.Voters, and records it as up with
// its resources. It is idempotent: a returning node is only refreshed.
// A node registers only itself: the name must be its certificate's. A
// member that does not lead redirects the node to the leader, which must
// see the node's own certificate (passing the request on would show the
// leader the forwarder's).
func (m *Membership) HandleJoin(w http.ResponseWriter, r *http.Request) {
	s, err := m.c.Store()
	if err != nil {
		api.WriteError(w, http.StatusServiceUnavailable, err)
		return
	}
	var req joinRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		api.WriteError(w, http.StatusBadRequest, err)
		return
	}
	caller, serial := peer.Caller(api.ConnOf(r))
	if req.Name != caller || (serial != "" && s.CertRevoked(serial)) {
		m.log.Warn("refused a registration", "peer", caller, "name", req.Name, "addr", req.Addr)
		api.WriteErrno(w, fmt.Errorf("%w: %q may not register as %q", fs.ErrPermission, caller, req.Name))
		return
	}
	if !s.IsLeader() {
		if _, addr := s.Leader(); addr != "" {
			http.Redirect(w, r, "http://"+addr+JoinPath, http.StatusTemporaryRedirect)
			return
		}
		api.WriteError(w, http.StatusServiceUnavailable, raftstore.ErrNoLeader)
		return
	}
	if err := m.addServer(r.Context(), s, req.Name, req.Addr); err != nil {
		api.WriteError(w, http.StatusMisdirectedRequest, err)
		return
	}
	// Admin switches and the first join time survive a re-registration.
	up := raftstore.NodeUpsert{Name: req.Name, Addr: req.Addr, State: raftstore.NodeUp,
		CPUs: req.CPUs, Memory: req.Memory, JoinedAt: time.Now(), UsersDigest: req.UsersDigest}
	up.Speed = req.Speed
	if old, ok := s.Node(req.Name); ok {
		up.JoinedAt = old.JoinedAt
		if up.Speed <= 0 {
			up.Speed = old.Speed
		}
	}
	if _, err := s.Apply(r.Context(), up); err != nil {
		api.WriteError(w, peer.ApplyStatus(err), err)
		return
	}
	// Count the node as heard from now, so the leader does not mark it
	// down before its first sample arrives.
	m.tel.Put(telemetry.Sample{Node: req.Name, CPUs: req.CPUs, MemTotal: req.Memory, At: time.Now()})
	m.log.Info("node registered", "node", req.Name, "addr", req.Addr)
	api.WriteJSON(w, http.StatusOK, joinReply{UsersWarning: m.checkUsers(s, req.Name, req.UsersDigest)})
}

// checkUsers warns when node's user database differs from the one most
// other nodes have: a uid would then name different users on different
// nodes, and members vouch for their users by uid. It returns the
// warning, for the node to say too ("" if none).
func (m *Membership) checkUsers(s *raftstore.Store, node, digest string) string {
	var others []string
	for _, n := range s.Nodes() {
		if n.Name != node {
			others = append(others, n.UsersDigest)
		}
	}
	want := MajorityDigest(others)
	if want == "" || digest == want {
		return ""
	}
	m.log.Warn(usersDiffer, "node", node, "users_digest", digest, "cluster_users_digest", want)
	return fmt.Sprintf("%s (%s: %.12s, cluster: %.12s)", usersDiffer, node, digest, want)
}

// addServer adds name to the Raft configuration unless it is there with
// the same address.
func (m *Membership) addServer(ctx context.Context, s *raftstore.Store, name, addr string) error {
	servers, err := s.Servers()
	if err != nil {
		return err
	}
	voters := 0
	for _, srv := range servers {
		if srv.ID == name && srv.Addr == addr {
			return nil
		}
		if srv.Voter {
			voters++
		}
	}
	if voters < m.cfg.Voters {
		return s.AddVoter(ctx, name, addr)
	}
	return s.AddNonvoter(ctx, name, addr)
}

// downAfter is how long a node may be silent before the leader marks it
// down: three missed samples.
func (m *Membership) downAfter() time.Duration {
	return 3*m.cfg.TelemetryInterval + 500*time.Millisecond
}

// LeaderLoop runs the leader's housekeeping every telemetry interval
// until ctx ends; on a node that does not lead it only waits.
func (m *Membership) LeaderLoop(ctx context.Context) {
	tick := time.NewTicker(m.cfg.TelemetryInterval)
	defer tick.Stop()
	var leaderSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s, err := m.c.Store()
		if err != nil || !s.IsLeader() {
			leaderSince = time.Time{}
			continue
		}
		if leaderSince.IsZero() {
			leaderSince = time.Now()
		}
		if err := m.reconcile(ctx, s, leaderSince); err != nil {
			m.log.Warn("reconcile", "err", err)
		}
	}
}

// reconcile marks nodes up or down from their telemetry, removes nodes
// gone longer than remove_after, and promotes non-voters to keep the
// voter count.
func (m *Membership) reconcile(ctx context.Context, s *raftstore.Store, leaderSince time.Time) error {
	now := time.Now()
	alive := map[string]bool{m.cfg.Node: true}
	for _, n := range s.Nodes() {
		last := leaderSince // a new leader gives everyone a fresh start
		if smp, ok := m.tel.Get(n.Name); ok && smp.Seen.After(last) {
			last = smp.Seen
		}
		up := n.Name == m.cfg.Node || now.Sub(last) < m.downAfter()
		alive[n.Name] = up
		want := raftstore.NodeDown
		if up {
			want = raftstore.NodeUp
		}
		if n.State != want {
			if _, err := s.Apply(ctx, raftstore.NodeSetState{Name: n.Name, State: want}); err != nil {
				return err
			}
			m.log.Info("node state", "node", n.Name, "state", want)
		}
		if !up && now.Sub(last) > m.cfg.RemoveAfter {
			if err := m.removeNode(ctx, s, n.Name); err != nil {
				return err
			}
		}
	}
	return m.keepVoters(ctx, s, alive)
}

func (m *Membership) removeNode(ctx context.Context, s *raftstore.Store, name string) error {
	if err := s.RemoveServer(ctx, name); err != nil {
		return fmt.Errorf("remove %s from raft: %w", name, err)
	}
	if _, err := s.Apply(ctx, raftstore.NodeRemove{Name: name, At: time.Now()}); err != nil {
		return err
	}
	m.tel.Forget(name)
	m.log.Info("node removed: gone too long", "node", name, "after", m.cfg.RemoveAfter)
	return nil
}

// keepVoters promotes live non-voters while live voters are fewer than
// Config.Voters.
func (m *Membership) keepVoters(ctx context.Context, s *raftstore.Store, alive map[string]bool) error {
	servers, err := s.Servers()
	if err != nil {
		return err
	}
	live := 0
	for _, srv := range servers {
		if srv.Voter && alive[srv.ID] {
			live++
		}
	}
	for _, srv := range servers {
		if live >= m.cfg.Voters {
			return nil
		}
		if !srv.Voter && alive[srv.ID] {
			if err := s.AddVoter(ctx, srv.ID, srv.Addr); err != nil {
				return err
			}
			m.log.Info("promoted to voter", "node", srv.ID)
			live++
		}
	}
	return nil
}
