package placement

// Node is what the policy knows of a node.
type Node struct {
	Name  string
	Up    bool
	Block bool // admin: refuses arriving processes
	CPUs  float64
	Load  float64 // CPUs' worth busy
}

// stayBonus is the idle CPU the current node is credited with, so that
// balance does not move a process for nothing.
const stayBonus = 0.25

// LeastLoaded picks the up, unblocked node with the most idle CPU; the
// current node wins ties. "" if no node qualifies.
func LeastLoaded(nodes []Node, current string) string {
	best, bestIdle := "", -1.0
	for _, n := range nodes {
		if !n.Up || n.Block {
			continue
		}
		idle := n.CPUs - n.Load
		if n.Name == current {
			idle += stayBonus
		}
		if idle > bestIdle {
			best, bestIdle = n.Name, idle
		}
	}
	return best
}

// Proc is what the policy knows of a process.
type Proc struct {
	CPID       int
	Node, Home string
	Lock       bool
	Running    bool // not in the middle of a move
}

// Switches are a node's admin switches that move processes.
type Switches struct {
	// Bring calls this node's processes home from wherever they run.
	Bring bool
	// Expel sends the guests running here back to their homes.
	Expel bool
}

// HomeMove is one process an admin switch sends home.
type HomeMove struct {
	CPID         int
	Bring, Expel bool
}

// AdminMoves are the processes node's switches send home, as
// openMosix's mosctl did. Locked processes stay, and so do those at home
// or in the middle of a move.
func AdminMoves(node string, sw Switches, procs []Proc) []HomeMove {
	if !sw.Bring && !sw.Expel {
		return nil
	}
	var out []HomeMove
	for _, p := range procs {
		if p.Lock || !p.Running || p.Node == p.Home {
			continue
		}
		bring := sw.Bring && p.Home == node
		expel := sw.Expel && p.Node == node
		if bring || expel {
			out = append(out, HomeMove{CPID: p.CPID, Bring: bring, Expel: expel})
		}
	}
	return out
}
