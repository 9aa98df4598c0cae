package raftstore

import (
	"maps"
	"slices"
	"time"
)

// NodeState is a node's membership state in the agreed view.
type NodeState string

// Node states.
const (
	NodeUp   NodeState = "up"   // member and reachable
	NodeDown NodeState = "down" // member, but unreachable
	NodeLeft NodeState = "left" // left the cluster on purpose
)

func (s NodeState) valid() bool { return s == NodeUp || s == NodeDown || s == NodeLeft }

// ProcState is a cluster process's state in the agreed view.
type ProcState string

// Process states.
const (
	ProcRunning   ProcState = "running"
	ProcMigrating ProcState = "migrating"
	ProcStopped   ProcState = "stopped"
	ProcExited    ProcState = "exited"
)

func (s ProcState) valid() bool {
	return s == ProcRunning || s == ProcMigrating || s == ProcStopped || s == ProcExited
}

// Admin switch names accepted by AdminSet.
const (
	SwitchBlock = "block" // refuse processes migrating in
	SwitchBring = "bring" // bring this node's processes home
	SwitchExpel = "expel" // send guest processes away
	SwitchStay  = "stay"  // keep local processes here
)

// Admin holds a node's administrative switches (openMosix's mosctl
// block/bring/expel/stay), set by operators through AdminSet.
type Admin struct {
	Block bool `json:"block"`
	Bring bool `json:"bring"`
	Expel bool `json:"expel"`
	Stay  bool `json:"stay"`
}

// set changes the switch called name; false for an unknown name.
func (a *Admin) set(name string, v bool) bool {
	switch name {
	case SwitchBlock:
		a.Block = v
	case SwitchBring:
		a.Bring = v
	case SwitchExpel:
		a.Expel = v
	case SwitchStay:
		a.Stay = v
	default:
		return false
	}
	return true
}

// Map returns the switches keyed by name, the shape APIs print.
func (a Admin) Map() map[string]bool {
	return map[string]bool{SwitchBlock: a.Block, SwitchBring: a.Bring, SwitchExpel: a.Expel, SwitchStay: a.Stay}
}

// Node is one machine of the cluster as agreed through raft. The raft
// configuration, not this record, says whether it votes.
type Node struct {
	Name     string    `json:"name"`
	Addr     string    `json:"addr"`
	State    NodeState `json:"state"`
	CPUs     float64   `json:"cpus"` // fractional under a CPU quota
	Memory   uint64    `json:"memory"`
	Speed    int       `json:"speed"` // relative; higher is faster
	Admin    Admin     `json:"admin"`
	JoinedAt time.Time `json:"joined_at"`
	// UsersDigest is a digest of the node's user database (name:uid
	// pairs): the same uid must mean the same user on every node.
	UsersDigest string `json:"users_digest,omitempty"`
}

// Proc is one cluster process: its home node, where it runs now and what
// it is doing.
type Proc struct {
	CPID      int       `json:"cpid"`
	Home      string    `json:"home"`
	Node      string    `json:"node"`
	UID       int       `json:"uid"`
	Argv      []string  `json:"argv"`
	State     ProcState `json:"state"`
	Lock      bool      `json:"lock"` // pinned: never migrated automatically
	NMigs     int       `json:"nmigs"`
	ExitCode  *int      `json:"exit_code,omitempty"`
	StartedAt time.Time `json:"started_at"`
}

func (p Proc) clone() Proc {
	p.Argv = slices.Clone(p.Argv)
	if p.ExitCode != nil {
		c := *p.ExitCode
		p.ExitCode = &c
	}
	return p
}

// Migration is a move of a process in flight; a process has at most one.
type Migration struct {
	ID        string    `json:"id"`
	CPID      int       `json:"cpid"`
	From      string    `json:"from"`
	To        string    `json:"to"`
	StartedAt time.Time `json:"started_at"`
	Phase     string    `json:"phase"` // free text set by the migrating agents
}

// TokenHash is a join token as the cluster keeps it: only the hex SHA-256
// of the token (see HashToken), never the token itself.
type TokenHash struct {
	Hash      string    `json:"hash"`
	ID        string    `json:"id,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"` // zero: never
	Uses      int       `json:"uses,omitempty"`      // 0: any number
	Used      int       `json:"used,omitempty"`
	Revoked   bool      `json:"revoked,omitempty"`
}

// state is the FSM's whole agreed state. It is only touched under the
// FSM's lock, and never handed out: readers get copies.
type state struct {
	nodes      map[string]*Node
	procs      map[int]*Proc
	migrations map[int]*Migration // by cpid
	tokens     map[string]TokenHash
	certs      map[string]Cert // by serial
	nextCPID   int
	home       *homeState   // the replicated /cluster/home
	ended      []Ended      // recent ends, oldest first (history.go)
	moves      []MoveRecord // recent migrations, oldest first
	once       onceTable    // what recent Once commands answered
	// applied is the index of the last command in this state; it travels
	// in snapshots so WaitApplied is right after a restore.
	applied uint64
}

func newState() *state {
	return &state{
		nodes:      map[string]*Node{},
		procs:      map[int]*Proc{},
		migrations: map[int]*Migration{},
		tokens:     map[string]TokenHash{},
		certs:      map[string]Cert{},
		nextCPID:   1,
		home:       newHomeState(),
	}
}

// clone deep-copies s, so a snapshot can be written while Apply goes on.
func (s *state) clone() *state {
	c := &state{
		nodes:      make(map[string]*Node, len(s.nodes)),
		procs:      make(map[int]*Proc, len(s.procs)),
		migrations: make(map[int]*Migration, len(s.migrations)),
		tokens:     maps.Clone(s.tokens),
		certs:      maps.Clone(s.certs),
		nextCPID:   s.nextCPID,
		home:       s.home.clone(),
		applied:    s.applied,
		ended:      slices.Clone(s.ended),
		moves:      slices.Clone(s.moves),
		once:       s.once.clone(),
	}
	for k, n := range s.nodes {
		n2 := *n
		c.nodes[k] = &n2
	}
	for k, p := range s.procs {
		p2 := p.clone()
		c.procs[k] = &p2
	}
	for k, m := range s.migrations {
		m2 := *m
		c.migrations[k] = &m2
	}
	return c
}

func (s *state) nodeList() []Node {
	out := make([]Node, 0, len(s.nodes))
	for _, name := range slices.Sorted(maps.Keys(s.nodes)) {
		out = append(out, *s.nodes[name])
	}
	return out
}

func (s *state) procList() []Proc {
	out := make([]Proc, 0, len(s.procs))
	for _, cpid := range slices.Sorted(maps.Keys(s.procs)) {
		out = append(out, s.procs[cpid].clone())
	}
	return out
}

func (s *state) migrationList() []Migration {
	out := make([]Migration, 0, len(s.migrations))
	for _, cpid := range slices.Sorted(maps.Keys(s.migrations)) {
		out = append(out, *s.migrations[cpid])
	}
	return out
}

func (s *state) tokenList() []TokenHash {
	out := make([]TokenHash, 0, len(s.tokens))
	for _, h := range slices.Sorted(maps.Keys(s.tokens)) {
		out = append(out, s.tokens[h])
	}
	return out
}
