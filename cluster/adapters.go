package cluster

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/balance"
	"ssi/cluster/jobs"
	"ssi/cluster/migration"
	"ssi/cluster/peer"
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

// placeBalance is "balance" as a target: where the balancer's policy
// would run a busy process best (balance.Best).
func (a *Agent) placeBalance(s *raftstore.Store, current string) string {
	nodes, _ := balance.Snapshot(a.cfg.NodeName, s, a.tel, time.Now())
	return balance.Best(nodes, current, 1, a.cfg.Balance)
}

// setBlock sets this node's block switch.
func (a *Agent) setBlock(ctx context.Context, on bool) error {
	_, err := a.peer.Apply(ctx, raftstore.AdminSet{Node: a.cfg.NodeName, Switch: raftstore.SwitchBlock, Value: on})
	return api.Domain(err)
}

// balanceAgreed is the balancer's view of the agreed state.
func (a *Agent) balanceAgreed() (balance.Agreed, error) { return a.peer.Store() }

// explainVisible lets root see every record of the balancer and others
// their own, or all unless fs.hide_other_users.
func (a *Agent) explainVisible(r *http.Request, uid int) bool {
	caller, _, ok := api.PeerCred(api.ConnOf(r))
	return ok && (caller == 0 || !a.cfg.HideOtherUsers || int(caller) == uid)
}
