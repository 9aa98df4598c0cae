package peer

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/transport"
	"ssi/fs"
	"ssi/raftstore"
)

// Config says who this node is and how its reads wait.
type Config struct {
	// Node is this node's name.
	Node string
	// ReadWait bounds how long a read waits for the read barrier without
	// quorum before it serves this replica (0: DefaultReadWait).
	ReadWait time.Duration
	// Log receives the read barrier's changes of mind; nil discards.
	Log *slog.Logger
	// Metrics receives the read barrier's measurements; nil drops them.
	Metrics Metrics
}

// Metrics is told how reads fared at the barrier, once per read.
type Metrics interface {
	// BarrierWait is how long a read waited for the barrier.
	BarrierWait(d time.Duration)
	// StaleRead counts a read served from this replica without it.
	StaleRead()
}

// Cluster is this node as a member: before Join it answers
// api.ErrNotMember to everything that needs the cluster. All methods are
// safe for concurrent use.
type Cluster struct {
	cfg Config
	log *slog.Logger

	mu     sync.RWMutex // protects id, store, client
	id     *transport.Identity
	store  *raftstore.Store
	client *http.Client // dials other agents' ProtoRPC with id

	// stale is set while reads are served without the read barrier.
	stale atomic.Bool
	// noBarrier: root switched the barrier off for a bench's baseline.
	noBarrier atomic.Bool
}

// New returns this node, not a member yet.
func New(cfg Config) *Cluster {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Cluster{cfg: cfg, log: log}
}

// Join makes this node a member with identity id and store s: from now
// on Store answers and peers can be called.
func (c *Cluster) Join(id *transport.Identity, s *raftstore.Store) {
	client := &http.Client{
		Timeout: 15 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
				return transport.Dial(ctx, addr, transport.ProtoRPC, id)
			},
			MaxIdleConnsPerHost: 4,
			IdleConnTimeout:     time.Minute,
		},
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.id, c.store, c.client = id, s, client
}

// Store is this node's replica of the agreed state, or api.ErrNotMember
// before the node is a member.
func (c *Cluster) Store() (*raftstore.Store, error) {
	s, _, err := c.joined()
	return s, err
}

// joined is what Join set, or api.ErrNotMember before.
func (c *Cluster) joined() (*raftstore.Store, *http.Client, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.store == nil {
		return nil, nil, api.ErrNotMember
	}
	return c.store, c.client, nil
}

// Identity is this node's certificate, once a member (nil before).
func (c *Cluster) Identity() *transport.Identity {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.id
}

// Name is this node's name.
func (c *Cluster) Name() string { return c.cfg.Node }

// NodeAddr is the cluster address of node name.
func (c *Cluster) NodeAddr(name string) (string, error) {
	s, err := c.Store()
	if err != nil {
		return "", err
	}
	n, ok := s.Node(name)
	if !ok || n.Addr == "" {
		return "", fmt.Errorf("node %q is unknown", name)
	}
	return n.Addr, nil
}

// Dial connects to node's cluster port for proto (a transport.Proto*),
// presenting this node's identity. The peer must be node: any member's
// certificate passes the handshake, and one that took node's address
// must not get what is meant for node (a process's images, its stdio).
func (c *Cluster) Dial(ctx context.Context, node string, proto byte) (net.Conn, error) {
	addr, err := c.NodeAddr(node)
	if err != nil {
		return nil, err
	}
	conn, err := transport.Dial(ctx, addr, proto, c.Identity())
	if err != nil {
		return nil, err
	}
	if got := transport.PeerName(conn); got != node {
		conn.Close()
		return nil, fmt.Errorf("%s at %s answered as %q: %w", node, addr, got, fs.ErrPermission)
	}
	return conn, nil
}
