package balance

import (
	"fmt"
	"math"
	"slices"
	"time"
)

// Node is what the policy knows of a node.
type Node struct {
	Name  string
	Up    bool
	Block bool    // admin: takes no arriving process
	Stay  bool    // admin: the balancer moves nothing away from it
	CPUs  float64 // CPUs it may use (its quota, or the machine's)
	// Speed is one of its CPUs against the cluster's reference (1); 0
	// counts as 1.
	Speed float64
	// Demand is the CPUs' worth of work that wants to run there: what
	// its processes would use if nothing held them back, and the rest of
	// the node's own load.
	Demand            float64
	MemTotal, MemFree uint64
}

// slowdown is how long a unit of work takes on n with demand d, against
// one reference CPU to itself: work shares the node's CPUs once it
// wants more than there are, and runs at the node's speed.
func (n Node) slowdown(d float64) float64 {
	if n.CPUs <= 0 {
		return math.Inf(1)
	}
	speed := n.Speed
	if speed <= 0 {
		speed = 1
	}
	return max(1, d/n.CPUs) / speed
}

// Proc is what the policy knows of a process running on the node that
// plans.
type Proc struct {
	CPID int
	UID  int  // its owner, for the journal
	Lock bool // pinned: /cluster/proc/N/lock
	// CantMove is why it cannot move now ("" if it can).
	CantMove string
	// Demand is the CPUs' worth it would use if nothing held it back
	// (run-queue time per second, decayed).
	Demand float64
	// CPUTime is the CPU it used so far: a process that ran long is
	// likely to run on (openMosix's bet), one that barely ran is not
	// worth a move.
	CPUTime time.Duration
	RSS     uint64
	// MoveCost is how long moving it takes: its last move's, or an
	// estimate from its size.
	MoveCost time.Duration
	// SinceMove is how long ago it last arrived or left a node (0: it
	// never moved).
	SinceMove time.Duration
}

// Config are the policy's thresholds (configs: balance.*).
type Config struct {
	// Margin is how much sooner, as a fraction, the slowest of the two
	// nodes must finish its work after a move than before: below it the
	// move is not worth its cost, and an even load never moves.
	Margin float64
	// CostFactor: a process moves for load only once it has used this
	// many times its move cost in CPU.
	CostFactor float64
	// Cooldown: a process that moved less than this ago does not move
	// again for load.
	Cooldown time.Duration
	// MemLow is the free-memory fraction under which a node sends a
	// process away; a target must keep twice as much free after taking
	// it.
	MemLow float64
}

// DefaultConfig is the configuration without any balance.* key.
var DefaultConfig = Config{Margin: 0.1, CostFactor: 2, Cooldown: 20 * time.Second, MemLow: 0.1}

// Decision is one move the policy wants.
type Decision struct {
	CPID     int
	UID      int
	From, To string
	// Kind is "load" or "memory".
	Kind string
	Why  string
}

// Rejection is one process the policy looked at and left where it is.
type Rejection struct {
	CPID int
	UID  int
	Node string
	Why  string
}

// Plan decides what node self sends away of its processes procs: first
// the one whose departure relieves it most if it is short of memory,
// then, one at a time, the processes that would run clearly sooner
// elsewhere, each decision counted in the loads of the next. Nodes
// absent from nodes, down or blocked take nothing; a node that stays
// sends nothing.
func Plan(nodes []Node, self string, procs []Proc, cfg Config) ([]Decision, []Rejection) {
	nodes = slices.Clone(nodes)
	i := slices.IndexFunc(nodes, func(n Node) bool { return n.Name == self })
	if i < 0 {
		return nil, nil
	}
	var out []Decision
	var rejected []Rejection
	reject := func(p Proc, why string, a ...any) {
		rejected = append(rejected, Rejection{CPID: p.CPID, UID: p.UID, Node: self, Why: fmt.Sprintf(why, a...)})
	}
	if nodes[i].Stay {
		for _, p := range procs {
			reject(p, "%s stays (admin switch stay)", self)
		}
		return nil, rejected
	}
	movable := procs[:0:0]
	for _, p := range procs {
		switch {
		case p.Lock:
			reject(p, "locked")
		case p.CantMove != "":
			reject(p, "cannot move: %s", p.CantMove)
		default:
			movable = append(movable, p)
		}
	}
	if d, ok := usher(nodes, i, movable, cfg); ok {
		out = append(out, d)
		movable = slices.DeleteFunc(movable, func(p Proc) bool { return p.CPID == d.CPID })
	}
	// The busiest first: they gain the most from a node of their own.
	slices.SortStableFunc(movable, func(a, b Proc) int { return -cmpFloat(a.Demand, b.Demand) })
	for _, p := range movable {
		d, why := spread(nodes, i, p, cfg)
		if why != "" {
			reject(p, "%s", why)
			continue
		}
		out = append(out, d)
	}
	return out, rejected
}

// spread is where p, on nodes[i], should go for load, or why nowhere;
// a move is counted in nodes. Slowdowns are per unit of work: how much
// longer it takes there than on a free reference CPU.
func spread(nodes []Node, i int, p Proc, cfg Config) (Decision, string) {
	src := &nodes[i]
	switch {
	case p.Demand < 0.05:
		return Decision{}, fmt.Sprintf("idle (wants %.2f CPU)", p.Demand)
	case p.SinceMove > 0 && p.SinceMove < cfg.Cooldown:
		return Decision{}, fmt.Sprintf("moved %s ago (cooldown %s)", p.SinceMove.Round(time.Second), cfg.Cooldown)
	case float64(p.CPUTime) < cfg.CostFactor*float64(p.MoveCost):
		return Decision{}, fmt.Sprintf("used %s of CPU, a move costs about %s", p.CPUTime.Round(time.Millisecond), p.MoveCost.Round(time.Millisecond))
	}
	// It moves where it would run soonest, if that is clearly sooner
	// than here: then, whatever the others do, it never comes straight
	// back (here, with it, would be slower than there by the margin).
	before := src.slowdown(src.Demand)
	best, bestAfter := -1, before*(1-cfg.Margin)
	for j, t := range nodes {
		if j == i || !t.Up || t.Block {
			continue
		}
		if after := t.slowdown(t.Demand + p.Demand); after < bestAfter {
			best, bestAfter = j, after
		}
	}
	if best < 0 {
		return Decision{}, fmt.Sprintf("no node would run it clearly sooner (%.2fx here)", before)
	}
	t := &nodes[best]
	d := Decision{CPID: p.CPID, UID: p.UID, From: src.Name, To: t.Name, Kind: "load",
		Why: fmt.Sprintf("%s %.2fx -> %.2fx slower than a free CPU; with it %s %.2fx", src.Name, before,
			src.slowdown(src.Demand-p.Demand), t.Name, t.slowdown(t.Demand+p.Demand))}
	src.Demand -= p.Demand
	t.Demand += p.Demand
	return d, ""
}

// usher is the process nodes[i] sends away because its free memory is
// under cfg.MemLow: the largest that a node with room takes, to the node
// with the most room. Its memory is counted in nodes.
func usher(nodes []Node, i int, procs []Proc, cfg Config) (Decision, bool) {
	src := &nodes[i]
	if src.MemTotal == 0 || float64(src.MemFree) >= cfg.MemLow*float64(src.MemTotal) {
		return Decision{}, false
	}
	byRSS := slices.Clone(procs)
	slices.SortStableFunc(byRSS, func(a, b Proc) int { return -cmpFloat(float64(a.RSS), float64(b.RSS)) })
	for _, p := range byRSS {
		best := -1
		for j, t := range nodes {
			room := float64(t.MemFree) - float64(p.RSS)
			if j == i || !t.Up || t.Block || room < 2*cfg.MemLow*float64(t.MemTotal) {
				continue
			}
			if best < 0 || t.MemFree > nodes[best].MemFree {
				best = j
			}
		}
		if best < 0 {
			continue
		}
		t := &nodes[best]
		d := Decision{CPID: p.CPID, UID: p.UID, From: src.Name, To: t.Name, Kind: "memory",
			Why: fmt.Sprintf("%s has %d MiB free of %d; it holds %d MiB, %s has %d MiB free",
				src.Name, src.MemFree>>20, src.MemTotal>>20, p.RSS>>20, t.Name, t.MemFree>>20)}
		src.MemFree += p.RSS
		t.MemFree -= p.RSS
		src.Demand -= p.Demand
		t.Demand += p.Demand
		return d, true
	}
	return Decision{}, false
}

// Best is the node where a process that wants demand CPUs, now on
// current ("" for a new one), would run soonest: current unless another
// is clearly better (by cfg.Margin). "" if no node qualifies.
func Best(nodes []Node, current string, demand float64, cfg Config) string {
	best, bestAt := "", math.Inf(1)
	for _, n := range nodes {
		if !n.Up || n.Block && n.Name != current {
			continue
		}
		d := n.Demand
		if n.Name != current {
			d += demand
		}
		at := n.slowdown(d)
		if n.Name == current {
			at *= 1 - cfg.Margin
		}
		if at < bestAt || at == bestAt && n.Name == current {
			best, bestAt = n.Name, at
		}
	}
	return best
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
