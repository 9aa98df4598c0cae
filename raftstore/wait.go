package raftstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// WaitApplied returns once this node's replica reflects every entry up to
// index (a Result.Index or a ReadIndex), or ctx's error.
func (l *linearizer) WaitApplied(ctx context.Context, index uint64) error {
	t := time.NewTicker(pollInterval)
	defer t.Stop()
	for {
		changed, ok := l.appliedUpTo(index)
		if ok {
			return nil
		}
		select {
		case <-changed:
		case <-t.C:
		case <-l.closed:
			return ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("wait for index %d (applied %d): %w", index, l.AppliedIndex(), ctx.Err())
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
func (l *linearizer) appliedUpTo(index uint64) (<-chan struct{}, bool) {
	applied, changed := l.fsm.appliedIndex()
	if applied >= index {
		return changed, true
	}
	if l.raft.AppliedIndex() < index {
		return changed, false
	}
	for i := index; i > applied; i-- {
		var e raft.Log
		err := l.logs.GetLog(i, &e)
		if errors.Is(err, raft.ErrLogNotFound) {
			// Compacted into a snapshot: the FSM has restored it (raft
			// moves its applied index only after the restore).
			return changed, true
		}
		if err != nil || e.Type == raft.LogCommand {
			return changed, false
		}
	}
	return changed, true
}
