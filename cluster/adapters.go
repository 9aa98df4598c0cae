package cluster

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"os"
	"time"

	"ssi/cluster/jobs"
	"ssi/cluster/migration"
	"ssi/cluster/peer"
	"ssi/cluster/placement"
	"ssi/cluster/stdio"
	"ssi/cluster/transport"
	"ssi/raftstore"
)

// The adapters between subsystems: each package declares what it needs,
// the root fits one subsystem to another here.

// moveCluster is the migration's view of the cluster.
type moveCluster struct{ *peer.Cluster }

var _ migration.Cluster = moveCluster{}

// DialMigrate opens a stream to node's migration port: for a move, and
// for a holder's stream to its session (stdio.Dialer).
func (c moveCluster) DialMigrate(ctx context.Context, node string) (net.Conn, error) {
	return c.Dial(ctx, node, transport.ProtoMigrate)
}

func (c moveCluster) Call(ctx context.Context, node, path string, in, out any) error {
	addr, err := c.NodeAddr(node)
	if err != nil {
		return err
	}
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.PostLong(ctx, addr, path, body, out)
}

// moveJobs is the migration's view of this node's jobs.
type moveJobs struct {
	t   *jobs.Table
	log *slog.Logger
}

var _ migration.Jobs = moveJobs{}

func (m moveJobs) Job(cpid int) (migration.Job, bool) {
	j, ok := m.t.Get(cpid)
	if !ok {
		return nil, false
	}
	return j, true
}

func (m moveJobs) CantMove(j migration.Job) string { return m.t.CantMove(j.(*jobs.Job)) }

func (m moveJobs) Failed(cpid int, why string) {
	if why == "" {
		m.t.ClearFailure(cpid)
		return
	}
	m.t.SetCantMove(cpid, why)
}

func (m moveJobs) Record(cpid, pid int, arriving bool) { m.t.Record(cpid, pid, arriving) }
func (m moveJobs) Forget(cpid int)                     { m.t.Forget(cpid) }
func (m moveJobs) WaitAdoption(ctx context.Context) error {
	return m.t.WaitAdoption(ctx)
}

func (m moveJobs) Land(cpid int, proc *os.Process, p *stdio.Pipes, home string, st *stdio.State) {
	m.t.Land(m.log.With("cpid", cpid), cpid, proc, p, home, st)
}

// listed tells a session whether its process is still the cluster's.
func (a *Agent) listed(cpid int) (bool, *int) {
	s, err := a.peer.Store()
	if err != nil {
		return true, nil
	}
	if _, ok := s.Proc(cpid); ok {
		return true, nil
	}
	e, _ := s.Ended(cpid)
	return false, e.ExitCode
}

// snapshot is the placement policy's view of the nodes: the agreed ones
// joined with their load.
func (a *Agent) snapshot(s *raftstore.Store) []placement.Node {
	var out []placement.Node
	for _, n := range a.view.NodeInfos(s) {
		node, _ := s.Node(n.Name)
		out = append(out, placement.Node{Name: n.Name, Up: n.State == string(raftstore.NodeUp),
			Block: node.Admin.Block, CPUs: n.CPUs, Load: n.Load})
	}
	return out
}

// placeBalance is "balance" as a target: the least-loaded node.
func (a *Agent) placeBalance(s *raftstore.Store, current string) string {
	return placement.LeastLoaded(a.snapshot(s), current)
}

// adminLoop carries out this node's admin switches (placement.AdminMoves)
// once a second. A failed move is retried on the next round.
func (a *Agent) adminLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s, err := a.peer.Store()
		if err != nil {
			continue
		}
		me, _ := s.Node(a.cfg.NodeName)
		var procs []placement.Proc
		for _, p := range s.Procs() {
			procs = append(procs, placement.Proc{CPID: p.CPID, Node: p.Node, Home: p.Home, Lock: p.Lock,
				Running: p.State == raftstore.ProcRunning})
		}
		sw := placement.Switches{Bring: me.Admin.Bring, Expel: me.Admin.Expel}
		for _, mv := range placement.AdminMoves(a.cfg.NodeName, sw, procs) {
			mctx, cancel := context.WithTimeout(ctx, migration.Timeout)
			err := a.mover.Migrate(mctx, mv.CPID, "home", 0)
			cancel()
			if err != nil {
				a.log.Debug("admin switch: moving home", "cpid", mv.CPID, "err", err)
			} else {
				a.log.Info("admin switch: moved home", "cpid", mv.CPID, "bring", mv.Bring, "expel", mv.Expel)
			}
		}
	}
}
