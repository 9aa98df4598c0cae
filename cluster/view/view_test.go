package view

import (
	"context"
	"errors"
	"testing"
	"time"

	"ssi/cluster/telemetry"
	"ssi/cluster/transport"
	"ssi/fs"
	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// direct is a one-node cluster: this node leads, reads are fresh.
type direct struct{ raftstoretest.Local }

func (direct) ReadWait() time.Duration       { return time.Second }
func (direct) Stale() bool                   { return false }
func (direct) Identity() *transport.Identity { return nil }

type noMover struct{ asked []string }

func (m *noMover) Migrate(_ context.Context, _ int, target string, _ uint32) error {
	m.asked = append(m.asked, target)
	return nil
}

func setup(t *testing.T) (*View, *raftstore.Store, *telemetry.Table, int) {
	s := raftstoretest.New(t)
	raftstoretest.AddNode(t, s, "node1", "127.0.0.1:1")
	raftstoretest.AddNode(t, s, "node2", "127.0.0.1:2")
	cpid := raftstoretest.AddProc(t, s, raftstore.ProcAdd{Home: "node1", UID: 1000, Argv: []string{"/bin/sleep", "60"},
		StartedAt: time.Now()})
	tel := telemetry.NewTable()
	return New("node1", direct{raftstoretest.Local{S: s}}, tel, &noMover{}), s, tel, cpid
}

// ssi nodes joins the agreed nodes with their latest samples.
func TestNodeInfosJoinTelemetry(t *testing.T) {
	v, s, tel, cpid := setup(t)
	tel.Put(telemetry.Sample{Node: "node2", Load: 1.5, CPUs: 4, MemTotal: 8 << 30, MemFree: 2 << 30,
		Procs: map[int]telemetry.ProcSample{cpid: {Pid: 77, CPU: 50}}})
	infos := v.NodeInfos(s)
	if len(infos) != 2 || infos[0].Name != "node1" || infos[1].Name != "node2" {
		t.Fatalf("nodes %+v", infos)
	}
	if n := infos[1]; n.Load != 1.5 || n.CPUs != 4 || n.MemFree != 2<<30 || n.LastSeen == nil {
		t.Fatalf("node2 without its sample: %+v", n)
	}
	if infos[0].LastSeen != nil || infos[0].Procs != 1 || infos[0].Role != "leader" {
		t.Fatalf("node1: %+v", infos[0])
	}
}

// ssi ps says why a process cannot move: what its node measures, or the
// agreed reason of its last failed move.
func TestProcInfosCantMove(t *testing.T) {
	v, s, _, cpid := setup(t)
	raftstoretest.Apply(t, s, raftstore.MigrationStart{ID: "m1", CPID: cpid, To: "node2", StartedAt: time.Now()})
	if p := v.ProcInfos(s); len(p) != 1 || p[0].CantMove != "a migration is under way" {
		t.Fatalf("migrating: %+v", p)
	}
	raftstoretest.Apply(t, s, raftstore.MigrationEnd{CPID: cpid, ID: "m1",
		Stats: &raftstore.MoveStats{Reason: "locked\nmore", EndedAt: time.Now()}})
	if p := v.ProcInfos(s); p[0].CantMove != "locked" || p[0].User == "" || p[0].Node != "node1" {
		t.Fatalf("after a failed move: %+v", p)
	}
}

// A user may lock only their own processes; root any.
func TestSetLockChecksTheOwner(t *testing.T) {
	v, s, _, cpid := setup(t)
	ctx := context.Background()
	if err := v.FS().SetLock(ctx, cpid, true, 1001); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("another user's lock: %v", err)
	}
	if err := v.FS().SetLock(ctx, cpid, true, 1000); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.Proc(cpid); !p.Lock {
		t.Fatal("not locked")
	}
	if err := v.FS().SetLock(ctx, cpid+1, true, 0); !errors.Is(err, fs.ErrNoProcess) {
		t.Fatalf("no such process: %v", err)
	}
}
