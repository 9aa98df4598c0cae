package view

import (
	"context"
	"path/filepath"
	"time"

	"ssi/cluster/api"
	"ssi/fs"
	"ssi/raftstore"
)

// fsView is what /cluster shows: the agreed state joined with telemetry,
// and writes turned into commands. It decides who may do what; fs/ only
// renders and passes the caller's uid.
type fsView struct{ v *View }

var _ fs.View = fsView{}

// view passes the read barrier and returns the store: every file and
// listing of /cluster reflects every write that returned before it.
func (v fsView) view() (*raftstore.Store, error) {
	ctx, cancel := context.WithTimeout(context.Background(), v.v.c.ReadWait()+time.Second)
	defer cancel()
	if _, err := v.v.c.Fresh(ctx); err != nil {
		return nil, err
	}
	return v.v.c.Store()
}

func (v fsView) Nodes() []fs.NodeView {
	s, err := v.view()
	if err != nil {
		return nil
	}
	var out []fs.NodeView
	for _, n := range v.v.NodeInfos(s) {
		out = append(out, fs.NodeView{Name: n.Name, Up: n.State == string(raftstore.NodeUp), Load: n.Load,
			CPUs: n.CPUs, Speed: n.Speed, MemFree: n.MemFree, MemSize: n.MemTotal})
	}
	return out
}

func (v fsView) Procs(uid uint32) []fs.ProcView {
	s, err := v.view()
	if err != nil {
		return nil
	}
	var out []fs.ProcView
	gids := map[int]int{} // one lookup per owner
	for _, p := range v.v.ProcInfos(s, uid) {
		name := ""
		if len(p.Argv) > 0 {
			name = filepath.Base(p.Argv[0])
		}
		gid, ok := gids[p.UID]
		if !ok {
			gid = primaryGID(p.UID)
			gids[p.UID] = gid
		}
		out = append(out, fs.ProcView{CPID: p.CPID, Name: name, Argv: p.Argv, State: p.State,
			Node: p.Node, Home: p.Home, UID: p.UID, GID: gid, NMigs: p.NMigs, Lock: p.Lock, Started: p.Started,
			Pid: p.Pid, RSS: p.RSS, CPU: p.CPU, CantMove: p.CantMove})
	}
	return out
}

func (v fsView) PerUser() bool { return v.v.o.HideOtherUsers }

func (v fsView) Admin() map[string]bool {
	s, err := v.view()
	if err != nil {
		return nil
	}
	n, _ := s.Node(v.v.node)
	return n.Admin.Map()
}

func (v fsView) SetAdmin(ctx context.Context, name string, value bool) error {
	_, err := v.v.c.Apply(ctx, raftstore.AdminSet{Node: v.v.node, Switch: name, Value: value})
	return api.Domain(err)
}

func (v fsView) Migrate(ctx context.Context, cpid int, target string, uid uint32) error {
	return v.v.mover.Migrate(ctx, cpid, target, uid)
}

func (v fsView) SetLock(ctx context.Context, cpid int, lock bool, uid uint32) error {
	p, err := v.proc(cpid)
	if err != nil {
		return err
	}
	if uid != 0 && int(uid) != p.UID {
		return fs.ErrPermission
	}
	_, err = v.v.c.Apply(ctx, raftstore.ProcUpdate{CPID: cpid, Lock: &lock})
	return api.Domain(err)
}

func (v fsView) proc(cpid int) (raftstore.Proc, error) {
	s, err := v.view()
	if err != nil {
		return raftstore.Proc{}, api.Domain(err)
	}
	p, ok := s.Proc(cpid)
	if !ok {
		return raftstore.Proc{}, fs.ErrNoProcess
	}
	return p, nil
}
