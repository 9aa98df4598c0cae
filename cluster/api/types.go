package api

import (
	"time"

	"ssi/cluster/jobns"
)

// NodeInfo is one line of `ssi nodes`: agreed facts from the Raft state
// joined with the node's latest load sample.
type NodeInfo struct {
	Name     string          `json:"name"`
	Addr     string          `json:"addr"`
	State    string          `json:"state"` // up, down
	Role     string          `json:"role"`  // leader, follower
	Voter    bool            `json:"voter"`
	Load     float64         `json:"load"`
	CPUs     float64         `json:"cpus"`
	Speed    int             `json:"speed"` // one CPU's, against 10000 for the reference CPU
	MemTotal uint64          `json:"mem_total"`
	MemFree  uint64          `json:"mem_free"`
	Procs    int             `json:"procs"`
	Admin    map[string]bool `json:"admin"`
	LastSeen *time.Time      `json:"last_seen,omitempty"`
	// UsersDigest is the digest of the node's user database it
	// registered (raftstore.Node.UsersDigest): ssi doctor compares them.
	UsersDigest string `json:"users_digest,omitempty"`
}

// StatusInfo is `ssi status`: the cluster's health in a few lines.
type StatusInfo struct {
	Node         string `json:"node"` // the node that answered
	ClusterID    string `json:"cluster_id"`
	Leader       string `json:"leader"`
	NodesUp      int    `json:"nodes_up"`
	NodesTotal   int    `json:"nodes_total"`
	Voters       int    `json:"voters"`
	Quorum       bool   `json:"quorum"`
	Procs        int    `json:"procs"`
	AppliedIndex uint64 `json:"applied_index"`
	// StaleReads: no quorum answered the read barrier, so this node
	// serves reads from its replica as it is.
	StaleReads bool `json:"stale_reads"`
}

// Health is the answer of /v1/health.
type Health struct {
	Node   string `json:"node"`
	Status string `json:"status"` // "member", or "joining" before it is one
	Pid    int    `json:"pid"`
	Uptime string `json:"uptime"`
}

// AdminRequest sets one of this node's admin switches. Node, if set,
// must be this node: a node's root sets only its own (the trust model).
type AdminRequest struct {
	Node   string `json:"node"`
	Switch string `json:"switch"`
	Value  bool   `json:"value"`
}

// RunRequest starts a cluster process whose home is this node.
type RunRequest struct {
	Argv   []string `json:"argv"`
	Dir    string   `json:"dir"`
	Env    []string `json:"env"`
	Attach bool     `json:"attach,omitempty"`
	// Node is where it runs from its start: "" (or this node's name) for
	// here, another node's name, or "balance" for the placement policy's
	// choice. It is never started here and moved.
	Node string `json:"node,omitempty"`
	// TTY gives the process a terminal of its own (attached only), of
	// size Size at first (jobns.DefaultWinsize if zero).
	TTY  bool          `json:"tty,omitempty"`
	Size jobns.Winsize `json:"size,omitzero"`
	// NofileSoft, if not 0, is the caller's soft RLIMIT_NOFILE from
	// before the Go runtime of `ssi run` raised it to the hard limit.
	// The agent reads every limit from the calling process itself and
	// takes this only to lower that soft limit, as any process may.
	NofileSoft uint64 `json:"nofile_soft,omitempty"`
}

// ProcInfo is one line of `ssi ps`.
type ProcInfo struct {
	CPID     int       `json:"cpid"`
	Node     string    `json:"node"`
	Home     string    `json:"home"`
	UID      int       `json:"uid"`
	User     string    `json:"user"`
	State    string    `json:"state"`
	CPU      float64   `json:"cpu"` // percent of one CPU
	RSS      uint64    `json:"rss"` // bytes
	Pid      int       `json:"pid"` // on the node it runs on
	NMigs    int       `json:"nmigs"`
	Lock     bool      `json:"lock"`
	CantMove string    `json:"cantmove,omitempty"`
	Argv     []string  `json:"argv"`
	Started  time.Time `json:"started"`
}

// KillRequest signals a cluster process wherever it runs.
type KillRequest struct {
	CPID   int  `json:"cpid"`
	Signal int  `json:"signal"`
	All    bool `json:"all"`
	UID    int  `json:"uid"`
	// Forwarded: sent by the node the caller asked; a node that finds the
	// process gone from it answers EBUSY and the sender looks again,
	// rather than passing the signal on.
	Forwarded bool `json:"forwarded,omitempty"`
}

// WaitResult is how a process ended; Code is nil when unknown.
type WaitResult struct {
	Code *int `json:"code"`
}

// MigrateRequest asks to move a process ("NODE", "home" or "balance").
type MigrateRequest struct {
	CPID   int    `json:"cpid"`
	Target string `json:"target"`
	UID    uint32 `json:"uid"`
}

// BenchRequest asks the agent to measure Raft applies.
type BenchRequest struct {
	N           int `json:"n"`
	Concurrency int `json:"concurrency"`
	// Barrier measures read barriers (the linearizable read's round
	// trip) instead of applies.
	Barrier bool `json:"barrier,omitempty"`
}

// BenchResult is what one run measured, from this node: commands forwarded
// to the leader when this node follows.
type BenchResult struct {
	N           int     `json:"n"`
	Concurrency int     `json:"concurrency"`
	P50ms       float64 `json:"p50_ms"`
	P99ms       float64 `json:"p99_ms"`
	PerSecond   float64 `json:"per_second"`
	// Rounds is how many barrier round trips served the N barriers.
	Rounds uint64 `json:"rounds,omitempty"`
}

// BalanceRecord is one thing the balancer did or chose not to do, for
// `ssi balance --explain` (GET /v1/balance) and the log.
type BalanceRecord struct {
	At   time.Time `json:"at"`
	Node string    `json:"node"` // the node that decided
	CPID int       `json:"cpid"`
	UID  int       `json:"uid"`
	// Action is "moved", "failed" (the move was tried and did not
	// happen) or "rejected" (considered, left where it is).
	Action string `json:"action"`
	Kind   string `json:"kind,omitempty"` // load or memory
	From   string `json:"from,omitempty"`
	To     string `json:"to,omitempty"`
	Why    string `json:"why"`
	Err    string `json:"err,omitempty"`
}

// DrainRequest drains this node (or undoes it): block arrivals, move
// every process off it.
type DrainRequest struct {
	Node string `json:"node"`
	Undo bool   `json:"undo,omitempty"`
}

// DrainResult is what became of one process of a drained node: moved
// to To, or left where it is because of Err.
type DrainResult struct {
	CPID int    `json:"cpid"`
	To   string `json:"to,omitempty"`
	Err  string `json:"err,omitempty"`
}
