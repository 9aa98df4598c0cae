package membership

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"sort"
	"strings"
	"time"

	"ssi/cluster/peer"
	"ssi/cluster/telemetry"
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
	// UsersDigest is the node's UsersDigest ("" if it could not read it).
	UsersDigest string `json:"users_digest,omitempty"`
	// Speed is one of its CPUs against the reference CPU.
	Speed int `json:"speed,omitempty"`
}

// joinReply is the leader's answer to a registration.
type joinReply struct {
	// UsersWarning says that the node's user database is not the
	// cluster's ("" if it is, or no other node said).
	UsersWarning string `json:"users_warning,omitempty"`
}

// PasswdFile is the user database a node's UsersDigest is made from.
const PasswdFile = "/etc/passwd"

// usersDiffer is what the leader and the node say when the node's users
// are not the cluster's.
const usersDiffer = "this node's user database differs from the cluster's: the same uid must be the same user on every node"

// Announce records the token a new cluster was formed with and the
// home's limits, then registers this node with the leader. Registration
// needs a leader, hence a quorum: members restarting one by one must not
// wait for it, so the agent runs Announce in the background.
func (m *Membership) Announce(ctx context.Context, formed bool) {
	if formed && m.cfg.JoinToken != "" {
		m.record(ctx, "recording the join token",
			newTokenAdd(m.cfg.JoinToken, m.cfg.TokenTTL, 0, time.Now()), raftstore.ErrExists)
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

// speed is this node's configured speed or, if none, the one measured
// once, the first time it is asked for.
func (m *Membership) speed() int {
	m.speedOnce.Do(func() {
		m.measured = m.cfg.Speed
		if m.measured <= 0 {
			m.measured = telemetry.MeasureSpeed()
			m.log.Info("measured this node's speed", "speed", m.measured)
		}
	})
	return m.measured
}

// register tells the leader who and where this node is, until it has
// listened: a new node becomes a Raft server and a node in the state, a
// returning one gets its address and resources refreshed.
func (m *Membership) register(ctx context.Context) error {
	s := telemetry.NewSampler(m.cfg.Node).Sample(time.Now())
	req := joinRequest{Name: m.cfg.Node, Addr: m.cfg.Advertise, CPUs: s.CPUs, Memory: s.MemTotal, Speed: m.speed()}
	var err error
	if req.UsersDigest, err = UsersDigest(PasswdFile); err != nil {
		m.log.Warn("no digest of the user database to register", "err", err)
	}
	body, _ := json.Marshal(req)
	return peer.Retry(ctx, 200*time.Millisecond, func() (bool, error) {
		// A new node does not know the leader until it is a Raft server:
		// it asks any member it knows, which redirects it to the leader
		// (HandleJoin): the leader must see this node's own certificate.
		var err error
		for _, t := range m.registerTargets() {
			var reply joinReply
			sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = m.c.Post(sctx, t, JoinPath, body, &reply)
			cancel()
			if err == nil {
				if reply.UsersWarning != "" {
					m.log.Warn(reply.UsersWarning)
				}
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

// UsersDigest is the digest of the user database in the passwd file at
// path: the SHA-256 of its sorted name:uid pairs, one a line. The same
// uid must mean the same user on every node (the trust model), so nodes
// whose digests differ are worth a warning (HandleJoin, ssi doctor).
// os/user cannot list users, hence the file.
func UsersDigest(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var pairs []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Split(line, ":")
		// Comments and NIS's +/- lines name no user of this file.
		if len(f) < 3 || f[0] == "" || strings.HasPrefix(f[0], "#") || strings.ContainsAny(f[0][:1], "+-") {
			continue
		}
		pairs = append(pairs, f[0]+":"+f[2]+"\n")
	}
	sort.Strings(pairs)
	sum := sha256.Sum256([]byte(strings.Join(pairs, "")))
	return hex.EncodeToString(sum[:]), nil
}

// MajorityDigest is the users digest most of digests are ("" if none
// is set); a tie goes to the smallest, so every node picks the same.
func MajorityDigest(digests []string) string {
	count := map[string]int{}
	for _, d := range digests {
		if d != "" {
			count[d]++
		}
	}
	best := ""
	for d, c := range count {
		if c > count[best] || (c == count[best] && d < best) {
			best = d
		}
	}
	return best
}
