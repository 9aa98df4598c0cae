package raftstore

import (
	"fmt"
	"maps"
	"slices"
	"time"
)

// NodeUpsert adds a node or replaces its facts (address, state, capacity).
// Admin switches survive an upsert, since only operators change them
// (AdminSet); JoinedAt is kept from the existing record when the
// command's is zero. An empty State means NodeUp.
type NodeUpsert struct {
	Name     string    `json:"name"`
	Addr     string    `json:"addr"`
	State    NodeState `json:"state,omitempty"`
	CPUs     float64   `json:"cpus"`
	Memory   uint64    `json:"memory"`
	Speed    int       `json:"speed"`
	JoinedAt time.Time `json:"joined_at"`
	// UsersDigest: see Node.UsersDigest.
	UsersDigest string `json:"users_digest,omitempty"`
}

// NodeRemove deletes a node's record. Processes that name the node are
// left alone: deciding what becomes of them is the agent's policy.
type NodeRemove struct {
	Name string `json:"name"`
	// At is when; the processes that ran there are recorded as ended then.
	At time.Time `json:"at,omitzero"`
}

// NodeSetState changes a node's state (up, down, left).
type NodeSetState struct {
	Name  string    `json:"name"`
	State NodeState `json:"state"`
}

// AdminSet turns one admin switch of a node on or off. Switch is one of
// SwitchBlock, SwitchBring, SwitchExpel, SwitchStay.
type AdminSet struct {
	Node   string `json:"node"`
	Switch string `json:"switch"`
	Value  bool   `json:"value"`
}

// Type implements Command.
func (NodeUpsert) Type() CommandType { return CmdNodeUpsert }

// Type implements Command.
func (NodeRemove) Type() CommandType { return CmdNodeRemove }

// Type implements Command.
func (NodeSetState) Type() CommandType { return CmdNodeSetState }

// Type implements Command.
func (AdminSet) Type() CommandType { return CmdAdminSet }

func (NodeUpsert) isCommand()   {}
func (NodeRemove) isCommand()   {}
func (NodeSetState) isCommand() {}
func (AdminSet) isCommand()     {}

func applyNodeUpsert(s *state, c NodeUpsert) error {
	if c.Name == "" {
		return fmt.Errorf("node upsert: empty name: %w", ErrInvalid)
	}
	st := c.State
	if st == "" {
		st = NodeUp
	}
	if !st.valid() {
		return fmt.Errorf("node upsert %s: state %q: %w", c.Name, c.State, ErrInvalid)
	}
	n := Node{
		Name: c.Name, Addr: c.Addr, State: st,
		CPUs: c.CPUs, Memory: c.Memory, Speed: c.Speed, JoinedAt: c.JoinedAt,
		UsersDigest: c.UsersDigest,
	}
	if old, ok := s.nodes[c.Name]; ok {
		n.Admin = old.Admin
		if n.JoinedAt.IsZero() {
			n.JoinedAt = old.JoinedAt
		}
	}
	s.nodes[c.Name] = &n
	return nil
}

func applyNodeRemove(s *state, c NodeRemove) error {
	if _, ok := s.nodes[c.Name]; !ok {
		return fmt.Errorf("node remove %q: %w", c.Name, ErrNotFound)
	}
	delete(s.nodes, c.Name)
	s.revokeNode(c.Name)
	// What ran there went with it; moves towards it cannot finish.
	for cpid, m := range s.migrations {
		if m.To == c.Name {
			s.procs[cpid].State = ProcRunning
			delete(s.migrations, cpid)
		}
	}
	// In cpid order: every replica must record the ends alike.
	for _, cpid := range slices.Sorted(maps.Keys(s.procs)) {
		if s.procs[cpid].Node == c.Name {
			s.addEnded(Ended{CPID: cpid, Node: c.Name, EndedAt: c.At})
			delete(s.procs, cpid)
			delete(s.migrations, cpid)
		}
	}
	return nil
}

func applyNodeSetState(s *state, c NodeSetState) error {
	n, ok := s.nodes[c.Name]
	if !ok {
		return fmt.Errorf("node set state %q: %w", c.Name, ErrNotFound)
	}
	if !c.State.valid() {
		return fmt.Errorf("node set state %s: state %q: %w", c.Name, c.State, ErrInvalid)
	}
	n.State = c.State
	return nil
}

func applyAdminSet(s *state, c AdminSet) error {
	n, ok := s.nodes[c.Node]
	if !ok {
		return fmt.Errorf("admin set: node %q: %w", c.Node, ErrNotFound)
	}
	a := n.Admin
	if !a.set(c.Switch, c.Value) {
		return fmt.Errorf("admin set %s: unknown switch %q: %w", c.Node, c.Switch, ErrInvalid)
	}
	n.Admin = a
	return nil
}
