package jobs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"ssi/cluster/peer"
	"ssi/migrate"
	"ssi/raftstore"
)

// Resolver ends a move an earlier agent left half done; it says whether
// the copy here is the one that runs.
//
// Adopt calls it, once the replica has caught up, for a recorded process
// whose move m (still in flight in the agreed state) this node was part
// of: arriving when the copy here was restored by m, as its destination,
// before the outcome was known; otherwise this node is m's source. The
// copy here is stopped and waits for the answer. runsHere must be true
// only if the move ended with the process here: committed (arriving) or
// aborted (the source). An error leaves the copy stopped and Adopt tries
// again later.
//
// The migration transaction implements it (it owns the decision): as
// the destination it asks for the commit, since the restore worked, with
// the reason "the destination's agent restarted"; as the source it asks
// for the abort, with the reason "the source's agent restarted". The
// outcome that holds may be the other side's.
type Resolver interface {
	Resolve(ctx context.Context, m raftstore.Migration, arriving bool) (runsHere bool, err error)
}

// Adopt takes over the processes an earlier agent of this node left
// running, once the node is a member, and tells the cluster which ones
// are gone. It retries until the cluster answers, since the decisions
// need the agreed state, and returns when it is done (WaitAdoption then
// returns at once) or ctx ends.
func (t *Table) Adopt(ctx context.Context, r Resolver) {
	defer close(t.adopted)
	_ = peer.Retry(ctx, time.Second, func() (bool, error) {
		err := t.adoptOnce(ctx, r)
		if err != nil && ctx.Err() == nil {
			t.log.Debug("adopting this node's processes", "err", err)
			return false, err
		}
		return true, nil
	})
}

// WaitAdoption returns once this agent has taken over the processes an
// earlier one left, so that nothing new is mistaken for a lost one.
func (t *Table) WaitAdoption(ctx context.Context) error {
	select {
	case <-t.adopted:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("this agent is still taking over its node's processes: %w", ctx.Err())
	}
}

func (t *Table) adoptOnce(ctx context.Context, r Resolver) error {
	if err := t.c.CatchUp(ctx); err != nil {
		return err
	}
	s, err := t.c.Store()
	if err != nil {
		return err
	}
	a := adoption{t: t, s: s, r: r}
	alive := map[int]bool{}
	for _, rec := range t.rec.running() {
		if _, ok := t.Get(rec.CPID); !ok {
			if err := a.adopt(ctx, rec); err != nil {
				return err
			}
		}
		alive[rec.CPID] = true
	}
	// Processes the cluster places here that no record accounts for died
	// with the node (or its agent's state was lost), unless their home
	// is asking this agent to start them (HandleStart).
	for _, p := range s.Procs() {
		if p.Node != t.cfg.Node || alive[p.CPID] || p.State == raftstore.ProcMigrating || t.asked.has(p.CPID) {
			continue
		}
		if _, ok := t.Get(p.CPID); ok {
			continue
		}
		t.log.Warn("a process of this node is gone", "cpid", p.CPID)
		if _, err := t.c.Apply(ctx, raftstore.ProcRemove{CPID: p.CPID, EndedAt: time.Now()}); err != nil &&
			!errors.Is(err, raftstore.ErrNotFound) {
			return err
		}
	}
	return nil
}

// adoption is one pass of Adopt over the agreed state s.
type adoption struct {
	t *Table
	s *raftstore.Store
	r Resolver
}

// adopt takes over a job whose init still runs. A move that was under
// way is settled first: its copy here is resumed or killed.
func (a adoption) adopt(ctx context.Context, rec jobRecord) error {
	node := a.t.cfg.Node
	p, ok := a.s.Proc(rec.CPID)
	if !ok {
		// The cluster forgot it: it must not run unseen.
		a.drop(rec)
		return nil
	}
	if m, moving := a.s.Migration(rec.CPID); moving && ((rec.Arriving && m.To == node) || m.From == node) {
		// Restored here before the agent died, the restore worked: this
		// side asks for the commit, as a destination that lost its
		// source does. As the source, it asks for the abort.
		here, err := a.r.Resolve(ctx, m, rec.Arriving && m.To == node)
		if err != nil {
			return err
		}
		if !here {
			a.drop(rec)
			return nil
		}
	} else if p.Node != node {
		// It runs elsewhere now: this is a stale stopped copy.
		a.drop(rec)
		return nil
	}
	proc, err := os.FindProcess(rec.Pid)
	if err != nil {
		return err
	}
	if p, _ := a.s.Proc(rec.CPID); rec.Arriving || p.Node == node {
		_ = a.t.cg.enter(rec.CPID, migrate.Tree(rec.Pid)...)
	}
	_ = migrate.SignalTree(rec.Pid, syscall.SIGCONT)
	a.t.log.Info("adopted a running process", "cpid", rec.CPID, "pid", rec.Pid)
	a.t.add(&Job{cpid: rec.CPID, proc: proc, adopted: true})
	return nil
}

// drop kills a recorded process that must not run here, and forgets it.
func (a adoption) drop(rec jobRecord) {
	_ = migrate.SignalTree(rec.Pid, syscall.SIGKILL)
	a.t.rec.forget(rec.CPID)
}

// waitAdopted waits for an adopted init, which is not our child: its exit
// status is not ours to read.
func waitAdopted(pid int) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return
	}
	defer unix.Close(fd)
	for {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, -1); err == nil || !errors.Is(err, unix.EINTR) {
			return
		}
	}
}
