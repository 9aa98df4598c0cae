package raftstore

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"go.etcd.io/bbolt"
)

const (
	boltFile       = "raft.db" // the log of data dirs made before raft-wal
	walDir         = "wal"
	snapshotRetain = 2
	// logCacheSize entries of the log's tail stay in memory, for followers
	// catching up; home writes make entries of up to 1 MiB.
	logCacheSize = 128
	// transportTimeout bounds one raft RPC's I/O; snapshots get more in
	// proportion to their size (raft's own scaling).
	transportTimeout = 10 * time.Second
	transportPool    = 3
)

// Store is this node's replica of the cluster state: a raft node whose
// state machine holds nodes, processes, migrations and join tokens.
// Writes go through Apply on the leader; reads are served from the local
// replica. All methods are safe for concurrent use.
//
// Store itself opens, writes and closes; its other methods come from the
// parts embedded below, one concern each, all sharing the one raftNode
// and fsm.
type Store struct {
	*raftNode   // role, indexes, snapshots; raft's futures and errors
	stateReader // reads of nodes, processes, migrations, tokens, history
	homeReader  // reads of the /cluster/home tree
	members     // the raft configuration and leadership changes
	linearizer  // ReadIndex, ReadBarrier, WaitApplied

	cfg    Config
	log    *slog.Logger
	fsm    *fsm
	stable raft.StableStore
	closer io.Closer // the log and stable store
	lock   *os.File  // holds the data dir's flock
	trans  *raft.NetworkTransport

	closeOnce sync.Once
	closeErr  error
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
	s := newStore(cfg)
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
		s.closeStores()
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
		s.closeStores()
		return nil, err
	}
	s.leader = newLeaderWatch(s.raft.LeaderCh(), s.closed)
	return s, nil
}

// newStore wires the Store's parts to one raftNode and one fsm; Open
// fills in the raft instance and its log once they exist.
func newStore(cfg Config) *Store {
	n, f := &raftNode{closed: make(chan struct{})}, newFSM()
	s := &Store{
		raftNode: n, stateReader: stateReader{f}, homeReader: homeReader{f}, members: members{raftNode: n},
		cfg: cfg, log: cfg.Logger, fsm: f,
	}
	l := &s.linearizer
	l.raftNode, l.fsm, l.askLeader = n, f, cfg.AskLeader
	l.reads = coalescer{run: l.readIndexRound, timeout: readRoundTimeout}
	return s
}

// openStores opens raft's log and stable store, with a small cache in
// front for the log's hot tail: a write-ahead log (hashicorp/raft-wal:
// append-only segment files, one fsync per batch of entries), or, in a
// data dir made by an earlier ssi, the bolt file it has. The log carries
// /cluster/home's data, so its speed is the home's write speed: raft-wal
// took 1 GiB of 1 MiB entries several times faster than raft-boltdb,
// which rewrites bolt pages and waits for two fdatasyncs per commit.
func (s *Store) openStores() error {
	lock, err := lockDir(s.cfg.DataDir)
	if err != nil {
		return err
	}
	var logs raft.LogStore
	if _, err := os.Stat(filepath.Join(s.cfg.DataDir, boltFile)); err == nil {
		bolt, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(s.cfg.DataDir, boltFile),
			BoltOptions: &bbolt.Options{Timeout: time.Second}})
		if err != nil {
			lock.Close()
			return fmt.Errorf("raftstore log store %s: %w", filepath.Join(s.cfg.DataDir, boltFile), err)
		}
		logs, s.stable, s.closer = bolt, bolt, bolt
	} else {
		dir := filepath.Join(s.cfg.DataDir, walDir)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			lock.Close()
			return fmt.Errorf("raftstore log store: %w", err)
		}
		// raft-wal's Close leaves its meta store open (v0.4.0): ours is
		// closed after it, or a restart in this process would hang.
		meta := &metadb.BoltMetaDB{}
		w, err := wal.Open(dir, wal.WithMetaStore(meta))
		if err != nil {
			_ = meta.Close()
			lock.Close()
			return fmt.Errorf("raftstore log store %s: %w", filepath.Join(s.cfg.DataDir, walDir), err)
		}
		logs, s.stable, s.closer = w, w, closers{w, meta}
	}
	cache, err := raft.NewLogCache(logCacheSize, logs)
	if err != nil {
		_ = s.closer.Close()
		lock.Close()
		return fmt.Errorf("raftstore log cache: %w", err)
	}
	s.logs, s.lock = cache, lock
	return nil
}

// lockDir takes the data dir's lock: a second agent on the same dir must
// fail at once, not hang or corrupt the log.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("raftstore lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("raftstore: %s is in use by another agent: %w", dir, err)
	}
	return f, nil
}

// closers closes each in turn and reports every failure.
type closers []io.Closer

func (cs closers) Close() error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

func (s *Store) closeStores() {
	_ = s.closer.Close()
	_ = s.lock.Close()
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
	existing, err := raft.HasExistingState(s.logs, s.stable, snaps)
	if err != nil {
		return fmt.Errorf("raftstore read state: %w", err)
	}
	r, err := raft.NewRaft(rc, s.fsm, s.logs, s.stable, snaps, s.trans)
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
		err = errors.Join(err, s.trans.Close(), s.closer.Close(), s.lock.Close())
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
