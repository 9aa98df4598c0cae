package peer

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"ssi/cluster/api"
	"ssi/raftstore"
)

// One truth on every node (CONTRACT.md, "Consistency"): every read of the
// agreed state (/cluster, ssi ps/nodes/status/migrations/wait, the
// lookups behind kill and migrate) first passes the read barrier, so it
// reflects every write that returned on any node before it started. A
// node cut off from the quorum cannot pass it: after the read wait it
// serves its replica as it is, says so in `ssi status`, and until a
// barrier passes again its reads do not wait while it knows no leader.

// DefaultReadWait bounds how long a read waits for the barrier.
const DefaultReadWait = 2 * time.Second

// staleProbe bounds how long a read of a node already known to be cut
// off tries to reach a leader before it serves the replica: short, so a
// shell stays usable in a partition, and tried by every read, so the
// first read after a heal is linearizable again.
const staleProbe = 250 * time.Millisecond

// AppliedPath is where a leader answers a follower's barrier round
// (HandleApplied).
const AppliedPath = "/v1/applied"

// ReadWait bounds how long a read waits for the barrier without quorum.
func (c *Cluster) ReadWait() time.Duration {
	if c.cfg.ReadWait > 0 {
		return c.cfg.ReadWait
	}
	return DefaultReadWait
}

// Stale reports that reads are served from this replica as it is: the
// last barrier found no quorum.
func (c *Cluster) Stale() bool { return c.stale.Load() }

// SetBarrier turns the read barrier on or off (off: a bench's baseline).
func (c *Cluster) SetBarrier(on bool) { c.noBarrier.Store(!on) }

// Fresh passes the read barrier. stale reports that it could not: the
// caller reads this replica as it is.
func (c *Cluster) Fresh(ctx context.Context) (stale bool, err error) {
	s, err := c.Store()
	if err != nil {
		return false, err
	}
	if c.noBarrier.Load() {
		return false, nil
	}
	probe := c.ReadWait()
	if _, addr := s.Leader(); addr == "" && c.stale.Load() {
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
		wctx, cancel := context.WithTimeout(ctx, c.ReadWait())
		err = s.WaitApplied(wctx, idx)
		cancel()
	}
	if c.cfg.Metrics != nil {
		c.cfg.Metrics.BarrierWait(time.Since(t0))
	}
	if err != nil {
		return c.failed(ctx, err)
	}
	if c.stale.Swap(false) {
		c.log.Info("the quorum answers again: reads are linearizable")
	}
	return false, nil
}

// failed decides what a failed barrier means: the end of the store or
// of the reader is an error, anything else a stale read.
func (c *Cluster) failed(ctx context.Context, err error) (stale bool, _ error) {
	if errors.Is(err, raftstore.ErrClosed) {
		return false, err
	}
	if ctx.Err() != nil {
		// The reader gave up (a client hung up): that says nothing
		// about the quorum.
		return false, ctx.Err()
	}
	if !c.stale.Swap(true) {
		c.log.Warn("no quorum answers: serving reads from this replica, possibly stale", "err", err)
	}
	if c.cfg.Metrics != nil {
		c.cfg.Metrics.StaleRead()
	}
	return true, nil
}

// FreshRead passes the barrier before a read handler of the local API.
func (c *Cluster) FreshRead(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if _, err := c.Fresh(r.Context()); err != nil {
			api.WriteError(w, http.StatusServiceUnavailable, err)
			return
		}
		h(w, r)
	}
}

// CatchUp is the barrier for those that must not go on with a stale
// replica (a migration's checks, adoption): it fails instead.
func (c *Cluster) CatchUp(ctx context.Context) error {
	s, err := c.Store()
	if err != nil {
		return err
	}
	return s.ReadBarrier(ctx)
}

// AskReadIndex is a follower's round of the barrier: the leader's
// ReadIndex (raftstore.Config.AskLeader). While this node knows no
// leader (an election, or cut off and maybe healed) it asks every other
// node at once: whichever leads answers, the others send it on.
func (c *Cluster) AskReadIndex(ctx context.Context) (uint64, error) {
	s, err := c.Store()
	if err != nil {
		return 0, err
	}
	var idx uint64
	err = Retry(ctx, 20*time.Millisecond, func() (bool, error) {
		var targets []string
		if _, addr := s.Leader(); addr != "" {
			targets = []string{addr}
		} else {
			for _, n := range s.Nodes() {
				if n.Name != c.cfg.Node && n.Addr != "" {
					targets = append(targets, n.Addr)
				}
			}
		}
		var err error
		idx, err = c.firstReadIndex(ctx, targets)
		return err == nil || !errors.Is(err, api.ErrRetry), err
	})
	if err != nil && ctx.Err() != nil && errors.Is(err, api.ErrRetry) {
		// Retry gives back an error it would retry only when ctx ended.
		return 0, fmt.Errorf("no leader answered: %w", err)
	}
	return idx, err
}

// firstReadIndex asks every target for its ReadIndex and returns the
// first answer.
func (c *Cluster) firstReadIndex(ctx context.Context, targets []string) (uint64, error) {
	if len(targets) == 0 {
		return 0, fmt.Errorf("%w: no other node known", api.ErrRetry)
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
			err := c.Post(ctx, addr, AppliedPath, []byte("{}"), &out)
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

// HandleApplied (leader) answers a follower's barrier round with its
// ReadIndex; a node that does not lead (any more) sends it to the next.
func (c *Cluster) HandleApplied(w http.ResponseWriter, r *http.Request) {
	s, err := c.Store()
	if err != nil || !s.IsLeader() {
		api.WriteError(w, http.StatusMisdirectedRequest, raftstore.ErrNotLeader)
		return
	}
	idx, err := s.ReadIndex(r.Context())
	if err != nil {
		api.WriteError(w, http.StatusMisdirectedRequest, err)
		return
	}
	api.WriteJSON(w, http.StatusOK, map[string]uint64{"index": idx})
}

// Freshener passes the read barrier (Cluster.Fresh); the packages that
// find processes declare their clusters with it.
type Freshener interface {
	Fresh(ctx context.Context) (stale bool, err error)
}

// FindProc looks a process up past the read barrier: where it is now,
// even if a move returned on another node a moment ago. A read that
// cannot pass the barrier finds nothing.
func FindProc(ctx context.Context, f Freshener, s *raftstore.Store, cpid int) (raftstore.Proc, bool) {
	if _, err := f.Fresh(ctx); err != nil {
		return raftstore.Proc{}, false
	}
	return s.Proc(cpid)
}
