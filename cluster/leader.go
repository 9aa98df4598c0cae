package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"

	"ssi/raftstore"
)

// handleJoin (leader) makes a registering node a Raft server, a voter
// while there are fewer than cluster.voters, and records it as up with
// its resources. It is idempotent: a returning node is only refreshed.
func (a *Agent) handleJoin(w http.ResponseWriter, r *http.Request) {
	s, err := a.member()
	if err != nil {
		writeErr(w, http.StatusServiceUnavailable, err)
		return
	}
	var req joinRequest
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&req); err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	if !s.IsLeader() {
		// The newcomer cannot know the leader yet: pass it on.
		if err := a.forward(r.Context(), "/v1/join", req, nil); err != nil {
			writeErr(w, http.StatusServiceUnavailable, err)
			return
		}
		writeJSON(w, http.StatusOK, struct{}{})
		return
	}
	if err := a.addServer(r.Context(), s, req.Name, req.Addr); err != nil {
		writeErr(w, http.StatusMisdirectedRequest, err)
		return
	}
	// Admin switches and the first join time survive a re-registration.
	up := raftstore.NodeUpsert{Name: req.Name, Addr: req.Addr, State: raftstore.NodeUp,
		CPUs: req.CPUs, Memory: req.Memory, JoinedAt: time.Now()}
	if old, ok := s.Node(req.Name); ok {
		up.JoinedAt, up.Speed = old.JoinedAt, old.Speed
	}
	if _, err := s.Apply(r.Context(), up); err != nil {
		writeErr(w, applyStatus(err), err)
		return
	}
	// Count the node as heard from now, so the leader does not mark it
	// down before its first sample arrives.
	a.telemetry.Put(Sample{Node: req.Name, CPUs: req.CPUs, MemTotal: req.Memory, At: time.Now()})
	a.log.Info("node registered", "node", req.Name, "addr", req.Addr)
	writeJSON(w, http.StatusOK, struct{}{})
}

// addServer adds name to the Raft configuration unless it is there with
// the same address.
func (a *Agent) addServer(ctx context.Context, s *raftstore.Store, name, addr string) error {
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
	if voters < a.cfg.Voters {
		return s.AddVoter(ctx, name, addr)
	}
	return s.AddNonvoter(ctx, name, addr)
}

// telemetryLoop samples this node's load every interval and sends it to
// every other node, so each node can answer `ssi nodes` from its table.
func (a *Agent) telemetryLoop(ctx context.Context) {
	sampler := NewSampler(a.cfg.NodeName)
	tick := time.NewTicker(a.cfg.TelemetryInterval)
	defer tick.Stop()
	var cpu map[int]procCPU
	for {
		now := time.Now()
		sample := sampler.Sample(now)
		sample.Procs, cpu = a.jobSamples(cpu, now)
		a.telemetry.Put(sample)
		a.pushTelemetry(ctx, sample)
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (a *Agent) pushTelemetry(ctx context.Context, sample Sample) {
	s, err := a.member()
	if err != nil {
		return
	}
	body, _ := json.Marshal(sample)
	ctx, cancel := context.WithTimeout(ctx, a.cfg.TelemetryInterval)
	defer cancel()
	var wg sync.WaitGroup
	for _, n := range s.Nodes() {
		if n.Name == a.cfg.NodeName || n.Addr == "" {
			continue
		}
		wg.Add(1)
		go func(addr string) {
			defer wg.Done()
			_ = a.post(ctx, addr, "/v1/telemetry", body, nil)
		}(n.Addr)
	}
	wg.Wait()
}

// downAfter is how long a node may be silent before the leader marks it
// down: three missed samples.
func (a *Agent) downAfter() time.Duration { return 3*a.cfg.TelemetryInterval + 500*time.Millisecond }

// leaderLoop runs the leader's housekeeping every telemetry interval.
func (a *Agent) leaderLoop(ctx context.Context) {
	tick := time.NewTicker(a.cfg.TelemetryInterval)
	defer tick.Stop()
	var leaderSince time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s, err := a.member()
		if err != nil || !s.IsLeader() {
			leaderSince = time.Time{}
			continue
		}
		if leaderSince.IsZero() {
			leaderSince = time.Now()
		}
		if err := a.reconcile(ctx, s, leaderSince); err != nil {
			a.log.Warn("reconcile", "err", err)
		}
	}
}

// reconcile marks nodes up or down from their telemetry, removes nodes
// gone longer than remove_after, and promotes non-voters to keep the
// voter count.
func (a *Agent) reconcile(ctx context.Context, s *raftstore.Store, leaderSince time.Time) error {
	now := time.Now()
	alive := map[string]bool{a.cfg.NodeName: true}
	for _, n := range s.Nodes() {
		last := leaderSince // a new leader gives everyone a fresh start
		if smp, ok := a.telemetry.Get(n.Name); ok && smp.Seen.After(last) {
			last = smp.Seen
		}
		up := n.Name == a.cfg.NodeName || now.Sub(last) < a.downAfter()
		alive[n.Name] = up
		want := raftstore.NodeDown
		if up {
			want = raftstore.NodeUp
		}
		if n.State != want {
			if _, err := s.Apply(ctx, raftstore.NodeSetState{Name: n.Name, State: want}); err != nil {
				return err
			}
			a.log.Info("node state", "node", n.Name, "state", want)
		}
		if !up && now.Sub(last) > a.cfg.RemoveAfter {
			if err := a.removeNode(ctx, s, n.Name); err != nil {
				return err
			}
		}
	}
	return a.keepVoters(ctx, s, alive)
}

func (a *Agent) removeNode(ctx context.Context, s *raftstore.Store, name string) error {
	if err := s.RemoveServer(ctx, name); err != nil {
		return fmt.Errorf("remove %s from raft: %w", name, err)
	}
	if _, err := s.Apply(ctx, raftstore.NodeRemove{Name: name, At: time.Now()}); err != nil {
		return err
	}
	a.telemetry.Forget(name)
	a.log.Info("node removed: gone too long", "node", name, "after", a.cfg.RemoveAfter)
	return nil
}

// keepVoters promotes live non-voters while live voters are fewer than
// cluster.voters.
func (a *Agent) keepVoters(ctx context.Context, s *raftstore.Store, alive map[string]bool) error {
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
		if live >= a.cfg.Voters {
			return nil
		}
		if !srv.Voter && alive[srv.ID] {
			if err := s.AddVoter(ctx, srv.ID, srv.Addr); err != nil {
				return err
			}
			a.log.Info("promoted to voter", "node", srv.ID)
			live++
		}
	}
	return nil
}
