package cluster

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"ssi/fs"
	"ssi/raftstore"
)

// fsView is what /cluster shows: the agreed state joined with telemetry,
// and writes turned into commands. It decides who may do what; fs/ only
// renders and passes the caller's uid.
type fsView struct{ a *Agent }

var _ fs.View = fsView{}

// view passes the read barrier and returns the store: every file and
// listing of /cluster reflects every write that returned before it.
func (v fsView) view() (*raftstore.Store, error) {
	ctx, cancel := context.WithTimeout(context.Background(), v.a.readWait()+time.Second)
	defer cancel()
	if _, err := v.a.fresh(ctx); err != nil {
		return nil, err
	}
	return v.a.member()
}

func (v fsView) Nodes() []fs.NodeView {
	s, err := v.view()
	if err != nil {
		return nil
	}
	var out []fs.NodeView
	for _, n := range v.a.nodeInfos(s) {
		out = append(out, fs.NodeView{Name: n.Name, Up: n.State == string(raftstore.NodeUp), Load: n.Load,
			CPUs: n.CPUs, MemFree: n.MemFree, MemSize: n.MemTotal})
	}
	return out
}

func (v fsView) Procs() []fs.ProcView {
	s, err := v.view()
	if err != nil {
		return nil
	}
	var out []fs.ProcView
	for _, p := range v.a.procInfos(s) {
		name := ""
		if len(p.Argv) > 0 {
			name = filepath.Base(p.Argv[0])
		}
		out = append(out, fs.ProcView{CPID: p.CPID, Name: name, Argv: p.Argv, State: p.State,
			Node: p.Node, Home: p.Home, UID: p.UID, NMigs: p.NMigs, Lock: p.Lock, Started: p.Started,
			Pid: p.Pid, RSS: p.RSS, CPU: p.CPU, CantMove: p.CantMove})
	}
	return out
}

func (v fsView) Admin() map[string]bool {
	s, err := v.view()
	if err != nil {
		return nil
	}
	n, _ := s.Node(v.a.cfg.NodeName)
	return n.Admin.Map()
}

func (v fsView) SetAdmin(ctx context.Context, name string, value bool) error {
	_, err := v.a.apply(ctx, raftstore.AdminSet{Node: v.a.cfg.NodeName, Switch: name, Value: value})
	return fsError(err)
}

func (v fsView) Migrate(ctx context.Context, cpid int, target string, uid uint32) error {
	return v.a.Migrate(ctx, cpid, target, uid)
}

func (v fsView) SetLock(ctx context.Context, cpid int, lock bool, uid uint32) error {
	p, err := v.proc(cpid)
	if err != nil {
		return err
	}
	if uid != 0 && int(uid) != p.UID {
		return fs.ErrPermission
	}
	_, err = v.a.apply(ctx, raftstore.ProcUpdate{CPID: cpid, Lock: &lock})
	return fsError(err)
}

func (v fsView) proc(cpid int) (raftstore.Proc, error) {
	s, err := v.view()
	if err != nil {
		return raftstore.Proc{}, fsError(err)
	}
	p, ok := s.Proc(cpid)
	if !ok {
		return raftstore.Proc{}, fs.ErrNoProcess
	}
	return p, nil
}

// fsError maps the cluster's errors to the file system's domain errors.
func fsError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raftstore.ErrNotFound):
		return fmt.Errorf("%w: %v", fs.ErrNoProcess, err)
	case errors.Is(err, raftstore.ErrInvalid):
		return fmt.Errorf("%w: %v", fs.ErrBadValue, err)
	case errors.Is(err, raftstore.ErrBusy):
		return fmt.Errorf("%w: %v", fs.ErrBusy, err)
	case errors.Is(err, raftstore.ErrNoLeader), errors.Is(err, raftstore.ErrNotLeader),
		errors.Is(err, raftstore.ErrTimeout), errors.Is(err, raftstore.ErrClosed),
		errors.Is(err, errNotMember), errors.Is(err, errRetry), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %v", fs.ErrNoQuorum, err)
	}
	return err
}
