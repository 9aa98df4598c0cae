package raftstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"
)

const (
	boltFile       = "raft.db"
	snapshotRetain = 2
	logCacheSize   = 512
	// transportTimeout bounds one raft RPC's I/O; snapshots get more in
	// proportion to their size (raft's own scaling).
	transportTimeout = 10 * time.Second
	transportPool    = 3
)

// Store is this node's replica of the cluster state: a raft node whose
// state machine holds nodes, processes, migrations and join tokens.
// Writes go through Apply on the leader; reads are served from the local
// replica. All methods are safe for concurrent use.
type Store struct {
	cfg    Config
	log    *slog.Logger
	raft   *raft.Raft
	fsm    *fsm
	logs   raft.LogStore
	bolt   *raftboltdb.BoltStore
	trans  *raft.NetworkTransport
	leader *leaderWatch

	closeOnce sync.Once
	closeErr  error
	closed    chan struct{}
}

// Open opens (or creates) the store in cfg.DataDir and starts raft. A
// DataDir with state comes back with its log and snapshot and rejoins its
// cluster; an empty one waits to be added by a leader (AddVoter), or, with
// cfg.Bootstrap, forms a one-node cluster.
func Open(cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Store{cfg: cfg, log: cfg.Logger, fsm: newFSM(), closed: make(chan struct{})}
	hl := newHclog(cfg.Logger, "raft")
	rc := s.raftConfig(hl)
	if err := raft.ValidateConfig(rc); err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrConfig)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("raftstore data dir: %w", err)
	}
	if err := s.openStores(); err != nil {
		return nil, err
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, snapshotRetain, hl.Named("snapshot"))
	if err != nil {
		_ = s.bolt.Close()
		return nil, fmt.Errorf("raftstore snapshots: %w", err)
	}
	s.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  &streamLayer{Layer: cfg.Layer, addr: advertisedAddr(cfg.Addr)},
		MaxPool: transportPool,
		Timeout: transportTimeout,
		Logger:  hl.Named("transport"),
	})
	if err := s.startRaft(rc, snaps); err != nil {
		_ = s.trans.Close()
		_ = s.bolt.Close()
		return nil, err
	}
	s.leader = newLeaderWatch(s.raft.LeaderCh(), s.closed)
	return s, nil
}

// openStores opens the bolt file that is both raft's log and its stable
// store, with a small cache in front for the log's hot tail.
func (s *Store) openStores() error {
	bolt, err := raftboltdb.New(raftboltdb.Options{
		Path: filepath.Join(s.cfg.DataDir, boltFile),
		// A second agent on the same DataDir must fail, not hang.
		BoltOptions: &bbolt.Options{Timeout: time.Second},
	})
	if err != nil {
		return fmt.Errorf("raftstore log store %s: %w", filepath.Join(s.cfg.DataDir, boltFile), err)
	}
	logs, err := raft.NewLogCache(logCacheSize, bolt)
	if err != nil {
		_ = bolt.Close()
		return fmt.Errorf("raftstore log cache: %w", err)
	}
	s.bolt, s.logs = bolt, logs
	return nil
}

func (s *Store) raftConfig(hl *hclogAdapter) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(s.cfg.NodeID)
	rc.HeartbeatTimeout = s.cfg.HeartbeatTimeout
	rc.ElectionTimeout = s.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = s.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = s.cfg.CommitTimeout
	rc.SnapshotThreshold = s.cfg.SnapshotThreshold
	rc.SnapshotInterval = s.cfg.SnapshotInterval
	rc.TrailingLogs = s.cfg.TrailingLogs
	rc.Logger = hl
	return rc
}

func (s *Store) startRaft(rc *raft.Config, snaps raft.SnapshotStore) error {
	existing, err := raft.HasExistingState(s.logs, s.bolt, snaps)
	if err != nil {
		return fmt.Errorf("raftstore read state: %w", err)
	}
	r, err := raft.NewRaft(rc, s.fsm, s.logs, s.bolt, snaps, s.trans)
	if err != nil {
		return fmt.Errorf("raftstore start raft: %w", err)
	}
	s.raft = r
	if existing || !s.cfg.Bootstrap {
		s.log.Info("raft started", "raft_id", s.cfg.NodeID, "addr", s.cfg.Addr, "existing_state", existing)
		return nil
	}
	boot := raft.Configuration{Servers: []raft.Server{{
		Suffrage: raft.Voter, ID: raft.ServerID(s.cfg.NodeID), Address: raft.ServerAddress(s.cfg.Addr),
	}}}
	if err := r.BootstrapCluster(boot).Error(); err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
		_ = r.Shutdown().Error()
		return fmt.Errorf("raftstore bootstrap: %w", err)
	}
	s.log.Info("raft bootstrapped a new cluster", "raft_id", s.cfg.NodeID, "addr", s.cfg.Addr)
	return nil
}

// Close stops raft, closes the Layer's listener (through raft's transport)
// and closes the log store; a reopened Store needs a fresh Layer. It does
// not leave the cluster (see RemoveServer): a closed node counts as down
// until it comes back. Safe to call more than once; later calls return
// the first result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closed)
		err := s.raft.Shutdown().Error()
		s.leader.wait()
		// raft's shutdown closes the transport too; closing again is a
		// no-op and covers raft versions that do not.
		err = errors.Join(err, s.trans.Close(), s.bolt.Close())
		if err != nil {
			s.closeErr = fmt.Errorf("raftstore close: %w", err)
		}
	})
	return s.closeErr
}

// NodeID returns this node's raft server ID (Config.NodeID).
func (s *Store) NodeID() string { return s.cfg.NodeID }

// Addr returns this node's advertised raft address (Config.Addr).
func (s *Store) Addr() string { return s.cfg.Addr }
