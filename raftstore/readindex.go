package raftstore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Linearizable reads (etcd's ReadIndex, Raft thesis 6.4): a read that
// starts after a write returned anywhere must reflect it, yet reads are
// served from this node's replica. So a read first learns an index that
// covers every acknowledged write, from a leader that proves it still
// leads, and waits until this replica has applied it. Concurrent reads
// share one such round trip.

// readRoundTimeout bounds a round started by a caller without a
// deadline. A round otherwise lasts as long as the deadline of the caller
// that started it: a round that outlived its callers would hold back the
// next one, and with it every later reader.
const readRoundTimeout = 5 * time.Second

// linearizer serves linearizable reads of this replica: it learns read
// indexes (this node's as leader, or the leader's through AskLeader) and
// waits for the replica to apply them. It owns the rounds shared by
// concurrent readers and their counters.
type linearizer struct {
	*raftNode
	fsm       *fsm
	askLeader AskLeader
	reads     coalescer // ReadIndex rounds
	// readyTerm is the term in which this node, as leader, has committed
	// an entry: from then on its commit index covers every earlier write.
	readyTerm atomic.Uint64
}

// AskLeader asks the leader, over the agent's RPC, for its ReadIndex.
type AskLeader func(ctx context.Context) (uint64, error)

// ReadIndex returns an index such that this replica, once it has applied
// it (WaitApplied), reflects every write acknowledged on any node before
// the call. On the leader it costs one heartbeat round to a quorum; on a
// follower one call of ask (nil: followers get ErrNotLeader). Concurrent
// callers share one round: a caller joins the next round that has not
// started yet, so its answer is never older than its call.
func (l *linearizer) ReadIndex(ctx context.Context) (uint64, error) {
	l.reads.callers.Add(1)
	return l.reads.do(ctx)
}

// ReadBarrier is ReadIndex followed by WaitApplied: after it returns nil,
// reads of this replica are linearizable.
func (l *linearizer) ReadBarrier(ctx context.Context) error {
	idx, err := l.ReadIndex(ctx)
	if err != nil {
		return fmt.Errorf("read barrier: %w", err)
	}
	return l.WaitApplied(ctx, idx)
}

// ReadStats counts read barriers: how many callers asked and how many
// rounds (round trips) answered them.
type ReadStats struct {
	Callers, Rounds uint64
}

// ReadStats returns the counters since Open.
func (l *linearizer) ReadStats() ReadStats {
	return ReadStats{Callers: l.reads.callers.Load(), Rounds: l.reads.rounds.Load()}
}

// readIndexRound is one round: the leader's own, or the leader's asked.
func (l *linearizer) readIndexRound(ctx context.Context) (uint64, error) {
	if l.IsLeader() {
		return l.leaderReadIndex(ctx)
	}
	if l.askLeader == nil {
		return 0, l.notLeader()
	}
	return l.askLeader(ctx)
}

// leaderReadIndex is the leader's side. Its commit index covers every
// acknowledged write once it has committed an entry of its own term (a
// new leader may not know the last commits of the old one until then):
// a barrier, once per term. The index is taken before the heartbeat round
// that proves no newer leader could have acknowledged anything since.
func (l *linearizer) leaderReadIndex(ctx context.Context) (uint64, error) {
	term := l.raft.CurrentTerm()
	if l.readyTerm.Load() != term {
		if err := l.wait(ctx, l.raft.Barrier(enqueueTimeout(ctx))); err != nil {
			return 0, fmt.Errorf("first commit of term %d: %w", term, err)
		}
		l.readyTerm.Store(term)
	}
	idx := l.raft.CommitIndex()
	if err := l.wait(ctx, l.raft.VerifyLeader()); err != nil {
		return 0, fmt.Errorf("verify leadership: %w", err)
	}
	return idx, nil
}

// coalescer shares rounds of run between concurrent callers. At most one
// round runs; callers arriving meanwhile all join the one next round.
type coalescer struct {
	run     func(context.Context) (uint64, error)
	timeout time.Duration

	mu   sync.Mutex
	busy bool   // a loop goroutine is running rounds
	next *round // not started yet: what a new caller joins

	callers, rounds atomic.Uint64
}

type round struct {
	done     chan struct{}
	deadline time.Time // the starting caller's
	idx      uint64
	err      error
}

func (c *coalescer) do(ctx context.Context) (uint64, error) {
	c.mu.Lock()
	r := c.next
	if r == nil {
		deadline, ok := ctx.Deadline()
		if !ok {
			deadline = time.Now().Add(c.timeout)
		}
		r = &round{done: make(chan struct{}), deadline: deadline}
		c.next = r
		if !c.busy {
			c.busy = true
			go c.loop()
		}
	}
	c.mu.Unlock()
	select {
	case <-r.done:
		return r.idx, r.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (c *coalescer) loop() {
	for {
		c.mu.Lock()
		r := c.next
		if r == nil {
			c.busy = false
			c.mu.Unlock()
			return
		}
		c.next = nil
		c.mu.Unlock()
		c.rounds.Add(1)
		ctx, cancel := context.WithDeadline(context.Background(), r.deadline)
		r.idx, r.err = c.run(ctx)
		cancel()
		close(r.done)
	}
}
