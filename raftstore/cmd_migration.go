package raftstore

import (
	"fmt"
	"time"
)

// MigrationStart records that a process begins to move from one node to
// another and sets it to migrating. A process has at most one migration:
// a second start fails with ErrBusy. From defaults to the process's
// current node and must equal it; the process must be running.
type MigrationStart struct {
	ID        string    `json:"id"`
	CPID      int       `json:"cpid"`
	From      string    `json:"from,omitempty"`
	To        string    `json:"to"`
	StartedAt time.Time `json:"started_at"`
	Phase     string    `json:"phase,omitempty"`
	// Exclusive refuses the start (ErrBusy) while another move to To is
	// under way: the balancer's reservation, so that nodes deciding at
	// once never pour work onto the same idle node together.
	Exclusive bool `json:"exclusive,omitempty"`
}

// MigrationPhase records the progress of a migration (free text chosen by
// the agents, such as "dump" or "restore"). ID, when set, must match.
type MigrationPhase struct {
	CPID  int    `json:"cpid"`
	ID    string `json:"id,omitempty"`
	Phase string `json:"phase"`
}

// MigrationEnd closes a migration. Commit moves the process to the
// destination node and counts the move; abort leaves it on the source.
// Either way it is running again. ID, when set, must match.
type MigrationEnd struct {
	CPID   int    `json:"cpid"`
	ID     string `json:"id,omitempty"`
	Commit bool   `json:"commit"`
	// Stats, when set, is kept in the recent migrations (Store.Moves).
	Stats *MoveStats `json:"stats,omitempty"`
}

// Type implements Command.
func (MigrationStart) Type() CommandType { return CmdMigrationStart }

// Type implements Command.
func (MigrationPhase) Type() CommandType { return CmdMigrationPhase }

// Type implements Command.
func (MigrationEnd) Type() CommandType { return CmdMigrationEnd }

func (MigrationStart) isCommand() {}
func (MigrationPhase) isCommand() {}
func (MigrationEnd) isCommand()   {}

func applyMigrationStart(s *state, c MigrationStart) error {
	p, ok := s.procs[c.CPID]
	if !ok {
		return fmt.Errorf("migration start: process %d: %w", c.CPID, ErrNotFound)
	}
	if m, busy := s.migrations[c.CPID]; busy {
		return fmt.Errorf("migration start: process %d already migrating (%s): %w", c.CPID, m.ID, ErrBusy)
	}
	from := c.From
	if from == "" {
		from = p.Node
	}
	if err := checkMigrationStart(s, c, p, from); err != nil {
		return err
	}
	s.migrations[c.CPID] = &Migration{
		ID: c.ID, CPID: c.CPID, From: from, To: c.To, StartedAt: c.StartedAt, Phase: c.Phase,
	}
	p.State = ProcMigrating
	return nil
}

func checkMigrationStart(s *state, c MigrationStart, p *Proc, from string) error {
	switch {
	case c.ID == "":
		return fmt.Errorf("migration start %d: empty id: %w", c.CPID, ErrInvalid)
	case p.State != ProcRunning:
		return fmt.Errorf("migration start %d: process is %s: %w", c.CPID, p.State, ErrInvalid)
	case from != p.Node:
		return fmt.Errorf("migration start %d: from %s but process is on %s: %w", c.CPID, from, p.Node, ErrInvalid)
	case c.To == from:
		return fmt.Errorf("migration start %d: already on %s: %w", c.CPID, c.To, ErrInvalid)
	}
	if _, ok := s.nodes[c.To]; !ok {
		return fmt.Errorf("migration start %d: node %q: %w", c.CPID, c.To, ErrNotFound)
	}
	for _, m := range s.migrations {
		if m.ID == c.ID {
			return fmt.Errorf("migration start %d: id %s in use: %w", c.CPID, c.ID, ErrExists)
		}
		if c.Exclusive && m.To == c.To {
			return fmt.Errorf("migration start %d: %s is taking process %d: %w", c.CPID, c.To, m.CPID, ErrBusy)
		}
	}
	return nil
}

// findMigration returns the migration of cpid, checking id when set.
func findMigration(s *state, cpid int, id string) (*Migration, error) {
	m, ok := s.migrations[cpid]
	if !ok || (id != "" && m.ID != id) {
		return nil, fmt.Errorf("migration %q of process %d: %w", id, cpid, ErrNotFound)
	}
	return m, nil
}

func applyMigrationPhase(s *state, c MigrationPhase) error {
	m, err := findMigration(s, c.CPID, c.ID)
	if err != nil {
		return fmt.Errorf("migration phase: %w", err)
	}
	m.Phase = c.Phase
	return nil
}

func applyMigrationEnd(s *state, c MigrationEnd) error {
	m, err := findMigration(s, c.CPID, c.ID)
	if err != nil {
		return fmt.Errorf("migration end: %w", err)
	}
	p := s.procs[c.CPID] // ProcRemove drops the migration too, so p exists
	if c.Commit {
		p.Node = m.To
		p.NMigs++
	} else {
		p.Node = m.From
	}
	p.State = ProcRunning
	delete(s.migrations, c.CPID)
	if c.Stats != nil {
		s.addMove(MoveRecord{ID: m.ID, CPID: m.CPID, From: m.From, To: m.To, Committed: c.Commit,
			StartedAt: m.StartedAt, MoveStats: *c.Stats})
	}
	return nil
}
