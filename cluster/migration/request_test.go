package migration_test

import (
	"fmt"
	"testing"
	"time"

	"ssi/cluster/api"
	"ssi/fs"
	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// request is a write to `where` that the Mover answers before any move
// begins.
type request struct {
	name    string
	setup   func(h *harness)
	on      string // the node asked
	target  string
	uid     uint32
	missing bool // ask for a process that does not exist
	want    error
}

// A request that is refused, or that has nothing to do, before any
// move begins: the process keeps running where it is, untouched, and
// no move is recorded.
func TestMigrateRequest(t *testing.T) {
	t.Parallel()
	for _, tc := range []request{
		{name: "home, already home", on: "node1", target: "home"},
		{name: "home, already home, asked elsewhere", on: "node2", target: "home"},
		{name: "balance, already the best place", on: "node1", target: "balance",
			setup: func(h *harness) { h.node("node1").balanceTo = "node1" }},
		{name: "balance, no place at all", on: "node1", target: "balance"},
		{name: "its own node", on: "node1", target: "node1", want: fs.ErrBadValue},
		{name: "an unknown node", on: "node1", target: "node9", want: fs.ErrBadValue},
		{name: "not a node's name", on: "node1", target: "../node2", want: fs.ErrBadValue},
		{name: "a node that is down", on: "node1", target: "node3", want: fs.ErrNodeDown, setup: func(h *harness) {
			raftstoretest.Apply(h.t, h.store, raftstore.NodeUpsert{Name: "node3", Addr: "node3:7946",
				State: raftstore.NodeDown, JoinedAt: time.Now()})
		}},
		{name: "a node that blocks arrivals", on: "node1", target: "node2", want: fs.ErrNodeDown,
			setup: func(h *harness) {
				raftstoretest.Apply(h.t, h.store, raftstore.AdminSet{Node: "node2", Switch: raftstore.SwitchBlock, Value: true})
			}},
		{name: "another user's process", on: "node1", target: "node2", uid: owner + 1, want: fs.ErrPermission},
		{name: "another user's process, asked elsewhere", on: "node2", target: "node2", uid: owner + 1,
			want: fs.ErrPermission},
		{name: "no such process", on: "node1", target: "node2", missing: true, want: fs.ErrNoProcess},
		{name: "the node it runs on cannot be asked", on: "node2", target: "node2", want: fs.ErrNodeDown,
			setup: func(h *harness) {
				h.node("node2").cluster.callErr = fmt.Errorf("%w: dial node1: connection refused", api.ErrRetry)
			}},
		{name: "not a member yet", on: "node1", target: "node2", want: fs.ErrNoQuorum,
			setup: func(h *harness) { h.node("node1").cluster.storeErr = api.ErrNotMember }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t)
			cpid := h.startJob("node1")
			if tc.setup != nil {
				tc.setup(h)
			}
			asked := cpid
			if tc.missing {
				asked = cpid + 100
			}

			wantErr(t, h.await(h.migrate(tc.on, asked, tc.target, tc.uid)), tc.want)
			h.settled(cpid, "node1")
			h.noMove(cpid)
			h.expectCopies("node1:runs")
			if dumps, _, _ := h.node("node1").criu.counts(); dumps != 0 {
				t.Errorf("the process was frozen %d times", dumps)
			}
		})
	}
}
