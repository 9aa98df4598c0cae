package raftstore

import (
	"slices"
	"time"
)

// The state keeps a bounded memory of what ended, so that `ssi wait` can
// report an exit code after the process is gone and `ssi migrations` can
// show recent moves. Both are trimmed oldest first, in Apply, so every
// replica keeps the same entries.
const (
	maxEnded = 1024
	maxMoves = 512
)

// Ended is a cluster process that has ended.
type Ended struct {
	CPID     int       `json:"cpid"`
	Node     string    `json:"node"`
	ExitCode *int      `json:"exit_code,omitempty"` // nil: unknown (e.g. its node died)
	EndedAt  time.Time `json:"ended_at"`
}

// MoveStats is what the migrating agents measured, recorded with the end
// of a migration.
type MoveStats struct {
	Reason  string        `json:"reason,omitempty"` // why it was aborted
	Frozen  time.Duration `json:"frozen"`           // the process was stopped
	Total   time.Duration `json:"total"`            // from request to outcome
	Bytes   int64         `json:"bytes"`            // image bytes sent
	EndedAt time.Time     `json:"ended_at"`
}

// MoveRecord is one finished migration, committed or aborted.
type MoveRecord struct {
	ID        string    `json:"id"`
	CPID      int       `json:"cpid"`
	From      string    `json:"from"`
	To        string    `json:"to"`
	Committed bool      `json:"committed"`
	StartedAt time.Time `json:"started_at"`
	MoveStats
}

func (s *state) addEnded(e Ended) {
	s.ended = append(s.ended, e)
	if n := len(s.ended) - maxEnded; n > 0 {
		s.ended = slices.Delete(s.ended, 0, n)
	}
}

func (s *state) addMove(r MoveRecord) {
	s.moves = append(s.moves, r)
	if n := len(s.moves) - maxMoves; n > 0 {
		s.moves = slices.Delete(s.moves, 0, n)
	}
}

// Ended returns how the process cpid ended, if it ended recently.
func (r stateReader) Ended(cpid int) (Ended, bool) {
	var out Ended
	var ok bool
	r.fsm.view(func(st *state) {
		for i := len(st.ended) - 1; i >= 0; i-- {
			if st.ended[i].CPID == cpid {
				out, ok = st.ended[i], true
				if out.ExitCode != nil {
					c := *out.ExitCode
					out.ExitCode = &c
				}
				return
			}
		}
	})
	return out, ok
}

// Moves returns the recent finished migrations, oldest first.
func (r stateReader) Moves() []MoveRecord {
	var out []MoveRecord
	r.fsm.view(func(st *state) { out = slices.Clone(st.moves) })
	return out
}
