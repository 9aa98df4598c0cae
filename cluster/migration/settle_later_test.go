package migration_test

import (
	"errors"
	"testing"
	"time"

	"ssi/cluster/wire"
	"ssi/fs"
	"ssi/raftstore"
)

// Past Config.SettleWait a side whose outcome cannot be recorded stops
// waiting for it: Migrate says so (no quorum) and settleLater keeps
// asking in the background. Until it learns the outcome no copy runs;
// then exactly one does.

// shortSettle is the agents' SettleWait here: a settle gives up after
// one or two refused attempts.
const shortSettle = 200 * time.Millisecond

// stillHeld checks, after a few more refused attempts of each node that
// asks, that the copies are as held says and the move is still open.
// Each node's first settle has given up already (Migrate returned, or
// the stream's goroutine ended).
func stillHeld(h *harness, cpid int, held string, asking ...string) {
	h.t.Helper()
	h.copiesNow(held)
	for _, n := range asking {
		// Of three refusals one may be left over from the first
		// settle; the others are settleLater's.
		h.signalled(h.node(n).cluster.held, n+"'s outcome to be refused", 3)
		h.copiesNow(held)
	}
	if p, _ := h.store.Proc(cpid); p.State != raftstore.ProcMigrating {
		h.t.Fatalf("the process is %s while its outcome waits", p.State)
	}
}

// unrecorded is a move whose outcome the source cannot record in time.
type unrecorded struct {
	name    string
	restore error    // the destination's restore fails so
	why     string   // in Migrate's error
	held    string   // the copies while the outcome waits
	asking  []string // the nodes that ask for it meanwhile
	runs    string
	reason  string // the recorded reason of the move's end
}

// The source cannot record its verdict within SettleWait: Migrate
// returns no quorum with the copies stopped, and they stay so while the
// cluster has no quorum. After a good restore the destination, which
// hears no verdict, cannot record its commit either; once the quorum is
// back the commit holds: the destination's copy runs, the source's is
// killed. After a failed restore the abort is recorded and the source
// resumes its copy.
func TestOutcomeRecordedLater(t *testing.T) {
	t.Parallel()
	for _, tc := range []unrecorded{
		{"after the restore", nil, "the outcome could not be recorded yet",
			"node1:stopped node2:stopped", []string{"node1", "node2"}, "node2", ""},
		{"after a failed restore", errors.New("criu: restore failed"), "the outcome is not known yet",
			"node1:stopped", []string{"node1"}, "node1", "restore on node2: criu: restore failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarnessSettling(t, shortSettle)
			n1, n2 := h.node("node1"), h.node("node2")
			n2.criu.noPageServer = true
			n2.criu.restoreErr = tc.restore
			cpid := h.startJob("node1")
			// The cluster has lost its quorum: no MigrationEnd applies.
			n1.cluster.holdEnds()
			n2.cluster.holdEnds()

			wantFailure(t, h.await(h.migrate("node1", cpid, "node2", 0)), fs.ErrNoQuorum, tc.why)
			h.copiesNow(tc.held)
			// The destination's side of the stream has ended: it asks,
			// if at all, in the background too.
			h.quiesce()
			stillHeld(h, cpid, tc.held, tc.asking...)
			n1.cluster.releaseEnds()
			n2.cluster.releaseEnds()

			h.settled(cpid, tc.runs)
			h.moved(cpid, tc.runs == "node2", tc.reason)
			if _, landed := n2.jobs.Job(cpid); landed != (tc.runs == "node2") {
				t.Errorf("the process is a job of node2: %v", landed)
			}
		})
	}
}

// The source's agent dies as the restore is reported, and the
// destination, which lost its source, cannot record its commit within
// SettleWait: its copy stays stopped until it can, then lands. The
// source's next agent finds the move committed and kills its copy.
func TestDestinationCommitsLater(t *testing.T) {
	t.Parallel()
	h := newHarnessSettling(t, shortSettle)
	n1, n2 := h.node("node1"), h.node("node2")
	n1.at = func(f wire.Frame) bool {
		if f == wire.FrRestored {
			n1.crash()
		}
		return false
	}
	n2.cluster.holdEnds()
	cpid := h.startJob("node1")

	h.died(h.migrate("node1", cpid, "node2", 0))
	// The arrival's first settle gave up: the stream's goroutine ended.
	h.quiesce()
	stillHeld(h, cpid, "node1:stopped node2:stopped", "node2")
	n2.cluster.releaseEnds()

	h.expectCopies("node1:stopped node2:runs")
	h.takeOver(n1, cpid, false)
	h.settled(cpid, "node2")
	h.moved(cpid, true, "source lost after restore")
}
