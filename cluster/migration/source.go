package migration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"ssi/cluster/api"
	"ssi/cluster/stdio"
	"ssi/cluster/transport"
	"ssi/cluster/wire"
	"ssi/fs"
	"ssi/raftstore"
)

// Rebalance moves cpid, which runs here, to node to for the balancer:
// like Migrate, but the start reserves the destination (MigrationStart
// Exclusive), so that it fails with EBUSY while another move arrives
// there. The balancer's own checks (lock, switches) are its own.
func (m *Mover) Rebalance(ctx context.Context, cpid int, to string) error {
	return m.out(context.WithoutCancel(ctx), cpid, to, true)
}

// out is the source's side of the transaction; exclusive reserves the
// destination (Rebalance).
func (m *Mover) out(ctx context.Context, cpid int, to string, exclusive bool) (err error) {
	start := time.Now()
	if err := m.jobs.WaitAdoption(ctx); err != nil {
		return fmt.Errorf("%w: %v", fs.ErrBusy, err)
	}
	j, ok := m.jobs.Job(cpid)
	if !ok {
		return fmt.Errorf("%w: process %d is not running here", fs.ErrNoProcess, cpid)
	}
	end, err := j.BeginMove()
	if err != nil {
		return err
	}
	defer func() {
		end()
		if err != nil {
			m.jobs.Failed(cpid, err.Error())
			m.log.Warn("migration failed", "cpid", cpid, "to", to, "err", err)
		}
	}()
	s, err := m.cluster.Store()
	if err != nil {
		return api.Domain(err)
	}
	if _, ok := s.Node(to); !ok {
		return fmt.Errorf("%w: no node called %q", fs.ErrBadValue, to)
	}
	id := transport.NewID()
	if _, err := m.cluster.Apply(ctx, raftstore.MigrationStart{ID: id, CPID: cpid, To: to, StartedAt: start, Exclusive: exclusive}); err != nil {
		return api.Domain(err)
	}
	// A refusal is recorded like any failed move, so that cantmove says
	// why on every node as soon as the writer of where hears it.
	if why := m.jobs.CantMove(j); why != "" {
		stats := &raftstore.MoveStats{Reason: why, Total: time.Since(start), EndedAt: time.Now()}
		if _, err := m.settle(cpid, id, false, stats); err != nil {
			m.settleLater(cpid, id, false, stats, func(outcome) {})
		}
		return fmt.Errorf("%w: %s", fs.ErrCannotMove, why)
	}
	o := &moveOut{m: m, j: j, id: id, to: to, start: start}
	moved, err := o.run(ctx)
	m.metrics.moved(moved, o.frozen, time.Since(start), o.bytes)
	if moved {
		m.jobs.Failed(cpid, "")
		m.log.Info("migrated", append([]any{"cpid", cpid, "to", to, "frozen", o.frozen, "total", time.Since(start),
			"bytes", o.bytes}, o.phases...)...)
		return nil
	}
	if err == nil {
		err = errors.New("the destination did not take the process")
	}
	return err
}

// moveOut is one outgoing migration.
type moveOut struct {
	m      *Mover
	j      Job
	id, to string
	start  time.Time
	frozen time.Duration
	bytes  int64
	phases []any // for the log: when each step ended, from the freeze

	c       *wire.Conn
	dir     string
	tree    Tree
	stopped time.Time    // when the dump froze the tree; zero while it runs
	st      *stdio.State // what the holder left, once detached
}

// run performs the move; it returns whether the process now runs on the
// destination. On false, the process runs here again.
func (o *moveOut) run(ctx context.Context) (moved bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, Timeout)
	defer cancel()
	o.dir = filepath.Join(o.m.cfg.WorkDir, "out-"+o.id)
	defer os.RemoveAll(o.dir)
	conn, err := o.m.cluster.DialMigrate(ctx, o.to)
	if err != nil {
		return o.fail(fmt.Errorf("%w: reaching %s: %v", fs.ErrNodeDown, o.to, err))
	}
	defer conn.Close()
	stopOnCancel := context.AfterFunc(ctx, func() { conn.Close() })
	defer stopOnCancel()
	o.c = wire.NewConn(conn)
	ready, err := o.offer()
	if err == nil {
		err = o.dump(ctx, ready.PageServer)
	}
	if err == nil {
		err = o.handOver(ctx)
	}
	if err != nil {
		return o.fail(err)
	}
	var rr wire.RestoreReply
	if err := o.c.Expect(wire.FrRestored, &rr); err != nil {
		return o.fail(fmt.Errorf("%w: %s during restore: %v", fs.ErrNodeDown, o.to, err))
	}
	if !rr.OK {
		return o.fail(fmt.Errorf("%w: restore on %s: %s", fs.ErrCannotMove, o.to, rr.Error))
	}
	o.frozen = time.Since(o.stopped)
	o.phases = append(o.phases, "restored", o.frozen.Round(time.Millisecond))
	return o.commit()
}

// offer tells the destination what comes and waits for it to accept.
func (o *moveOut) offer() (wire.RestoreReply, error) {
	pid := o.j.Pid()
	tree, err := o.m.host.Describe(pid)
	if err != nil {
		return wire.RestoreReply{}, err
	}
	s, err := o.m.cluster.Store()
	if err != nil {
		return wire.RestoreReply{}, api.Domain(err)
	}
	p, _ := s.Proc(o.j.CPID())
	h := o.j.Holder()
	hdr := wire.StreamHeader{Kind: wire.KindMove, CPID: o.j.CPID(), ID: o.id, From: o.m.cfg.Node, UID: p.UID,
		Home: p.Home, Attached: h != nil, Files: tree.Files, PageServer: true, Mounts: tree.Mounts}
	for i := range 3 {
		hdr.Pipes[i] = o.m.host.FDKey(pid, i)
	}
	if h != nil && h.HasTTY() {
		hdr.Pipes[3] = o.m.host.FDKey(pid, winsizeFD)
	}
	if err := o.c.SendJSON(wire.FrHeader, hdr); err != nil {
		return wire.RestoreReply{}, fmt.Errorf("%w: %s: %v", fs.ErrNodeDown, o.to, err)
	}
	o.tree = tree
	var ready wire.RestoreReply
	if err := o.c.Expect(wire.FrReady, &ready); err != nil {
		return ready, fmt.Errorf("%w: %s: %v", fs.ErrNodeDown, o.to, err)
	}
	if !ready.OK {
		return ready, fmt.Errorf("%w: %s", fs.ErrCannotMove, ready.Error)
	}
	return ready, nil
}
