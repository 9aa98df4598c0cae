package balance

import (
	"math"
	"testing"
	"time"

	"ssi/cluster/telemetry"
	"ssi/raftstore"
)

type fakeAgreed struct {
	nodes []raftstore.Node
	procs []raftstore.Proc
	migs  []raftstore.Migration
	moves []raftstore.MoveRecord
}

func (f fakeAgreed) Nodes() []raftstore.Node           { return f.nodes }
func (f fakeAgreed) Procs() []raftstore.Proc           { return f.procs }
func (f fakeAgreed) Migrations() []raftstore.Migration { return f.migs }
func (f fakeAgreed) Moves() []raftstore.MoveRecord     { return f.moves }

type fakeSamples map[string]telemetry.Sample

func (f fakeSamples) Get(n string) (telemetry.Sample, bool) { s, ok := f[n]; return s, ok }

func demands(nodes []Node) map[string]float64 {
	out := map[string]float64{}
	for _, n := range nodes {
		out[n.Name] = math.Round(n.Demand*100) / 100
	}
	return out
}

// A move the samples do not show yet counts where the process goes:
// under way, or ended since the destination's sample.
func TestSnapshotCountsMovesTheSamplesLag(t *testing.T) {
	now := time.Now()
	up := func(name string) raftstore.Node {
		return raftstore.Node{Name: name, State: raftstore.NodeUp, Speed: telemetry.SpeedUnit}
	}
	busy := telemetry.ProcSample{Demand: 1, CPU: 50, CPUTime: time.Minute}
	a := fakeAgreed{nodes: []raftstore.Node{up("n1"), up("n2"), up("n3")},
		procs: []raftstore.Proc{{CPID: 1, Node: "n1", State: raftstore.ProcRunning},
			{CPID: 2, Node: "n1", State: raftstore.ProcMigrating}, {CPID: 3, Node: "n2", State: raftstore.ProcRunning}}}
	s := fakeSamples{
		"n1": {Node: "n1", CPUs: 1, Load: 1, Procs: map[int]telemetry.ProcSample{1: busy, 2: busy}},
		"n2": {Node: "n2", CPUs: 1, Load: 0.5, Procs: map[int]telemetry.ProcSample{}},
		"n3": {Node: "n3", CPUs: 1, Load: 0},
	}
	nodes, procs := Snapshot("n1", a, s, now)
	if got := demands(nodes); got["n1"] != 2 || got["n2"] != 0.5 || got["n3"] != 0 {
		t.Fatalf("without moves: %v", got)
	}
	if len(procs) != 1 || procs[0].CPID != 1 || procs[0].Demand != 1 || nodes[0].Speed != 1 {
		t.Fatalf("n1's movable processes: %+v (speed %v)", procs, nodes[0].Speed)
	}
	// 2 is on its way to n3; 3 arrived at n2 a second ago, after n2's
	// sample, which does not list it (its 0.5 load is something else).
	a.migs = []raftstore.Migration{{CPID: 2, From: "n1", To: "n3"}}
	a.moves = []raftstore.MoveRecord{{CPID: 3, From: "n3", To: "n2", Committed: true,
		MoveStats: raftstore.MoveStats{EndedAt: now.Add(-time.Second), Total: 300 * time.Millisecond}}}
	nodes, _ = Snapshot("n1", a, s, now)
	if got := demands(nodes); got["n1"] != 1 || got["n2"] != 1.5 || got["n3"] != 1 {
		t.Fatalf("with the moves: %v", got)
	}
	// Once n2's sample lists 3, it is not counted twice; an old move
	// counts no more.
	s["n2"] = telemetry.Sample{Node: "n2", CPUs: 1, Load: 1, Procs: map[int]telemetry.ProcSample{3: busy}}
	nodes, _ = Snapshot("n1", a, s, now)
	if got := demands(nodes); got["n2"] != 1.5 {
		t.Fatalf("n2 listing it: %v", got)
	}
	a.moves[0].EndedAt = now.Add(-time.Minute)
	a.moves[0].To, a.moves[0].From = "n3", "n2"
	nodes, _ = Snapshot("n1", a, s, now)
	if got := demands(nodes); got["n3"] != 1 {
		t.Fatalf("a move a minute old: %v", got)
	}
}
