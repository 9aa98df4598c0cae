package migration_test

import (
	"context"
	"testing"

	"ssi/cluster/migration"
	"ssi/cluster/wire"
	"ssi/fs"
	"ssi/raftstore"
)

// An agent that dies in a move leaves its copy as it was, stopped or
// not, and a record; the node's next agent takes it over (adopt) and
// settles the move through the agreed state. Whichever side's verdict
// applies first wins, and exactly one copy runs.

// takeOver starts old's node's next agent, which adopts the copy of
// cpid old recorded: it must run it, or kill it, as runs says.
func (h *harness) takeOver(old *node, cpid int, runs bool) {
	h.t.Helper()
	rec, ok := old.jobs.record(cpid)
	if !ok {
		h.t.Fatalf("%s left no record of %d", old.name, cpid)
	}
	if got := h.adopt(h.restart(old.name), rec, cpid); got != runs {
		h.t.Fatalf("%s's next agent runs its copy: %v, want %v", old.name, got, runs)
	}
}

// race is a case where one side's agent died and the other side and
// the dead one's next agent race to end the move.
type race struct {
	name      string
	nextFirst bool   // the dead agent's next one settles before the other side can
	want      error  // from the source's Migrate, if it lived
	runs      string // where the process runs in the end
	why       string // the recorded reason of the move's end
}

// The destination's agent dies once it has restored the copy, before
// the source hears of it.
func TestDestinationDiesAfterRestore(t *testing.T) {
	t.Parallel()
	for _, tc := range []race{
		{"the source aborts first", false, fs.ErrNodeDown, "node1", "during restore"},
		{"the destination's next agent commits first", true, nil, "node2", "the destination's agent restarted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			n1, n2 := h.node("node1"), h.node("node2")
			n2.criu.noPageServer = true
			n2.crashAt(migration.CrashRestored)
			cpid := h.startJob("node1")
			if tc.nextFirst {
				n1.cluster.holdEnds()
			}

			done := h.migrate("node1", cpid, "node2", 0)
			var res outcome
			if tc.nextFirst {
				h.signalled(n1.cluster.held, "the source's abort to be refused", 1)
				h.copiesNow("node1:stopped node2:stopped")
			} else {
				res = h.await(done)
			}
			h.quiesce()
			if !n2.hasCrashed() {
				t.Fatal("node2's agent did not die at the restore")
			}
			h.takeOver(n2, cpid, tc.nextFirst)
			if tc.nextFirst {
				n1.cluster.releaseEnds()
				res = h.await(done)
			}
			wantErr(t, res, tc.want)
			h.settled(cpid, tc.runs)
			h.moved(cpid, tc.nextFirst, tc.why)
		})
	}
}

// An agent dies once the move is committed, before it acted on it: the
// destination's, the verdict received (its copy waits, stopped), or the
// source's, the commit recorded (the destination never hears it and
// settles through the agreed state). Either way the process runs on
// the destination, and the dead agent's next one keeps or kills its
// copy accordingly.
func TestAgentDiesAfterCommit(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		dies   string
		setup  func(n *node)
		copies string // as the dead agent's node takes over
		runs   bool   // its copy is the one that runs
	}{
		{"the destination's, the verdict received", "node2",
			func(n *node) { n.crashAt(migration.CrashVerdict) }, "node1:dead node2:stopped", true},
		{"the source's, the commit recorded", "node1", func(n *node) {
			n.cluster.afterApply = func(cmd raftstore.Command, err error) {
				if end, ok := cmd.(raftstore.MigrationEnd); ok && end.Commit && err == nil {
					n.crash()
				}
			}
		}, "node1:stopped node2:runs", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			dead := h.node(tc.dies)
			tc.setup(dead)
			cpid := h.startJob("node1")

			res := h.await(h.migrate("node1", cpid, "node2", 0))
			if res.crashed != (tc.dies == "node1") || res.err != nil {
				t.Fatalf("Migrate: %v, the source's agent died: %v", res.err, res.crashed)
			}
			h.quiesce()
			if !dead.hasCrashed() {
				t.Fatalf("%s's agent did not die", tc.dies)
			}
			h.expectCopies(tc.copies)
			h.takeOver(dead, cpid, tc.runs)
			h.settled(cpid, "node2")
			h.moved(cpid, true, "")
		})
	}
}

// The source's agent dies with the process frozen, before anything went
// to the destination: nothing was restored there; the source's next
// agent asks for the abort (Resolve) and resumes its copy.
func TestSourceDiesFrozen(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	n1, n2 := h.node("node1"), h.node("node2")
	n1.host.flush = func(_ context.Context) error {
		n1.crash()
		return nil
	}
	cpid := h.startJob("node1")

	h.died(h.migrate("node1", cpid, "node2", 0))
	h.quiesce()
	h.expectCopies("node1:stopped")
	if _, busy := h.store.Migration(cpid); !busy {
		t.Fatal("the move is not open any more")
	}
	h.takeOver(n1, cpid, true)
	h.settled(cpid, "node1")
	h.moved(cpid, false, "the source's agent restarted")
	if _, restores, _ := n2.criu.counts(); restores != 0 {
		t.Errorf("node2 restored %d times", restores)
	}
}

// The source's agent dies as the destination's restore is reported:
// the destination, without a verdict, asks for the commit; the
// source's next agent asks for the abort. Whichever applies first wins.
func TestSourceDiesAwaitingRestore(t *testing.T) {
	t.Parallel()
	for _, tc := range []race{
		{"the destination commits first", false, nil, "node2", "source lost after restore"},
		{"the source's next agent aborts first", true, nil, "node1", "the source's agent restarted"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			n1, n2 := h.node("node1"), h.node("node2")
			n1.at = func(f wire.Frame) bool {
				if f == wire.FrRestored {
					n1.crash()
				}
				return false
			}
			if tc.nextFirst {
				n2.cluster.holdEnds()
			}
			cpid := h.startJob("node1")

			h.died(h.migrate("node1", cpid, "node2", 0))
			if tc.nextFirst {
				h.signalled(n2.cluster.held, "the destination's commit to be refused", 1)
				h.copiesNow("node1:stopped node2:stopped")
			} else {
				h.quiesce()
			}
			h.takeOver(n1, cpid, tc.nextFirst)
			n2.cluster.releaseEnds()
			h.settled(cpid, tc.runs)
			h.moved(cpid, !tc.nextFirst, tc.why)
		})
	}
}
