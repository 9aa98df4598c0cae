package raftstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// pollInterval paces the waits that have no notification to wake them:
// another node's election and raft's applied index.
const pollInterval = 10 * time.Millisecond

// WaitForLeader returns the leader once one is known, or ctx's error.
func (s *Store) WaitForLeader(ctx context.Context) (id, addr string, err error) {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		if id, addr = s.Leader(); addr != "" {
			return id, addr, nil
		}
		select {
		case <-t.C:
		case <-s.closed:
			return "", "", ErrClosed
		case <-ctx.Done():
			return "", "", fmt.Errorf("wait for leader: %w", ctx.Err())
		}
	}
}

// WaitApplied returns once this node's replica reflects every entry up to
// index (a Result.Index or a ReadIndex), or ctx's error.
func (s *Store) WaitApplied(ctx context.Context, index uint64) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		changed, ok := s.appliedUpTo(index)
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-t.C:
		case <-s.closed:
			return ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d (applied %d): %w", index, s.AppliedIndex(), ctx.Err())
		}
	}
}

// appliedUpTo reports whether the replica reflects every entry up to
// index, and returns a channel closed at its next change.
//
// The FSM only sees commands, so its own index can stay below an index
// that names a no-op or configuration entry. Raft's applied index, on the
// other hand, moves when entries are handed to the FSM, a little before
// they are applied. So when raft is past index, the last command at or
// below index is looked up in the log: once the FSM has it, the replica
// is up to date.
func (s *Store) appliedUpTo(index uint64) (<-chan struct{}, bool) {
	applied, changed := s.fsm.appliedIndex()
	if applied >= index {
		return changed, true
	}
	if s.raft.AppliedIndex() < index {
		return changed, false
	}
	for i := index; i > applied; i-- {
		var l raft.Log
		err := s.logs.GetLog(i, &l)
		if errors.Is(err, raft.ErrLogNotFound) {
			// Compacted into a snapshot: the FSM has restored it (raft
			// moves its applied index only after the restore).
			return changed, true
		}
		if err != nil || l.Type == raft.LogCommand {
			return changed, false
		}
	}
	return changed, true
}

// AppliedIndex returns the index of the last entry raft has applied on
// this node (see WaitApplied for a wait that is exact).
func (s *Store) AppliedIndex() uint64 { return s.raft.AppliedIndex() }

// LastIndex returns the index of the last entry in this node's log,
// committed or not.
func (s *Store) LastIndex() uint64 { return s.raft.LastIndex() }
