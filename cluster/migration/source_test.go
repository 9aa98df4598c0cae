package migration_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"ssi/cluster/migration"
	"ssi/cluster/wire"
	"ssi/fs"
	"ssi/raftstore"
)

// A move that works: the destination's copy runs, the source's is
// killed, the agreed state moved the process and recorded the move.
func TestMoveCommits(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		pageServer bool
		home       string // the process's home
		on         string // the node asked
		target     string
		uid        uint32
	}{
		{name: "images only", home: "node1", on: "node1", target: "node2"},
		{name: "pages through the page server", pageServer: true, home: "node1", on: "node1", target: "node2"},
		{name: "home, asked by its owner", home: "node2", on: "node1", target: "home", uid: owner},
		{name: "balance", home: "node1", on: "node1", target: "balance"},
		{name: "asked of a node it does not run on", home: "node1", on: "node2", target: "node2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			n1, n2 := h.node("node1"), h.node("node2")
			n2.criu.noPageServer = !tc.pageServer
			n1.balanceTo = "node2"
			cpid := h.startJob(tc.home)

			wantErr(t, h.await(h.migrate(tc.on, cpid, tc.target, tc.uid)), nil)
			h.settled(cpid, "node2")
			if rec := h.moved(cpid, true, ""); rec.Bytes != imageBytes {
				t.Errorf("the move sent %d bytes, want %d", rec.Bytes, imageBytes)
			}
			if _, _, served := n2.criu.counts(); tc.pageServer != (served == pagesSize) {
				t.Errorf("the page server stored %d bytes (page server %v)", served, tc.pageServer)
			}
			if p, _ := h.store.Proc(cpid); p.NMigs != 1 {
				t.Errorf("NMigs %d, want 1", p.NMigs)
			}
			if j, ok := n2.jobs.Job(cpid); !ok || j.Pid() == 0 {
				t.Error("the process is not a job of node2")
			}
			if why := n1.jobs.failure(cpid); why != "" {
				t.Errorf("node1 remembers a failure: %s", why)
			}
		})
	}
}

// refusal is a move refused before anything stops.
type refusal struct {
	name    string
	setup   func(h *harness, cpid int)
	want    error
	why     string
	started bool // a move was begun in the agreed state
}

var refusals = []refusal{
	{"cantmove", func(h *harness, _ int) { h.node("node1").jobs.cantMove = "it holds a terminal" },
		fs.ErrCannotMove, "it holds a terminal", true},
	{"the destination lacks what it needs", func(h *harness, _ int) {
		h.node("node2").host.refuse = "node2 lacks files the process uses: /data/x"
	}, fs.ErrCannotMove, "lacks files", true},
	{"the destination blocks arrivals meanwhile", func(h *harness, _ int) {
		h.node("node2").onStream = func(*wire.StreamHeader) {
			if _, err := h.store.Apply(context.Background(), raftstore.AdminSet{Node: "node2",
				Switch: raftstore.SwitchBlock, Value: true}); err != nil {
				h.t.Errorf("block: %v", err)
			}
		}
	}, fs.ErrCannotMove, "refuses arriving processes (block)", true},
	{"not the agreed move", func(h *harness, _ int) {
		h.node("node2").onStream = func(hdr *wire.StreamHeader) { hdr.ID = "forged" }
	}, fs.ErrCannotMove, "no such migration", true},
	{"the stream is not the source's", func(h *harness, _ int) { h.node("node2").peerName = "node3" },
		fs.ErrCannotMove, "node3 may not move processes of node1", true},
	{"the destination cannot reach the leader", func(h *harness, _ int) {
		h.node("node2").cluster.catchUpErr = raftstore.ErrNoLeader
	}, fs.ErrCannotMove, "cannot reach the leader", true},
	{"the destination is unreachable", func(h *harness, _ int) {
		h.node("node1").cluster.dialErr = errors.New("connection refused")
	}, fs.ErrNodeDown, "reaching node2", true},
	{"the job is already moving here", func(h *harness, cpid int) {
		j, _ := h.node("node1").jobs.Job(cpid)
		j.(*fakeJob).setMoving()
	}, fs.ErrBusy, "", false},
}

// A move refused before anything stops: the process never freezes and
// runs on at its source. A move that started is recorded as aborted,
// with the reason, and cantmove remembers it.
func TestMoveRefused(t *testing.T) {
	t.Parallel()
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			n1, n2 := h.node("node1"), h.node("node2")
			cpid := h.startJob("node1")
			tc.setup(h, cpid)

			wantFailure(t, h.await(h.migrate("node1", cpid, "node2", 0)), tc.want, tc.why)
			h.settled(cpid, "node1")
			if dumps, _, _ := n1.criu.counts(); dumps != 0 {
				t.Errorf("the process was frozen %d times", dumps)
			}
			if _, restores, _ := n2.criu.counts(); restores != 0 {
				t.Errorf("node2 restored %d times", restores)
			}
			if !tc.started {
				h.noMove(cpid)
				return
			}
			h.moved(cpid, false, tc.why)
			if why := n1.jobs.failure(cpid); !strings.Contains(why, tc.why) {
				t.Errorf("cantmove says %q, want it to say %q", why, tc.why)
			}
		})
	}
}

// A move that fails once the process is frozen: the source resumes it,
// no copy runs on the destination, the move is recorded as aborted.
func TestMoveFailsFrozen(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		pageServer bool
		setup      func(n1, n2 *node)
		want       error
		why        string
	}{
		{"the dump fails inside CRIU", false, func(n1, _ *node) { n1.hooks.FailDump = migration.FailInCRIU },
			fs.ErrCannotMove, "cannot dump the fuse mount"},
		{"the dump fails inside CRIU, its pages streaming", true,
			func(n1, _ *node) { n1.hooks.FailDump = migration.FailInCRIU }, fs.ErrCannotMove, "cannot dump the fuse mount"},
		{"CRIU dies in the dump", false, func(n1, _ *node) { n1.criu.dumpErr = errors.New("criu: killed") },
			fs.ErrCannotMove, "criu: killed"},
		{"the dump is made to fail after", false, func(n1, _ *node) { n1.hooks.FailDump = migration.FailAfterDump },
			fs.ErrCannotMove, "made to fail"},
		{"the stream is cut while the pages go", true, func(_, n2 *node) { n2.at = cutAt(wire.FrPages) },
			fs.ErrCannotMove, "criu: page server: EOF"},
		{"the stream is cut as the page server answers", true, func(n1, _ *node) { n1.at = cutAt(wire.FrPages) },
			fs.ErrCannotMove, "criu: page server: EOF"},
		{"the stream is cut while the images go", false, func(_, n2 *node) { n2.at = cutAt(wire.FrData) },
			fs.ErrNodeDown, "sending to node2"},
		{"its home writes cannot be committed", false, func(n1, _ *node) {
			n1.host.flush = func(context.Context) error { return raftstore.ErrNoLeader }
		}, fs.ErrNoQuorum, "/cluster/home"},
		{"the restore fails", false, func(_, n2 *node) { n2.criu.restoreErr = errors.New("criu: restore: no pid 7") },
			fs.ErrCannotMove, "restore on node2: criu: restore: no pid 7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			n1, n2 := h.node("node1"), h.node("node2")
			n2.criu.noPageServer = !tc.pageServer
			cpid := h.startJob("node1")
			tc.setup(n1, n2)

			wantFailure(t, h.await(h.migrate("node1", cpid, "node2", 0)), tc.want, tc.why)
			h.settled(cpid, "node1")
			h.moved(cpid, false, tc.why)
			if dumps, _, _ := n1.criu.counts(); dumps != 1 {
				t.Errorf("the process was frozen %d times, want 1", dumps)
			}
		})
	}
}

// The verdict cannot be recorded for a while (no quorum): both copies
// stay stopped, however often the source asks, until it can; then
// exactly one runs.
func TestVerdictLost(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		restore error
		held    string // the copies while the verdict waits
		want    error
		runs    string
	}{
		{"after the restore", nil, "node1:stopped node2:stopped", nil, "node2"},
		{"after a failed restore", errors.New("criu: restore failed"), "node1:stopped", fs.ErrCannotMove, "node1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			n1, n2 := h.node("node1"), h.node("node2")
			n2.criu.noPageServer = true
			n2.criu.restoreErr = tc.restore
			cpid := h.startJob("node1")
			n1.cluster.holdEnds()

			done := h.migrate("node1", cpid, "node2", 0)
			h.signalled(n1.cluster.held, "the verdict to be refused", 1)
			h.copiesNow(tc.held)
			h.signalled(n1.cluster.held, "the verdict to be refused again", 2)
			h.copiesNow(tc.held)
			if p, _ := h.store.Proc(cpid); p.State != raftstore.ProcMigrating {
				t.Fatalf("the process is %s while its verdict waits", p.State)
			}
			n1.cluster.releaseEnds()

			wantErr(t, h.await(done), tc.want)
			h.settled(cpid, tc.runs)
			h.moved(cpid, tc.want == nil, "")
		})
	}
}

// One move at a time: while a move is under way, another request, on
// any node, is refused as busy, and the first move goes on.
func TestSecondMoveIsBusy(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	n1 := h.node("node1")
	n1.criu.dumpGate = make(chan struct{})
	cpid := h.startJob("node1")

	first := h.migrate("node1", cpid, "node2", 0)
	h.awaitStore("the move to begin", func(s *raftstore.Store) bool {
		_, busy := s.Migration(cpid)
		return busy
	})
	for _, on := range []string{"node1", "node2"} {
		wantErr(t, h.await(h.migrate(on, cpid, "node2", 0)), fs.ErrBusy)
	}
	close(n1.criu.dumpGate)

	wantErr(t, h.await(first), nil)
	h.settled(cpid, "node2")
	h.moved(cpid, true, "")
}

// The process is removed while it moves (its owner killed it, its home
// forgot it): no copy may run, and the move says it is lost.
func TestProcessRemovedDuringMove(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	n2 := h.node("node2")
	n2.criu.noPageServer = true
	cpid := h.startJob("node1")
	n2.criu.onRestore = func() {
		if _, err := h.store.Apply(context.Background(), raftstore.ProcRemove{CPID: cpid}); err != nil {
			h.t.Errorf("remove: %v", err)
		}
	}

	wantFailure(t, h.await(h.migrate("node1", cpid, "node2", 0)), fs.ErrNoProcess, "removed during its move")
	h.settled(cpid, "")
	h.noMove(cpid)
	if _, ok := n2.jobs.record(cpid); ok {
		t.Error("node2 still records the killed copy")
	}
}
