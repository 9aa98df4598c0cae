package membership

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"ssi/cluster/discovery"
	"ssi/cluster/telemetry"
	"ssi/cluster/transport"
	"ssi/raftstore"
)

// Config is the membership's part of the agent's configuration.
type Config struct {
	// Node is this node's name.
	Node string
	// Speed is one of its CPUs against the reference (telemetry.SpeedUnit);
	// 0: measured when the node registers.
	Speed int
	// Advertise is the host:port other nodes reach this node's cluster
	// port at; its host goes into the node's certificate.
	Advertise string
	// DataDir holds the node's identity (in tls/).
	DataDir string
	// JoinToken admits this node to a cluster, and is recorded as a
	// valid token when this node forms one.
	JoinToken string
	// TokenTTL is the life of the token a new cluster is formed with and
	// of tokens created without a ttl of their own (0: no end).
	TokenTTL time.Duration
	// CertLifetime is the life of the certificates this node issues to
	// newcomers (transport.NodeValidity if zero).
	CertLifetime time.Duration
	// Join are members to join through (host:port), tried with discovery.
	Join              []string
	Discovery         bool
	DiscoveryGroup    string
	DiscoveryInterval time.Duration
	// DiscoveryWait is how long a seeker listens before the smallest
	// one forms the cluster.
	DiscoveryWait time.Duration
	// Voters is how many voters the leader keeps.
	Voters int
	// RemoveAfter is how long a node may be down before the leader
	// removes it.
	RemoveAfter time.Duration
	// TelemetryInterval paces the samples, and so the leader's liveness
	// checks and housekeeping.
	TelemetryInterval time.Duration
	// HomeMaxFileSize and HomeQuota are the home's limits, recorded when
	// this node forms the cluster.
	HomeMaxFileSize uint64
	HomeQuota       uint64
	// Log receives membership's events; nil discards.
	Log *slog.Logger
}

// Cluster is what membership needs of this node as a member (a
// *peer.Cluster): its calls answer api.ErrNotMember before it is one.
type Cluster interface {
	// Store is the agreed state.
	Store() (*raftstore.Store, error)
	// Apply applies cmd through the leader, waiting for one.
	Apply(ctx context.Context, cmd raftstore.Command) (json.RawMessage, error)
	// Forward sends a JSON request to the leader, waiting for one.
	Forward(ctx context.Context, path string, in, out any) error
	// Post sends one request to the peer at addr.
	Post(ctx context.Context, addr, path string, body []byte, out any) error
}

// Membership is this node's side of the membership, and the leader's
// duties when it leads. Its methods are safe for concurrent use.
type Membership struct {
	cfg   Config
	c     Cluster
	tel   *telemetry.Table
	log   *slog.Logger
	table *discovery.Table // nil without discovery

	mu        sync.Mutex // protects joinedVia
	joinedVia string     // the member that admitted us, this run

	speedOnce sync.Once
	measured  int // speed()'s
}

// New returns the membership of node cfg.Node; tel is the telemetry
// table liveness is read from.
func New(cfg Config, c Cluster, tel *telemetry.Table) *Membership {
	m := &Membership{cfg: cfg, c: c, tel: tel, log: cfg.Log}
	if m.log == nil {
		m.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Discovery && cfg.JoinToken != "" {
		m.table = discovery.NewTable(transport.TokenTag(cfg.JoinToken), cfg.Node)
	}
	return m
}

// Discover sends this node's beacons and listens to the others' until
// ctx ends; without discovery (or a token to find a cluster by) it
// returns at once.
func (m *Membership) Discover(ctx context.Context) {
	if m.table == nil {
		return
	}
	dc := discovery.Config{Group: m.cfg.DiscoveryGroup, Interval: m.cfg.DiscoveryInterval, Wait: m.cfg.DiscoveryWait}
	if err := discovery.Run(ctx, dc, m.table, m.Beacon, m.log); err != nil {
		m.log.Warn("discovery off", "err", err)
	}
}

// Beacon is what this agent announces while it runs.
func (m *Membership) Beacon() discovery.Beacon {
	state := discovery.StateSeeking
	if _, err := m.c.Store(); err == nil {
		state = discovery.StateMember
	}
	return discovery.Beacon{
		Tag: transport.TokenTag(m.cfg.JoinToken), Node: m.cfg.Node,
		Addr: m.cfg.Advertise, State: state,
	}
}

// JoinHandler admits newcomers on the cluster port's join handshake:
// the token's status, the name, the token's use and the certificate's
// record are the agreed state's (see admission).
func (m *Membership) JoinHandler() *transport.JoinHandler {
	a := &admission{m: m, spent: map[string]time.Time{}}
	return &transport.JoinHandler{Tokens: m.TokenHashes, Status: a.status, Admit: m.Admit, Spend: a.spend,
		Issued: a.issued, Redirect: a.issuer, CertLifetime: m.cfg.CertLifetime}
}

// TokenHashes are the join tokens the cluster knows, valid or not, for
// the join handshake: a newcomer holding a spent one proves it, then
// learns why it is refused.
func (m *Membership) TokenHashes() []string {
	s, err := m.c.Store()
	if err != nil {
		return nil
	}
	var out []string
	for _, t := range s.TokenHashes() {
		out = append(out, t.Hash)
	}
	return out
}

// Admit refuses a newcomer whose name is taken by a node that is up.
func (m *Membership) Admit(name string, _ []net.IP) error {
	s, err := m.c.Store()
	if err != nil {
		return err
	}
	if n, ok := s.Node(name); ok && n.State == raftstore.NodeUp && name != m.cfg.Node {
		if _, seen := m.tel.Get(name); seen {
			return fmt.Errorf("node name %q is taken by a live node", name)
		}
	}
	return nil
}
