package raftstore

import (
	"fmt"
	"time"
)

// ProcAdd registers a new cluster process in state running. CPID is the
// wanted cpid: used when it is > 0 and free, otherwise the next number of
// the counter is assigned; the apply result (Result.CPID) carries the
// cpid actually assigned. Node defaults to Home; both must be known nodes.
type ProcAdd struct {
	CPID      int       `json:"cpid,omitempty"`
	Home      string    `json:"home"`
	Node      string    `json:"node,omitempty"`
	UID       int       `json:"uid"`
	Argv      []string  `json:"argv"`
	StartedAt time.Time `json:"started_at"`
}

// ProcUpdate changes some fields of a process; nil fields are left as
// they are. State cannot be set to migrating (that is MigrationStart),
// and while a migration is in flight Node and State cannot change at all:
// end the migration first.
type ProcUpdate struct {
	CPID     int        `json:"cpid"`
	Node     *string    `json:"node,omitempty"`
	State    *ProcState `json:"state,omitempty"`
	Lock     *bool      `json:"lock,omitempty"`
	ExitCode *int       `json:"exit_code,omitempty"`
	NMigs    *int       `json:"nmigs,omitempty"`
}

// ProcRemove forgets a process, and its migration if one is in flight
// (the process is gone, so is its move).
type ProcRemove struct {
	CPID int `json:"cpid"`
	// ExitCode, when known, is kept for `ssi wait` (see Store.Ended).
	ExitCode *int      `json:"exit_code,omitempty"`
	EndedAt  time.Time `json:"ended_at,omitzero"`
}

// Type implements Command.
func (ProcAdd) Type() CommandType { return CmdProcAdd }

// Type implements Command.
func (ProcUpdate) Type() CommandType { return CmdProcUpdate }

// Type implements Command.
func (ProcRemove) Type() CommandType { return CmdProcRemove }

func (ProcAdd) isCommand()    {}
func (ProcUpdate) isCommand() {}
func (ProcRemove) isCommand() {}

func applyProcAdd(s *state, c ProcAdd) (int, error) {
	node := c.Node
	if node == "" {
		node = c.Home
	}
	if _, ok := s.nodes[c.Home]; !ok {
		return 0, fmt.Errorf("proc add: home node %q: %w", c.Home, ErrNotFound)
	}
	if _, ok := s.nodes[node]; !ok {
		return 0, fmt.Errorf("proc add: node %q: %w", node, ErrNotFound)
	}
	p := Proc{
		CPID: s.allocCPID(c.CPID), Home: c.Home, Node: node, UID: c.UID,
		State: ProcRunning, StartedAt: c.StartedAt,
	}
	p.Argv = append([]string(nil), c.Argv...)
	s.procs[p.CPID] = &p
	return p.CPID, nil
}

// allocCPID returns want when it is positive and free, else the counter's
// next free number. The counter only moves forward, past wanted numbers
// too, so it never hands out a cpid twice, even after a process is gone.
func (s *state) allocCPID(want int) int {
	if _, taken := s.procs[want]; want > 0 && !taken {
		if want >= s.nextCPID {
			s.nextCPID = want + 1
		}
		return want
	}
	c := s.nextCPID
	for s.procs[c] != nil {
		c++
	}
	s.nextCPID = c + 1
	return c
}

func applyProcUpdate(s *state, c ProcUpdate) error {
	p, ok := s.procs[c.CPID]
	if !ok {
		return fmt.Errorf("proc update %d: %w", c.CPID, ErrNotFound)
	}
	if err := checkProcUpdate(s, c); err != nil {
		return err
	}
	if c.Node != nil {
		p.Node = *c.Node
	}
	if c.State != nil {
		p.State = *c.State
	}
	if c.Lock != nil {
		p.Lock = *c.Lock
	}
	if c.ExitCode != nil {
		code := *c.ExitCode
		p.ExitCode = &code
	}
	if c.NMigs != nil {
		p.NMigs = *c.NMigs
	}
	return nil
}

// checkProcUpdate validates every field before any is applied, so a
// refused update changes nothing.
func checkProcUpdate(s *state, c ProcUpdate) error {
	if _, migrating := s.migrations[c.CPID]; migrating && (c.Node != nil || c.State != nil) {
		return fmt.Errorf("proc update %d: node or state while migrating: %w", c.CPID, ErrBusy)
	}
	if c.Node != nil {
		if _, ok := s.nodes[*c.Node]; !ok {
			return fmt.Errorf("proc update %d: node %q: %w", c.CPID, *c.Node, ErrNotFound)
		}
	}
	if c.State != nil && (!c.State.valid() || *c.State == ProcMigrating) {
		return fmt.Errorf("proc update %d: state %q: %w", c.CPID, *c.State, ErrInvalid)
	}
	if c.NMigs != nil && *c.NMigs < 0 {
		return fmt.Errorf("proc update %d: nmigs %d: %w", c.CPID, *c.NMigs, ErrInvalid)
	}
	return nil
}

func applyProcRemove(s *state, c ProcRemove) error {
	p, ok := s.procs[c.CPID]
	if !ok {
		return fmt.Errorf("proc remove %d: %w", c.CPID, ErrNotFound)
	}
	e := Ended{CPID: c.CPID, Node: p.Node, EndedAt: c.EndedAt}
	if c.ExitCode != nil {
		code := *c.ExitCode
		e.ExitCode = &code
	}
	s.addEnded(e)
	delete(s.procs, c.CPID)
	delete(s.migrations, c.CPID)
	return nil
}
