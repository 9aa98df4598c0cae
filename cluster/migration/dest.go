package migration

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"ssi/cluster/stdio"
	"ssi/cluster/wire"
	"ssi/migrate"
	"ssi/raftstore"
)

// moveIn is one arriving migration.
type moveIn struct {
	m    *Mover
	c    *wire.Conn
	hdr  wire.StreamHeader
	log  *slog.Logger
	dir  string
	st   stdio.State
	ours *stdio.Pipes // nil unless attached
}

// Receive is the destination's side of the transaction, on a stream of
// the migration port whose header (kind move) was read; peer is the node
// the stream's certificate names.
func (m *Mover) Receive(conn net.Conn, c *wire.Conn, hdr wire.StreamHeader, peer string) {
	in := &moveIn{m: m, c: c, hdr: hdr, log: m.log.With("cpid", hdr.CPID, "from", hdr.From, "id", hdr.ID),
		dir: filepath.Join(m.cfg.WorkDir, "in-"+hdr.ID)}
	if peer != hdr.From {
		in.refuse(wire.FrReady, fmt.Sprintf("%s may not move processes of %s", peer, hdr.From))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	stopOnCancel := context.AfterFunc(ctx, func() { conn.Close() })
	defer stopOnCancel()
	if why := in.admit(ctx); why != "" {
		in.refuse(wire.FrReady, why)
		return
	}
	defer os.RemoveAll(in.dir)
	if !in.take(ctx) {
		return
	}
	pid, proc, ok := in.restore(ctx)
	if !ok {
		return
	}
	won, known := in.verdict(pid)
	if !known {
		return
	}
	if in.land(won, pid, proc) {
		_ = c.Send(wire.FrDone, nil)
	}
}

func (in *moveIn) refuse(typ wire.Frame, why string) {
	in.log.Warn("refusing an arriving process", "why", why)
	_ = in.c.SendJSON(typ, wire.RestoreReply{Error: why})
}

// admit says why this node does not take the process ("" if it does):
// the move must be the agreed one, to here, from the sender.
func (in *moveIn) admit(ctx context.Context) string {
	m, hdr := in.m, in.hdr
	if err := m.jobs.WaitAdoption(ctx); err != nil {
		return err.Error()
	}
	if err := m.cluster.CatchUp(ctx); err != nil {
		return fmt.Sprintf("%s cannot reach the leader: %v", m.cfg.Node, err)
	}
	s, err := m.cluster.Store()
	if err != nil {
		return err.Error()
	}
	mig, ok := s.Migration(hdr.CPID)
	me, _ := s.Node(m.cfg.Node)
	switch {
	case !ok || mig.ID != hdr.ID || mig.To != m.cfg.Node || mig.From != hdr.From:
		return "no such migration in the agreed state"
	case me.Admin.Block:
		return m.cfg.Node + " refuses arriving processes (block)"
	}
	return m.host.CheckArrival(hdr)
}

// take receives the pages (through a page server), the other images and
// the stdio state.
func (in *moveIn) take(ctx context.Context) bool {
	var pages *pageRelay
	if in.hdr.PageServer {
		var err error
		if pages, err = in.m.startPageServer(ctx, in.c, in.dir); err != nil {
			in.log.Warn("no page server: pages come with the other images", "err", err)
			pages = nil
		} else {
			defer pages.close()
		}
	}
	if err := in.c.SendJSON(wire.FrReady, wire.RestoreReply{OK: true, PageServer: pages != nil}); err != nil {
		return false
	}
	if pages != nil {
		err := pages.receive()
		if err == nil {
			// The page server closes its socket once it has stored
			// everything: our relay then ends.
			err = pages.finish()
		}
		if err != nil {
			in.log.Warn("receiving pages", "err", err)
			return false
		}
	}
	if err := wire.RecvImages(in.c, in.dir); err != nil {
		in.log.Warn("receiving images", "err", err)
		return false
	}
	if err := in.c.Expect(wire.FrPending, &in.st); err != nil {
		in.log.Warn("receiving stdio state", "err", err)
		return false
	}
	return true
}

// restore brings the tree back, stopped, as a child of this agent, and
// tells the source.
func (in *moveIn) restore(ctx context.Context) (int, *os.Process, bool) {
	// Home barrier: the process's files in /cluster/home must be here as
	// the source last saw them before CRIU reopens them.
	if err := in.m.cluster.CatchUp(ctx); err != nil {
		in.refuse(wire.FrRestored, fmt.Sprintf("catching up with the leader: %v", err))
		return 0, nil, false
	}
	files, err := in.fileCheck()
	if err != nil {
		in.refuse(wire.FrRestored, err.Error())
		return 0, nil, false
	}
	inherit, theirs, err := in.pipes()
	if err != nil {
		in.refuse(wire.FrRestored, err.Error())
		return 0, nil, false
	}
	defer closeFiles(theirs)
	t0 := time.Now()
	r, err := in.m.cp.Restore(ctx, migrate.RestoreOptions{Dir: in.dir, InheritFDs: inherit, LeaveStopped: true,
		FileLocks: true, NodeMounts: in.hdr.Mounts, Files: files, Ready: in.m.hooks.pauseRestore})
	restored := time.Since(t0)
	if err != nil {
		in.closeOurs()
		in.refuse(wire.FrRestored, err.Error())
		return 0, nil, false
	}
	proc, err := os.FindProcess(r.Pid)
	if err != nil {
		_ = syscall.Kill(r.Pid, syscall.SIGKILL)
		in.closeOurs()
		in.refuse(wire.FrRestored, err.Error())
		return 0, nil, false
	}
	// Should this agent die before the verdict, the next one settles it.
	in.m.jobs.Record(in.hdr.CPID, r.Pid, true)
	in.m.hooks.crash(CrashRestored)
	in.log.Info("restored, waiting for the verdict", "pid", r.Pid, "restore", restored.Round(time.Millisecond),
		"criu_restore", r.Restore.Round(time.Millisecond))
	if err := in.c.SendJSON(wire.FrRestored, wire.RestoreReply{OK: true, Pid: r.Pid}); err != nil {
		in.log.Warn("the source went away after the restore", "err", err)
	}
	return r.Pid, proc, true
}

// fileCheck is how the restore checks the process's files: as its owner
// in the agreed state (not as the source says), caught up with above.
func (in *moveIn) fileCheck() (*migrate.FileCheck, error) {
	s, err := in.m.cluster.Store()
	if err != nil {
		return nil, err
	}
	p, ok := s.Proc(in.hdr.CPID)
	if !ok || p.UID < 0 || p.UID != in.hdr.UID {
		return nil, fmt.Errorf("process %d: its owner in the agreed state is not uid %d", in.hdr.CPID, in.hdr.UID)
	}
	return in.m.host.FileCheck(uint32(p.UID)), nil
}

// pipes makes the pipes an attached process gets back: CRIU hands the
// process theirs in place of the ones it had (by key), we keep ours.
func (in *moveIn) pipes() ([]migrate.InheritFD, []*os.File, error) {
	if !in.hdr.Attached {
		return nil, nil, nil
	}
	ours, theirs, err := stdio.NewPipes(in.hdr.Pipes[3] != "")
	if err != nil {
		return nil, nil, err
	}
	in.ours = ours
	var inherit []migrate.InheritFD
	keys := map[string]bool{}
	for i, k := range in.hdr.Pipes[:len(theirs)] {
		if k != "" && !keys[k] {
			keys[k] = true
			inherit = append(inherit, migrate.InheritFD{Key: k, File: theirs[i]})
		}
	}
	// Their stdin read end is ours too: the holder keeps it open.
	return inherit, theirs[1:], nil
}

// verdict waits for the source's verdict, or without a source asks the
// agreed state for the commit (the restore worked). known is false when
// the outcome cannot be learnt yet: the copy here waits, stopped, and is
// landed once it is.
func (in *moveIn) verdict(pid int) (won, known bool) {
	var d wire.Decision
	if err := in.c.Expect(wire.FrDecision, &d); err == nil {
		in.m.hooks.crash(CrashVerdict)
		return d.Commit, true
	} else {
		in.log.Warn("no verdict from the source; settling through the cluster", "err", err)
	}
	stats := &raftstore.MoveStats{Reason: "source lost after restore", EndedAt: time.Now()}
	o, err := in.m.settle(in.hdr.CPID, in.hdr.ID, true, stats)
	if err != nil {
		in.log.Error("migration outcome unknown; the restored copy waits stopped", "err", err)
		proc, _ := os.FindProcess(pid)
		in.m.settleLater(in.hdr.CPID, in.hdr.ID, true, stats, func(o outcome) {
			in.land(o == committed, pid, proc)
		})
		return false, false
	}
	return o == committed, true
}

// land finishes an arrival once its outcome is known: the restored copy
// runs as a job of this node, or is killed. It reports whether the
// process runs here.
func (in *moveIn) land(won bool, pid int, proc *os.Process) bool {
	if !won {
		in.m.host.Signal(pid, syscall.SIGKILL)
		_, _ = proc.Wait()
		in.closeOurs()
		in.m.jobs.Forget(in.hdr.CPID)
		return false
	}
	in.m.jobs.Land(in.hdr.CPID, proc, in.ours, in.hdr.Home, &in.st)
	in.log.Info("process arrived", "pid", pid)
	return true
}

func (in *moveIn) closeOurs() {
	if in.ours != nil {
		in.ours.Close()
	}
}

func closeFiles(fs []*os.File) {
	for _, f := range fs {
		f.Close()
	}
}

// startPageServer starts a CRIU page server storing into dir, relayed to
// the stream.
func (m *Mover) startPageServer(ctx context.Context, c *wire.Conn, dir string) (*pageRelay, error) {
	p, err := newPageRelay(c)
	if err != nil {
		return nil, err
	}
	if _, err := m.cp.StartPageServer(ctx, dir, p.criu); err != nil {
		p.close()
		return nil, err
	}
	// The page server holds its own copy now.
	p.criu.Close()
	p.start()
	return p, nil
}
