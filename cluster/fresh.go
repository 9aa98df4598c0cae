package cluster

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"ssi/raftstore"
)

// One truth on every node (CONTRACT.md, "Consistency"): every read of the
// agreed state (/cluster, ssi ps/nodes/status/migrations/wait, the
// lookups behind kill and migrate) first passes the read barrier, so it
// reflects every write that returned on any node before it started. A
// node cut off from the quorum cannot pass it: after readWait it serves
// its replica as it is, says so in `ssi status`, and until a barrier
// passes again its reads do not wait while it knows no leader.

// defaultReadWait bounds how long a read waits for the barrier.
const defaultReadWait = 2 * time.Second

// staleProbe bounds how long a read of a node already known to be cut
// off tries to reach a leader before it serves the replica: short, so a
// shell stays usable in a partition, and tried by every read, so the
// first read after a heal is linearizable again.
const staleProbe = 250 * time.Millisecond

func (a *Agent) readWait() time.Duration {
	if a.cfg.ReadWait > 0 {
		return a.cfg.ReadWait
	}
	return defaultReadWait
}

// fresh passes the read barrier. stale reports that it could not: the
// caller reads this replica as it is.
func (a *Agent) fresh(ctx context.Context) (stale bool, err error) {
	s, err := a.member()
	if err != nil {
		return false, err
	}
	if a.noBarrier.Load() {
		return false, nil
	}
	probe := a.readWait()
	if _, addr := s.Leader(); addr == "" && a.stale.Load() {
		probe = staleProbe
	}
	t0 := time.Now()
	ictx, cancel := context.WithTimeout(ctx, probe)
	idx, err := s.ReadIndex(ictx)
	cancel()
	if err == nil {
		// A leader answered: now only this replica's own catching up is
		// left, which gets the whole wait (right after a heal, raft may
		// still be backing off before it sends the missed entries).
		wctx, cancel := context.WithTimeout(ctx, a.readWait())
		err = s.WaitApplied(wctx, idx)
		cancel()
	}
	a.metrics.barrier.Observe(time.Since(t0).Seconds())
	if err != nil {
		if errors.Is(err, raftstore.ErrClosed) {
			return false, err
		}
		if ctx.Err() != nil {
			// The reader gave up (a client hung up): that says nothing
			// about the quorum.
			return false, ctx.Err()
		}
		if !a.stale.Swap(true) {
			a.log.Warn("no quorum answers: serving reads from this replica, possibly stale", "err", err)
		}
		a.metrics.staleRead()
		return true, nil
	}
	if a.stale.Swap(false) {
		a.log.Info("the quorum answers again: reads are linearizable")
	}
	return false, nil
}

// freshRead passes the barrier before a read handler of the local API.
func (a *Agent) freshRead(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, err := a.fresh(r.Context()); err != nil {
			writeErr(w, http.StatusServiceUnavailable, err)
			return
		}
		h(w, r)
	}
}

// catchUp is the barrier for those that must not go on with a stale
// replica (a migration's checks, adoption): it fails instead.
func (a *Agent) catchUp(ctx context.Context) error {
	s, err := a.member()
	if err != nil {
		return err
	}
	return s.ReadBarrier(ctx)
}

// askReadIndex is a follower's round of the barrier: the leader's
// ReadIndex. While this node knows no leader (an election, or cut off
// and maybe healed) it asks every other node at once: whichever leads
// answers, the others send it on.
func (a *Agent) askReadIndex(ctx context.Context) (uint64, error) {
	s, err := a.member()
	if err != nil {
		return 0, err
	}
	for {
		var targets []string
		if _, addr := s.Leader(); addr != "" {
			targets = []string{addr}
		} else {
			for _, n := range s.Nodes() {
				if n.Name != a.cfg.NodeName && n.Addr != "" {
					targets = append(targets, n.Addr)
				}
			}
		}
		idx, err := a.firstReadIndex(ctx, targets)
		if err == nil || !errors.Is(err, errRetry) {
			return idx, err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("no leader answered: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// firstReadIndex asks every target for its ReadIndex and returns the
// first answer.
func (a *Agent) firstReadIndex(ctx context.Context, targets []string) (uint64, error) {
	if len(targets) == 0 {
		return 0, fmt.Errorf("%w: no other node known", errRetry)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type answer struct {
		idx uint64
		err error
	}
	answers := make(chan answer, len(targets))
	for _, addr := range targets {
		go func() {
			var out struct {
				Index uint64 `json:"index"`
			}
			err := a.post(ctx, addr, "/v1/applied", []byte("{}"), &out)
			answers <- answer{out.Index, err}
		}()
	}
	var last error
	for range targets {
		ans := <-answers
		if ans.err == nil {
			return ans.idx, nil
		}
		last = ans.err
	}
	return 0, last
}

// handleApplied (leader) answers a follower's barrier round with its
// ReadIndex; a node that does not lead (any more) sends it to the next.
func (a *Agent) handleApplied(w http.ResponseWriter, r *http.Request) {
	s, err := a.member()
	if err != nil || !s.IsLeader() {
		writeErr(w, http.StatusMisdirectedRequest, raftstore.ErrNotLeader)
		return
	}
	idx, err := s.ReadIndex(r.Context())
	if err != nil {
		writeErr(w, http.StatusMisdirectedRequest, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]uint64{"index": idx})
}
