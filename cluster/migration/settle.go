package migration

import (
	"context"
	"errors"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/peer"
	"ssi/raftstore"
)

// outcome is how a migration ended, as the agreed state says.
type outcome int

const (
	aborted   outcome = iota // the process stays at its source
	committed                // the process is at its destination
	// gone: the migration ended with no record of how (the process was
	// removed meanwhile). No copy may run: it is not the cluster's.
	gone
)

// settleWait bounds one settle unless Config.SettleWait says otherwise;
// settleLater goes on after it.
const settleWait = 2 * time.Minute

// settle applies the end of migration id with the outcome we want and
// returns the outcome that holds: ours, or the other side's if it ended
// the migration first, read by id from the recent moves. It retries while
// the cluster has no quorum; until the outcome is known no copy may run.
func (m *Mover) settle(cpid int, id string, commit bool, st *raftstore.MoveStats) (outcome, error) {
	ctx, cancel := context.WithTimeout(context.Background(), m.cfg.SettleWait)
	defer cancel()
	want := aborted
	if commit {
		want = committed
	}
	got := aborted
	err := peer.Retry(ctx, 200*time.Millisecond, func() (bool, error) {
		_, err := m.cluster.Apply(ctx, raftstore.MigrationEnd{CPID: cpid, ID: id, Commit: commit, Stats: st})
		if err == nil {
			got = want
			return true, nil
		}
		if errors.Is(err, raftstore.ErrNotFound) {
			if o, known := m.ended(ctx, cpid, id); known {
				got = o
				return true, nil
			}
		}
		return false, err
	})
	if err != nil {
		return aborted, err
	}
	return got, nil
}

// ended reads how migration id ended, once the other side has ended it:
// known is false while the agreed state (caught up) still has it open.
func (m *Mover) ended(ctx context.Context, cpid int, id string) (o outcome, known bool) {
	if err := m.cluster.CatchUp(ctx); err != nil {
		return aborted, false
	}
	s, err := m.cluster.Store()
	if err != nil {
		return aborted, false
	}
	if mig, busy := s.Migration(cpid); busy && mig.ID == id {
		return aborted, false
	}
	moves := s.Moves()
	for i := len(moves) - 1; i >= 0; i-- {
		if moves[i].ID == id && moves[i].CPID == cpid {
			if moves[i].Committed {
				return committed, true
			}
			return aborted, true
		}
	}
	return gone, true
}

// settleLater keeps asking the agreed state for the outcome of a move
// whose outcome could not be learnt, then acts on it. It gives up only
// when this agent leaves the cluster.
func (m *Mover) settleLater(cpid int, id string, commit bool, st *raftstore.MoveStats, then func(outcome)) {
	go func() {
		for {
			o, err := m.settle(cpid, id, commit, st)
			if err == nil {
				then(o)
				return
			}
			if errors.Is(err, raftstore.ErrClosed) || errors.Is(err, api.ErrNotMember) {
				return
			}
			m.log.Warn("migration outcome still unknown", "cpid", cpid, "id", id, "err", err)
		}
	}()
}

// Resolve ends a move that an earlier agent of this node left half done
// (jobs.Resolver): the destination's restored copy asks for the commit,
// as a destination that lost its source does; the source's stopped copy
// asks for the abort. It reports whether the copy here is the one that
// runs.
func (m *Mover) Resolve(ctx context.Context, mig raftstore.Migration, arriving bool) (bool, error) {
	reason := "the source's agent restarted"
	if arriving {
		reason = "the destination's agent restarted"
	}
	o, err := m.settle(mig.CPID, mig.ID, arriving, &raftstore.MoveStats{Reason: reason, EndedAt: time.Now()})
	if err != nil {
		return false, err
	}
	if arriving {
		return o == committed, nil
	}
	return o == aborted, nil
}
