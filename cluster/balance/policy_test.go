package balance

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// lab is n nodes of cpus CPUs each, node1 first, idle.
func lab(n int, cpus float64) []Node {
	var out []Node
	for i := 1; i <= n; i++ {
		out = append(out, Node{Name: fmt.Sprintf("node%d", i), Up: true, CPUs: cpus, Speed: 1,
			MemTotal: 1 << 30, MemFree: 900 << 20})
	}
	return out
}

// busy are k CPU-bound processes that ran long enough to be worth a move.
func busy(k, first int) []Proc {
	var out []Proc
	for i := 0; i < k; i++ {
		out = append(out, Proc{CPID: first + i, Demand: 1, CPUTime: 10 * time.Second, MoveCost: 300 * time.Millisecond,
			RSS: 4 << 20})
	}
	return out
}

// settle runs every node's plan, round after round, carrying each move
// out in the snapshot, until nothing moves; it returns the processes per
// node and the moves made.
func settle(t *testing.T, nodes []Node, on map[string][]Proc, cfg Config) (map[string]int, int) {
	t.Helper()
	moves := 0
	for round := 0; round < 100; round++ {
		moved := false
		for i := range nodes {
			for j := range nodes {
				nodes[j].Demand = 0
				for _, p := range on[nodes[j].Name] {
					nodes[j].Demand += p.Demand
				}
			}
			ds, _ := Plan(nodes, nodes[i].Name, on[nodes[i].Name], cfg)
			if len(ds) == 0 {
				continue
			}
			// The loop carries out one move per round: the next plan
			// sees it in the loads.
			d := ds[0]
			for k, p := range on[d.From] {
				if p.CPID == d.CPID {
					p.SinceMove = time.Second
					on[d.From] = append(on[d.From][:k:k], on[d.From][k+1:]...)
					on[d.To] = append(on[d.To], p)
					break
				}
			}
			moved = true
			moves++
		}
		if !moved {
			break
		}
	}
	count := map[string]int{}
	for _, n := range nodes {
		count[n.Name] = len(on[n.Name])
	}
	return count, moves
}

// Equal jobs started on one node spread evenly, each moved once, and an
// even load then stays put.
func TestPlanSpreadsEvenly(t *testing.T) {
	for _, tc := range []struct {
		nodes, jobs int
		want        map[string]int
	}{
		{4, 8, map[string]int{"node1": 2, "node2": 2, "node3": 2, "node4": 2}},
		{4, 9, map[string]int{"node1": 3, "node2": 2, "node3": 2, "node4": 2}},
		{3, 2, map[string]int{"node1": 1, "node2": 1, "node3": 0}},
		{2, 1, map[string]int{"node1": 1, "node2": 0}},
	} {
		nodes := lab(tc.nodes, 0.5)
		got, moves := settle(t, nodes, map[string][]Proc{"node1": busy(tc.jobs, 100)}, DefaultConfig)
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%d jobs on %d nodes: %v, want %v", tc.jobs, tc.nodes, got, tc.want)
		}
		if want := tc.jobs - tc.want["node1"]; moves != want {
			t.Errorf("%d jobs on %d nodes: %d moves, want %d", tc.jobs, tc.nodes, moves, want)
		}
	}
}

// A node of twice the CPUs takes twice the work.
func TestPlanWeighsCapacity(t *testing.T) {
	nodes := lab(4, 0.5)
	nodes[0].CPUs = 1
	got, _ := settle(t, nodes, map[string][]Proc{"node2": busy(12, 100)}, DefaultConfig)
	if got["node1"] < 4 || got["node1"] > 5 {
		t.Errorf("the 1-CPU node runs %d of 12, want 4-5: %v", got["node1"], got)
	}
	// Makespan against the capacity-weighted ideal (12 jobs / 2.5 CPUs).
	worst := 0.0
	for _, n := range nodes {
		worst = max(worst, float64(got[n.Name])/n.CPUs)
	}
	if ratio := worst / (12 / 2.5); ratio > 1.3 {
		t.Errorf("makespan %.2fx the ideal (%v)", ratio, got)
	}
	// Speed counts like CPUs.
	nodes = lab(2, 1)
	nodes[1].Speed = 3
	got, _ = settle(t, nodes, map[string][]Proc{"node1": busy(4, 100)}, DefaultConfig)
	if got["node2"] != 3 {
		t.Errorf("a 3x faster node runs %d of 4, want 3 (%v)", got["node2"], got)
	}
}

// What the policy must leave alone, and says why.
func TestPlanRespectsSwitchesAndCosts(t *testing.T) {
	young := busy(1, 200)[0]
	young.CPUTime = 100 * time.Millisecond
	recent := busy(1, 201)[0]
	recent.SinceMove = 5 * time.Second
	locked := busy(1, 202)[0]
	locked.Lock = true
	stuck := busy(1, 203)[0]
	stuck.CantMove = "pid 9 has an established TCP connection"
	idle := busy(1, 204)[0]
	idle.Demand = 0.01
	for _, tc := range []struct {
		name  string
		nodes func([]Node)
		procs []Proc
		why   string
	}{
		{"locked", nil, []Proc{locked}, "locked"},
		{"cantmove", nil, []Proc{stuck}, "cannot move: pid 9"},
		{"young", nil, []Proc{young}, "a move costs about 300ms"},
		{"cooldown", nil, []Proc{recent}, "moved 5s ago"},
		{"idle", nil, []Proc{idle}, "idle"},
		{"stay", func(n []Node) { n[0].Stay = true }, busy(1, 205), "node1 stays"},
		{"all blocked", func(n []Node) { n[1].Block = true; n[2].Up = false }, busy(1, 206), "no node would run it"},
	} {
		nodes := lab(3, 0.5)
		nodes[0].Demand = 3 // busy enough that anything would gain
		if tc.nodes != nil {
			tc.nodes(nodes)
		}
		ds, rej := Plan(nodes, "node1", tc.procs, DefaultConfig)
		if len(ds) != 0 {
			t.Errorf("%s: moved %+v", tc.name, ds)
			continue
		}
		if len(rej) != 1 || !strings.Contains(rej[0].Why, tc.why) {
			t.Errorf("%s: rejected %+v, want %q", tc.name, rej, tc.why)
		}
	}
	// A blocked node is skipped, not the move: it goes to the other one.
	nodes := lab(3, 0.5)
	nodes[0].Demand, nodes[1].Block = 3, true
	if ds, _ := Plan(nodes, "node1", busy(1, 300), DefaultConfig); len(ds) != 1 || ds[0].To != "node3" {
		t.Errorf("with node2 blocked: %+v", ds)
	}
}

// Short of memory, a node sends away the process that relieves it most,
// to the node with room, even when the load is even.
func TestPlanUshersMemory(t *testing.T) {
	nodes := lab(3, 0.5)
	nodes[0].MemFree = 50 << 20
	nodes[1].MemFree = 300 << 20
	nodes[2].MemFree = 800 << 20
	small, big := busy(2, 10)[0], busy(2, 10)[1]
	small.RSS, big.RSS = 20<<20, 400<<20
	small.Demand, big.Demand = 0.5, 0.5
	nodes[0].Demand, nodes[1].Demand, nodes[2].Demand = 1, 1, 1
	ds, _ := Plan(nodes, "node1", []Proc{small, big}, DefaultConfig)
	if len(ds) != 1 || ds[0].CPID != big.CPID || ds[0].To != "node3" || ds[0].Kind != "memory" {
		t.Fatalf("ushered %+v, want %d to node3 for memory", ds, big.CPID)
	}
	// No node has room for it: the next largest goes.
	nodes[2].MemFree = 300 << 20
	ds, _ = Plan(nodes, "node1", []Proc{small, big}, DefaultConfig)
	if len(ds) != 1 || ds[0].CPID != small.CPID || ds[0].Kind != "memory" {
		t.Fatalf("ushered %+v, want %d", ds, small.CPID)
	}
	// A locked one stays, whatever the memory.
	big.Lock = true
	nodes[2].MemFree = 800 << 20
	small.Lock = true
	if ds, _ = Plan(nodes, "node1", []Proc{small, big}, DefaultConfig); len(ds) != 0 {
		t.Fatalf("moved locked processes: %+v", ds)
	}
}

// Best places a new process on the node where it runs soonest, and keeps
// a running one where it is unless another is clearly better.
func TestBest(t *testing.T) {
	nodes := lab(3, 0.5)
	nodes[0].Demand, nodes[1].Demand, nodes[2].Demand = 2, 1, 0.5
	if got := Best(nodes, "", 1, DefaultConfig); got != "node3" {
		t.Errorf("a new process: %q", got)
	}
	nodes[2].Block = true
	if got := Best(nodes, "", 1, DefaultConfig); got != "node2" {
		t.Errorf("node3 blocked: %q", got)
	}
	nodes = lab(2, 1)
	nodes[0].Demand, nodes[1].Demand = 2, 1.05
	if got := Best(nodes, "node1", 1, DefaultConfig); got != "node1" {
		t.Errorf("hardly better elsewhere: %q", got)
	}
	nodes[0].Demand = 4
	if got := Best(nodes, "node1", 1, DefaultConfig); got != "node2" {
		t.Errorf("clearly better elsewhere: %q", got)
	}
}

// No ping-pong: an even load, or one off by a process, moves nothing,
// even with every process free to move.
func TestPlanLeavesAnEvenLoad(t *testing.T) {
	for _, per := range [][]int{{2, 2, 2, 2}, {3, 2, 2, 2}, {1, 1, 0}} {
		nodes := lab(len(per), 0.5)
		on := map[string][]Proc{}
		for i, k := range per {
			on[nodes[i].Name] = busy(k, 100*(i+1))
			nodes[i].Demand = float64(k)
		}
		for _, n := range nodes {
			if ds, _ := Plan(nodes, n.Name, on[n.Name], DefaultConfig); len(ds) != 0 {
				t.Errorf("%v: %s moves %+v", per, n.Name, ds)
			}
		}
	}
}
