package jobs

import (
	"context"
	"errors"
	"strconv"
	"syscall"
	"testing"
	"time"

	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// adoptCase is a process an earlier agent of node1 recorded, and what the
// new agent must make of it.
type adoptCase struct {
	name     string
	cpid     int
	node     string // where the agreed state places it; "" if it forgot it
	moveTo   string // the node a move in flight takes it to
	arriving bool   // recorded as restored here by that move
	runs     bool   // the Resolver's verdict
	asks     string // "": no Resolve; else "arriving" or "leaving"
	adopted  bool   // resumed here, else killed
}

var adoptCases = []adoptCase{
	{name: "arrived and committed", cpid: 101, node: "node2", moveTo: "node1", arriving: true, runs: true, asks: "arriving", adopted: true},
	{name: "arrived but aborted", cpid: 102, node: "node2", moveTo: "node1", arriving: true, asks: "arriving"},
	{name: "leaving but aborted", cpid: 103, node: "node1", moveTo: "node2", runs: true, asks: "leaving", adopted: true},
	{name: "left and committed", cpid: 104, node: "node1", moveTo: "node2", asks: "leaving"},
	{name: "forgotten by the cluster", cpid: 105},
	{name: "runs elsewhere now", cpid: 106, node: "node2"},
	{name: "runs here", cpid: 107, node: "node1", adopted: true},
}

// setUp places c's process as the case says and records it on node1.
func (tc adoptCase) setUp(t *testing.T, tb *Table, s *raftstore.Store, c *child) {
	if tc.node != "" {
		raftstoretest.AddProc(t, s, raftstore.ProcAdd{CPID: tc.cpid, Home: tc.node, StartedAt: time.Now()})
	}
	if tc.moveTo != "" {
		raftstoretest.Apply(t, s, raftstore.MigrationStart{ID: "m" + strconv.Itoa(tc.cpid), CPID: tc.cpid,
			To: tc.moveTo, StartedAt: time.Now()})
	}
	tb.Record(tc.cpid, c.pid(), tc.arriving)
}

// A new agent resumes the recorded processes that run here by the
// agreed state (a half-done move's by the Resolver's verdict), kills the
// others, and removes from the agreed state the processes of this node
// that no record accounts for.
func TestAdoptAfterRestart(t *testing.T) {
	tb, s := testTable(t)
	kids := map[int]*child{}
	for _, tc := range adoptCases {
		kids[tc.cpid] = sleeper(t)
		tc.setUp(t, tb, s, kids[tc.cpid])
	}
	lost := raftstoretest.AddProc(t, s, raftstore.ProcAdd{CPID: 110, Home: "node1", StartedAt: time.Now()})
	leaving := raftstoretest.AddProc(t, s, raftstore.ProcAdd{CPID: 111, Home: "node1", StartedAt: time.Now()})
	raftstoretest.Apply(t, s, raftstore.MigrationStart{ID: "m111", CPID: leaving, To: "node2", StartedAt: time.Now()})
	r := resolver{runs: map[int]bool{}, calls: map[int]bool{}}
	for _, tc := range adoptCases {
		r.runs[tc.cpid] = tc.runs
	}
	tb.Adopt(context.Background(), r)
	t.Cleanup(func() { endAdopted(t, tb, s, kids) })
	if err := tb.WaitAdoption(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range adoptCases {
		t.Run(tc.name, func(t *testing.T) { tc.check(t, tb, r, kids[tc.cpid]) })
	}
	if _, ok := s.Proc(lost); ok {
		t.Error("a process of this node with no record is still in the agreed state")
	}
	if _, ok := s.Proc(leaving); !ok {
		t.Error("a process moving away with no record was removed")
	}
}

func (tc adoptCase) check(t *testing.T, tb *Table, r resolver, c *child) {
	arriving, asked := r.calls[tc.cpid]
	switch {
	case tc.asks == "" && asked:
		t.Errorf("Resolve was asked")
	case tc.asks != "" && (!asked || arriving != (tc.asks == "arriving")):
		t.Errorf("Resolve asked %v (arriving %v), want %s", asked, arriving, tc.asks)
	}
	_, inTable := tb.Get(tc.cpid)
	_, recErr := tb.rec.read(tc.cpid)
	if tc.adopted {
		if !inTable || c.ended() || recErr != nil {
			t.Fatalf("not adopted: in the table %v, ended %v, record %v", inTable, c.ended(), recErr)
		}
		return
	}
	if sig := c.waitEnded(t); sig != syscall.SIGKILL {
		t.Errorf("ended by %v, want SIGKILL", sig)
	}
	if inTable || recErr == nil {
		t.Errorf("a killed process is in the table (%v) or recorded (%v)", inTable, recErr)
	}
}

// endAdopted ends the adopted processes and waits until the table has
// told the cluster, before the store closes.
func endAdopted(t *testing.T, tb *Table, s *raftstore.Store, kids map[int]*child) {
	for _, j := range tb.list() {
		_ = kids[j.cpid].cmd.Process.Kill()
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, tc := range adoptCases {
		for tc.adopted && time.Now().Before(deadline) {
			if _, ok := s.Proc(tc.cpid); !ok {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// A move whose outcome cannot be learnt leaves its copy stopped and
// recorded, and adoption is tried again.
func TestAdoptWaitsForAnUnknownOutcome(t *testing.T) {
	tb, s := testTable(t)
	c := sleeper(t)
	tc := adoptCase{cpid: 120, node: "node2", moveTo: "node1", arriving: true}
	tc.setUp(t, tb, s, c)
	noQuorum := errors.New("no quorum")
	r := resolver{err: map[int]error{120: noQuorum}}
	if err := tb.adoptOnce(context.Background(), r); !errors.Is(err, noQuorum) {
		t.Fatalf("adoptOnce: %v", err)
	}
	if _, ok := tb.Get(120); ok || c.ended() {
		t.Fatalf("adopted or killed before the outcome is known (ended %v)", c.ended())
	}
	if _, err := tb.rec.read(120); err != nil {
		t.Fatalf("the record is gone: %v", err)
	}
	select {
	case <-tb.adopted:
		t.Fatal("adoption is over")
	default:
	}
}
