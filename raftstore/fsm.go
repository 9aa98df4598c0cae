package raftstore

import (
	"fmt"
	"io"
	"sync"

	"github.com/hashicorp/raft"
)

// fsm is the raft state machine: the agreed state plus the index of the
// last command applied to it. Apply is deterministic: everything it
// needs (times, chosen names) travels inside the command.
type fsm struct {
	mu sync.RWMutex
	st *state
	// changed is closed and replaced after every Apply and Restore, to
	// wake WaitApplied without polling.
	changed chan struct{}
}

// applyResult is what FSM.Apply hands back to the leader's Apply call.
type applyResult struct {
	cpid int
	ino  uint64
	err  error
}

func newFSM() *fsm {
	return &fsm{st: newState(), changed: make(chan struct{})}
}

var _ raft.FSM = (*fsm)(nil)

// Apply applies one committed entry. A committed entry that does not
// decode panics on purpose: the entry cannot be skipped (every node must
// apply the same sequence, or their states silently diverge) nor
// retried, so the only safe move is to stop this node loudly. It happens
// when the log is corrupt or was written by a newer ssi (upgrade this
// binary). ApplyEncoded validates bytes so garbage never gets this far.
func (f *fsm) Apply(l *raft.Log) any {
	cmd, err := DecodeCommand(l.Data)
	if err != nil {
		panic(fmt.Sprintf("raftstore: committed log entry %d (term %d) is not a command this binary knows: %v; "+
			"the log is corrupt or was written by a newer ssi, and skipping it would make this node diverge",
			l.Index, l.Term, err))
	}
	f.mu.Lock()
	var res applyResult
	if o, ok := cmd.(Once); ok {
		res = applyOnce(f.st, o, f.dispatch)
	} else {
		res = f.dispatch(cmd)
	}
	f.st.applied = l.Index
	ch := f.changed
	f.changed = make(chan struct{})
	f.mu.Unlock()
	close(ch)
	return res
}

// dispatch runs the applyX function of cmd's type. Each applyX checks
// everything before it changes anything, so a state error leaves the
// state untouched.
func (f *fsm) dispatch(cmd Command) applyResult {
	s := f.st
	switch c := cmd.(type) {
	case NodeUpsert:
		return applyResult{err: applyNodeUpsert(s, c)}
	case NodeRemove:
		return applyResult{err: applyNodeRemove(s, c)}
	case NodeSetState:
		return applyResult{err: applyNodeSetState(s, c)}
	case AdminSet:
		return applyResult{err: applyAdminSet(s, c)}
	case ProcAdd:
		cpid, err := applyProcAdd(s, c)
		return applyResult{cpid: cpid, err: err}
	case ProcUpdate:
		return applyResult{err: applyProcUpdate(s, c)}
	case ProcRemove:
		return applyResult{err: applyProcRemove(s, c)}
	case MigrationStart:
		return applyResult{err: applyMigrationStart(s, c)}
	case MigrationPhase:
		return applyResult{err: applyMigrationPhase(s, c)}
	case MigrationEnd:
		return applyResult{err: applyMigrationEnd(s, c)}
	case TokenAdd:
		return applyResult{err: applyTokenAdd(s, c)}
	case TokenRemove:
		return applyResult{err: applyTokenRemove(s, c)}
	case TokenUse:
		return applyResult{err: applyTokenUse(s, c)}
	case TokenRevoke:
		return applyResult{err: applyTokenRevoke(s, c)}
	case CertIssue:
		return applyResult{err: applyCertIssue(s, c)}
	case CertRevoke:
		return applyResult{err: applyCertRevoke(s, c)}
	case HomeConfig:
		return applyResult{err: applyHomeConfig(s, c)}
	case HomeCreate:
		ino, err := applyHomeCreate(s, c)
		return applyResult{ino: ino, err: err}
	case HomeWrite:
		return applyResult{err: applyHomeWrite(s, c)}
	case HomeTruncate:
		return applyResult{err: applyHomeTruncate(s, c)}
	case HomeSetAttr:
		return applyResult{err: applyHomeSetAttr(s, c)}
	case HomeLink:
		return applyResult{err: applyHomeLink(s, c)}
	case HomeUnlink:
		return applyResult{err: applyHomeUnlink(s, c)}
	case HomeRmdir:
		return applyResult{err: applyHomeRmdir(s, c)}
	case HomeRename:
		return applyResult{err: applyHomeRename(s, c)}
	}
	// A codec without a case here is a programming error, not corruption.
	panic(fmt.Sprintf("raftstore: no apply function for %v", cmd.Type()))
}

// Snapshot copies the state under the lock; Persist then writes the copy
// while Apply goes on.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return &fsmSnapshot{st: f.st.clone()}, nil
}

// Restore replaces the state with a snapshot's. The snapshot is decoded
// into a fresh state first, so a bad snapshot leaves the old one in place.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	st, err := readSnapshot(rc)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.st = st
	ch := f.changed
	f.changed = make(chan struct{})
	f.mu.Unlock()
	close(ch)
	return nil
}

// view runs fn on the state under the read lock. fn must copy what it
// keeps.
func (f *fsm) view(fn func(s *state)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.st)
}

// appliedIndex returns the index of the last applied command and a
// channel closed at the next change.
func (f *fsm) appliedIndex() (uint64, <-chan struct{}) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.st.applied, f.changed
}

type fsmSnapshot struct {
	st *state
}

// Persist writes the snapshot; on any error it cancels the sink so raft
// drops the partial file.
func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(sink, s.st); err != nil {
		_ = sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
