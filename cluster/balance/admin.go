package balance

import (
	"context"
	"time"

	"ssi/raftstore"
)

// AdminProc is what the admin switches know of a process.
type AdminProc struct {
	CPID       int
	UID        int
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
	UID          int
	Bring, Expel bool
}

// AdminMoves are the processes node's switches send home, as
// openMosix's mosctl did. Locked processes stay, and so do those at home
// or in the middle of a move.
func AdminMoves(node string, sw Switches, procs []AdminProc) []HomeMove {
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
			out = append(out, HomeMove{CPID: p.CPID, UID: p.UID, Bring: bring, Expel: expel})
		}
	}
	return out
}

// adminRound carries out this node's bring and expel switches (as root
// of this node: it is the home, or the node the process runs on). A
// failed move is tried again next round.
func (l *Loop) adminRound(ctx context.Context, a Agreed) {
	var sw Switches
	for _, n := range a.Nodes() {
		if n.Name == l.Node {
			sw = Switches{Bring: n.Admin.Bring, Expel: n.Admin.Expel}
		}
	}
	var procs []AdminProc
	for _, p := range a.Procs() {
		procs = append(procs, AdminProc{CPID: p.CPID, UID: p.UID, Node: p.Node, Home: p.Home, Lock: p.Lock,
			Running: p.State == raftstore.ProcRunning})
	}
	for _, mv := range AdminMoves(l.Node, sw, procs) {
		if err := l.Mover.Migrate(ctx, mv.CPID, "home", 0); err != nil {
			l.Log.Debug("admin switch: moving home", "cpid", mv.CPID, "err", err)
			continue
		}
		l.Log.Info("admin switch: moved home", "cpid", mv.CPID, "bring", mv.Bring, "expel", mv.Expel)
		l.journal.moved(Record{At: time.Now(), Node: l.Node, CPID: mv.CPID, UID: mv.UID, Action: "moved", Kind: "admin",
			To: "home", Why: adminWhy(mv)})
	}
}

func adminWhy(mv HomeMove) string {
	if mv.Bring {
		return "this node brings its processes home (admin switch bring)"
	}
	return "this node expels its guests (admin switch expel)"
}
