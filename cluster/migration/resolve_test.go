package migration_test

import (
	"context"
	"testing"
	"time"

	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// Resolve is how a node's next agent ends a move its previous agent
// left open: the destination asks for the commit, the source for the
// abort, and the outcome that holds is the first one applied. Resolve
// says whether the copy on the asking node is the one that runs; both
// sides always agree on it, and a process removed meanwhile runs
// nowhere.
func TestResolve(t *testing.T) {
	t.Parallel()
	commit, abort := raftstore.MigrationEnd{Commit: true}, raftstore.MigrationEnd{}
	for _, tc := range []struct {
		name     string
		first    raftstore.Command // what happened before the next agent asks, if anything
		node     string            // whose next agent asks
		arriving bool
		here     bool
		on       string // where the process is then ("": gone)
		why      string // the recorded reason, if the asking side's verdict won
	}{
		{"the destination asks for the commit", nil, "node2", true, true, "node2", "the destination's agent restarted"},
		{"the source asks for the abort", nil, "node1", false, true, "node1", "the source's agent restarted"},
		{"the destination, after the source aborted", abort, "node2", true, false, "node1", ""},
		{"the source, the move already aborted", abort, "node1", false, true, "node1", ""},
		{"the source, after the destination committed", commit, "node1", false, false, "node2", ""},
		{"the destination, the move already committed", commit, "node2", true, true, "node2", ""},
		{"the destination, the process removed", raftstore.ProcRemove{}, "node2", true, false, "", ""},
		{"the source, the process removed", raftstore.ProcRemove{}, "node1", false, false, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			m := h.beginMove()
			if tc.first != nil {
				raftstoretest.Apply(t, h.store, withMove(tc.first, m))
			}

			ctx, cancel := context.WithTimeout(context.Background(), waitFor)
			defer cancel()
			here, err := h.node(tc.node).mover.Resolve(ctx, m, tc.arriving)
			if err != nil || here != tc.here {
				t.Fatalf("Resolve on %s: runs here %v, %v; want %v", tc.node, here, err, tc.here)
			}
			h.resolvedOn(m, tc.on, tc.why)
		})
	}
}

// Without a quorum, Resolve waits, the copy stopped, until the outcome
// can be recorded.
func TestResolveWaitsForQuorum(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	m := h.beginMove()
	n2 := h.node("node2")
	n2.cluster.holdEnds()

	type result struct {
		here bool
		err  error
	}
	done := make(chan result, 1)
	go func() {
		here, err := n2.mover.Resolve(context.Background(), m, true)
		done <- result{here, err}
	}()
	h.signalled(n2.cluster.held, "the commit to be refused", 2)
	if _, busy := h.store.Migration(m.CPID); !busy {
		t.Fatal("the move ended without a quorum")
	}
	n2.cluster.releaseEnds()
	select {
	case r := <-done:
		if !r.here || r.err != nil {
			t.Fatalf("Resolve: runs here %v, %v", r.here, r.err)
		}
	case <-time.After(waitFor):
		t.Fatal("Resolve did not return")
	}
	h.resolvedOn(m, "node2", "the destination's agent restarted")
}

// beginMove records a move of a process from node1 to node2, as its
// source does before it dumps, with no process behind it: Resolve
// decides from the agreed state alone.
func (h *harness) beginMove() raftstore.Migration {
	h.t.Helper()
	cpid := raftstoretest.AddProc(h.t, h.store, raftstore.ProcAdd{Home: "node1", Node: "node1", UID: owner,
		Argv: []string{"sleep", "300"}, StartedAt: time.Now()})
	raftstoretest.Apply(h.t, h.store, raftstore.MigrationStart{ID: "m1", CPID: cpid, To: "node2", StartedAt: time.Now()})
	m, ok := h.store.Migration(cpid)
	if !ok {
		h.t.Fatal("no migration after MigrationStart")
	}
	return m
}

// withMove aims a command of the other side at move m.
func withMove(cmd raftstore.Command, m raftstore.Migration) raftstore.Command {
	switch c := cmd.(type) {
	case raftstore.MigrationEnd:
		c.CPID, c.ID = m.CPID, m.ID
		c.Stats = &raftstore.MoveStats{Reason: "the other side", EndedAt: time.Now()}
		return c
	case raftstore.ProcRemove:
		c.CPID = m.CPID
		return c
	}
	return cmd
}

// resolvedOn checks the agreed state after a Resolve: the move ended,
// the process on node (or gone), and, when why is set, the move
// recorded with the asking side's reason.
func (h *harness) resolvedOn(m raftstore.Migration, node, why string) {
	h.t.Helper()
	if _, busy := h.store.Migration(m.CPID); busy {
		h.t.Fatal("the move is still open")
	}
	p, ok := h.store.Proc(m.CPID)
	switch {
	case node == "" && ok:
		h.t.Fatalf("the process is on %s, want it gone", p.Node)
	case node != "" && (!ok || p.Node != node || p.State != raftstore.ProcRunning):
		h.t.Fatalf("the process is %+v (%v), want it running on %s", p, ok, node)
	}
	if why == "" {
		return
	}
	moves := h.store.Moves()
	if len(moves) != 1 || moves[0].ID != m.ID || moves[0].Committed != (node == "node2") || moves[0].Reason != why {
		h.t.Fatalf("moves %+v; want %s ended with %q", moves, m.ID, why)
	}
}
