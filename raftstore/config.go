package raftstore

import (
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Default timings, for a LAN: a dead leader is noticed after one to two
// heartbeat timeouts and replaced within about two seconds.
const (
	DefaultHeartbeatTimeout   = 500 * time.Millisecond
	DefaultElectionTimeout    = 500 * time.Millisecond
	DefaultLeaderLeaseTimeout = 250 * time.Millisecond
	// DefaultCommitTimeout paces the leader's AppendEntries when no new
	// entries come; they are what tells followers an entry committed
	// (heartbeats do not), so it bounds how long a follower's read
	// barrier waits after a write elsewhere: on a 3-node lab one
	// create+stat+unlink on a follower took 92 ms at 25 ms and 30 ms at
	// 5 ms, for 3.5% more of a core on an idle leader.
	DefaultCommitTimeout     = 5 * time.Millisecond
	DefaultSnapshotThreshold = 8192
	DefaultSnapshotInterval  = 2 * time.Minute
	DefaultTrailingLogs      = 10240
)

// Layer carries raft's traffic: the caller's listener for incoming raft
// connections plus a dialer of the same protocol on other nodes. It has
// the shape of raft's StreamLayer so callers need not import raft.
type Layer interface {
	net.Listener
	// Dial connects to the raft layer of the node at address (Config.Addr
	// of that node), giving up after timeout.
	Dial(address string, timeout time.Duration) (net.Conn, error)
}

// Config configures Open. NodeID, Addr, DataDir and Layer are required;
// zero durations and counts take the defaults above.
type Config struct {
	// NodeID is the raft server ID and the node's name; it never changes
	// for a given DataDir.
	NodeID string
	// Addr is the address ("ip:port") other nodes dial to reach this
	// node's Layer: the raft server address. It is advertised as is, so
	// it must not be a wildcard address.
	Addr string
	// DataDir holds the log and stable store (wal/, or raft.db in a
	// data dir made before raft-wal) and snapshots/.
	DataDir string
	Layer   Layer
	// Logger receives the store's and raft's logs; nil discards them.
	Logger *slog.Logger
	// Bootstrap forms a new one-node cluster with this node as voter when
	// DataDir has no raft state yet. It is ignored when there is state,
	// so it is safe to leave on for the cluster's first node.
	Bootstrap bool

	// AskLeader gets the leader's ReadIndex for a follower's read barrier
	// (the agent's RPC); nil: reads barriers work on the leader only.
	AskLeader AskLeader

	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// SnapshotThreshold is how many new entries trigger a snapshot, checked
	// every SnapshotInterval (with jitter).
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	// TrailingLogs is how many entries a snapshot leaves in the log, so a
	// slightly late follower catches up from the log, not a snapshot.
	TrailingLogs uint64
}

func (c Config) withDefaults() Config {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.HeartbeatTimeout, DefaultHeartbeatTimeout)
	def(&c.ElectionTimeout, DefaultElectionTimeout)
	def(&c.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	def(&c.CommitTimeout, DefaultCommitTimeout)
	def(&c.SnapshotInterval, DefaultSnapshotInterval)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = DefaultSnapshotThreshold
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = DefaultTrailingLogs
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) validate() error {
	switch {
	case c.NodeID == "":
		return fmt.Errorf("empty node id: %w", ErrConfig)
	case c.DataDir == "":
		return fmt.Errorf("empty data dir: %w", ErrConfig)
	case c.Layer == nil:
		return fmt.Errorf("no layer: %w", ErrConfig)
	}
	host, port, err := net.SplitHostPort(c.Addr)
	if err != nil || port == "" || port == "0" {
		return fmt.Errorf("addr %q is not a dialable ip:port: %w", c.Addr, ErrConfig)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return fmt.Errorf("addr %q is a wildcard, advertise a reachable address: %w", c.Addr, ErrConfig)
	}
	return nil
}
