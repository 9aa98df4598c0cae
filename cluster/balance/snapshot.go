package balance

import (
	"time"

	"ssi/cluster/telemetry"
	"ssi/raftstore"
)

// Agreed is what the snapshot reads of the agreed state (a
// *raftstore.Store).
type Agreed interface {
	Nodes() []raftstore.Node
	Procs() []raftstore.Proc
	Migrations() []raftstore.Migration
	Moves() []raftstore.MoveRecord
}

// Samples are the nodes' latest telemetry (a *telemetry.Table).
type Samples interface {
	Get(node string) (telemetry.Sample, bool)
}

// movedDemand is the demand counted for a moving process that neither
// end's sample lists: the balancer moves busy processes.
const movedDemand = 1.0

// Snapshot is the policy's view from node self at now: every node's
// capacity and demand from its latest sample, and the processes running
// here. Samples lag the agreed state by up to an interval, so a move
// under way, or one that ended since a node's sample, is counted where
// the process is going and not where it left (by which samples list
// it): a node taking one is never seen idle by the next decision.
func Snapshot(self string, a Agreed, t Samples, now time.Time) ([]Node, []Proc) {
	samples := map[string]telemetry.Sample{}
	var nodes []Node
	for _, n := range a.Nodes() {
		s, ok := t.Get(n.Name)
		samples[n.Name] = s
		node := Node{Name: n.Name, Up: ok && n.State == raftstore.NodeUp, Block: n.Admin.Block, Stay: n.Admin.Stay,
			CPUs: s.CPUs, Speed: float64(n.Speed) / telemetry.SpeedUnit, MemTotal: s.MemTotal, MemFree: s.MemFree}
		if node.CPUs <= 0 {
			node.CPUs = n.CPUs
		}
		// The node's own load beyond its cluster processes counts too.
		var used float64
		for _, p := range s.Procs {
			node.Demand += p.Demand
			used += p.CPU / 100
		}
		node.Demand += max(0, s.Load-used)
		nodes = append(nodes, node)
	}
	index := map[string]int{}
	for i, n := range nodes {
		index[n.Name] = i
	}
	shift := func(cpid int, from, to string) {
		f, okf := index[from]
		t, okt := index[to]
		if !okf || !okt {
			return
		}
		ps, inFrom := samples[from].Procs[cpid]
		_, inTo := samples[to].Procs[cpid]
		switch {
		case inTo:
			if inFrom { // both list it: the source's is the older sample
				nodes[f].Demand -= ps.Demand
			}
		case inFrom:
			nodes[t].Demand += ps.Demand
			nodes[f].Demand -= ps.Demand
		default:
			nodes[t].Demand += movedDemand
		}
	}
	for _, m := range a.Migrations() {
		shift(m.CPID, m.From, m.To)
	}
	last := map[int]raftstore.MoveRecord{}
	for _, m := range a.Moves() {
		if m.Committed {
			last[m.CPID] = m
		}
		if m.Committed && now.Sub(m.EndedAt) < settleWindow {
			shift(m.CPID, m.From, m.To)
		}
	}
	return nodes, here(self, a, samples[self], last, now)
}

// settleWindow is how long after a move a sample may not show it yet:
// a few telemetry intervals.
const settleWindow = 5 * time.Second

// here are the processes the agreed state says run on self, as its own
// sample measured them.
func here(self string, a Agreed, s telemetry.Sample, last map[int]raftstore.MoveRecord, now time.Time) []Proc {
	var out []Proc
	for _, p := range a.Procs() {
		ps, ok := s.Procs[p.CPID]
		if p.Node != self || p.State != raftstore.ProcRunning || !ok {
			continue
		}
		proc := Proc{CPID: p.CPID, UID: p.UID, Lock: p.Lock, CantMove: ps.CantMove, Demand: ps.Demand, CPUTime: ps.CPUTime,
			RSS: ps.RSS, MoveCost: moveCost(ps.RSS)}
		if m, ok := last[p.CPID]; ok {
			proc.SinceMove = max(time.Nanosecond, now.Sub(m.EndedAt))
			if m.Total > 0 {
				proc.MoveCost = m.Total
			}
		}
		out = append(out, proc)
	}
	return out
}

// moveCost estimates a move of a process of rss bytes never moved: a
// dump and restore, and its memory over the link.
func moveCost(rss uint64) time.Duration {
	return 150*time.Millisecond + time.Duration(float64(rss)/(200<<20)*float64(time.Second))
}
