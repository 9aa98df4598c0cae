package view

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"ssi/cluster/api"

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
	return New("node1", direct{raftstoretest.Local{S: s}}, tel, &noMover{}, Options{}), s, tel, cpid
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
	if p := v.ProcInfos(s, 0); len(p) != 1 || p[0].CantMove != "a migration is under way" {
		t.Fatalf("migrating: %+v", p)
	}
	raftstoretest.Apply(t, s, raftstore.MigrationEnd{CPID: cpid, ID: "m1",
		Stats: &raftstore.MoveStats{Reason: "locked\nmore", EndedAt: time.Now()}})
	if p := v.ProcInfos(s, 0); p[0].CantMove != "locked" || p[0].User == "" || p[0].Node != "node1" {
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

// hidden is a view that hides other users' processes, of uid 1000's
// process (setup's) and one of root's.
func hidden(t *testing.T) (*View, *raftstore.Store, int, int) {
	v, s, tel, cpid := setup(t)
	rootCPID := raftstoretest.AddProc(t, s, raftstore.ProcAdd{Home: "node1", UID: 0, Argv: []string{"/bin/secret", "--key=x"},
		StartedAt: time.Now()})
	return New("node1", v.c, tel, v.mover, Options{HideOtherUsers: true}), s, cpid, rootCPID
}

func cpids[T any](list []T, cpid func(T) int) []int {
	out := []int{}
	for _, x := range list {
		out = append(out, cpid(x))
	}
	return out
}

// fs.hide_other_users: a user sees only their own processes, in ssi ps
// and /cluster/proc alike; root sees all; off, everyone sees all.
func TestHideOtherUsers(t *testing.T) {
	v, s, cpid, rootCPID := hidden(t)
	info := func(p api.ProcInfo) int { return p.CPID }
	for _, c := range []struct {
		uid  uint32
		want []int
	}{{1000, []int{cpid}}, {1001, []int{}}, {0, []int{cpid, rootCPID}}} {
		if got := cpids(v.ProcInfos(s, c.uid), info); !slices.Equal(got, c.want) {
			t.Errorf("ssi ps as %d: %v, want %v", c.uid, got, c.want)
		}
	}
	procs := v.FS().Procs(1000)
	if len(procs) != 1 || procs[0].CPID != cpid || !v.FS().PerUser() {
		t.Fatalf("/cluster/proc as 1000: %+v", procs)
	}
	if want := primaryGID(1000); procs[0].GID != want || want == 0 {
		t.Fatalf("gid %d, want %d", procs[0].GID, want)
	}
	if got := len(v.FS().Procs(0)); got != 2 {
		t.Fatalf("/cluster/proc as root: %d processes", got)
	}
	open, _, _, _ := hidden(t)
	open.o.HideOtherUsers = false
	if got := cpids(open.ProcInfos(s, 1001), info); len(got) != 2 || open.FS().PerUser() {
		t.Fatalf("hiding off, uid 1001 sees %v", got)
	}
}

// ssi ps and ssi migrations answer as the socket's peer: a caller that
// cannot be told (not a unix socket) sees nobody's processes; over a
// unix socket, uid 1000 sees its own, root all.
func TestHandleProcsAsThePeer(t *testing.T) {
	v, s, cpid, rootCPID := hidden(t)
	raftstoretest.Apply(t, s, raftstore.MigrationStart{ID: "m1", CPID: rootCPID, To: "node2", StartedAt: time.Now()})
	raftstoretest.Apply(t, s, raftstore.MigrationEnd{CPID: rootCPID, ID: "m1", Stats: &raftstore.MoveStats{EndedAt: time.Now()}})
	rec := httptest.NewRecorder()
	v.HandleProcs(rec, httptest.NewRequest("GET", "/v1/procs", nil))
	if got := strings.TrimSpace(rec.Body.String()); got != "[]" {
		t.Fatalf("an unknown caller sees %s", got)
	}
	if got := v.moves(s, 1000); len(got) != 0 {
		t.Fatalf("uid 1000 sees root's moves: %+v", got)
	}
	if got := v.moves(s, 0); len(got) != 1 {
		t.Fatalf("root sees moves %+v", got)
	}
	if os.Geteuid() != 0 {
		t.Skip("the rest asks as uid 1000: needs root")
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	// uid 1000 reaches it, as every user reaches the agent's socket.
	for p := filepath.Dir(sock); p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(v.HandleProcs), ConnContext: api.ConnContext}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	ask := func(uid int) []int {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		argv := []string{"curl", "-sS", "--unix-socket", sock, "http://agent/v1/procs"}
		if uid != 0 {
			argv = append([]string{"setpriv", "--reuid", strconv.Itoa(uid), "--regid", strconv.Itoa(uid), "--clear-groups"}, argv...)
		}
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).Output()
		if err != nil {
			t.Fatalf("%v: %v", argv, err)
		}
		var ps []api.ProcInfo
		if err := json.Unmarshal(out, &ps); err != nil {
			t.Fatalf("%s: %v", out, err)
		}
		return cpids(ps, func(p api.ProcInfo) int { return p.CPID })
	}
	if got := ask(1000); !slices.Equal(got, []int{cpid}) {
		t.Fatalf("uid 1000 sees %v, want [%d]", got, cpid)
	}
	if got := ask(0); !slices.Equal(got, []int{cpid, rootCPID}) {
		t.Fatalf("root sees %v", got)
	}
}

// A node's root sets only its own node's switches: node1, which leads
// here and would apply anything, refuses node2's with EPERM and leaves
// them be; its own it sets.
func TestHandleAdminOnlyThisNode(t *testing.T) {
	v, s, _, _ := setup(t)
	ask := func(req api.AdminRequest) *httptest.ResponseRecorder {
		b, _ := json.Marshal(req)
		rec := httptest.NewRecorder()
		v.HandleAdmin(rec, httptest.NewRequest("POST", "/v1/admin", strings.NewReader(string(b))))
		return rec
	}
	rec := ask(api.AdminRequest{Node: "node2", Switch: "block", Value: true})
	if err := api.ReadError(rec.Result()); fs.ErrnoName(err) != "EPERM" {
		t.Fatalf("node2's switch set on node1: %d %s (%v)", rec.Code, rec.Body, err)
	}
	if n, _ := s.Node("node2"); n.Admin.Block {
		t.Fatal("node2 blocks")
	}
	if rec := ask(api.AdminRequest{Switch: "block", Value: true}); rec.Code != http.StatusOK {
		t.Fatalf("node1's own switch: %d %s", rec.Code, rec.Body)
	}
	if n, _ := s.Node("node1"); !n.Admin.Block {
		t.Fatal("node1 does not block")
	}
}
