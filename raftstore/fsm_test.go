package raftstore

import (
	"errors"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// testFSM drives an fsm the way raft does: encoded commands in log
// entries with rising indexes.
type testFSM struct {
	*fsm
	index uint64
}

func newTestFSM() *testFSM { return &testFSM{fsm: newFSM()} }

func (f *testFSM) apply(t *testing.T, cmd Command) applyResult {
	t.Helper()
	b, err := EncodeCommand(cmd)
	if err != nil {
		t.Fatalf("encode %T: %v", cmd, err)
	}
	f.index++
	res, ok := f.Apply(&raft.Log{Index: f.index, Term: 1, Type: raft.LogCommand, Data: b}).(applyResult)
	if !ok {
		t.Fatalf("apply %T: response is not an applyResult", cmd)
	}
	return res
}

// must applies cmds and fails the test on any state error.
func (f *testFSM) must(t *testing.T, cmds ...Command) {
	t.Helper()
	for _, c := range cmds {
		if res := f.apply(t, c); res.err != nil {
			t.Fatalf("apply %T: %v", c, res.err)
		}
	}
}

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)

func ptr[T any](v T) *T { return &v }

func twoNodes() []Command {
	return []Command{
		NodeUpsert{Name: "n1", Addr: "10.0.0.1:7000", CPUs: 4, Memory: 8 << 30, Speed: 100, JoinedAt: t0},
		NodeUpsert{Name: "n2", Addr: "10.0.0.2:7000", CPUs: 2, Memory: 4 << 30, Speed: 50, JoinedAt: t0},
	}
}

// fsmCase is one command applied after a setup, with the error expected
// (nil for success) and a check of the resulting state.
type fsmCase struct {
	name    string
	setup   []Command
	cmd     Command
	wantErr error
	check   func(t *testing.T, s *state, res applyResult)
}

func runFSMCases(t *testing.T, cases []fsmCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f := newTestFSM()
			f.must(t, tc.setup...)
			before := f.st.clone()
			res := f.apply(t, tc.cmd)
			if tc.wantErr == nil && res.err != nil {
				t.Fatalf("unexpected error: %v", res.err)
			}
			if tc.wantErr != nil {
				if !errors.Is(res.err, tc.wantErr) {
					t.Fatalf("error = %v, want %v", res.err, tc.wantErr)
				}
				// A refused command changes nothing but the applied index.
				before.applied = f.st.applied
				assertStateEqual(t, before, f.st)
			}
			if f.st.applied != f.index {
				t.Errorf("applied = %d, want %d", f.st.applied, f.index)
			}
			if tc.check != nil {
				tc.check(t, f.st, res)
			}
		})
	}
}

func TestFSMNodes(t *testing.T) {
	runFSMCases(t, []fsmCase{
		{name: "upsert new defaults to up", cmd: twoNodes()[0], check: func(t *testing.T, s *state, _ applyResult) {
			n := s.nodes["n1"]
			if n == nil || n.State != NodeUp || n.Addr != "10.0.0.1:7000" || n.CPUs != 4 || n.Speed != 100 || !n.JoinedAt.Equal(t0) {
				t.Fatalf("node = %+v", n)
			}
		}},
		{name: "upsert keeps admin and joined-at",
			setup: []Command{twoNodes()[0], AdminSet{Node: "n1", Switch: SwitchBlock, Value: true}},
			cmd:   NodeUpsert{Name: "n1", Addr: "10.0.0.9:7000", State: NodeDown, CPUs: 8},
			check: func(t *testing.T, s *state, _ applyResult) {
				n := s.nodes["n1"]
				if !n.Admin.Block || n.Addr != "10.0.0.9:7000" || n.State != NodeDown || n.CPUs != 8 || !n.JoinedAt.Equal(t0) {
					t.Fatalf("node = %+v", n)
				}
			}},
		{name: "upsert empty name", cmd: NodeUpsert{}, wantErr: ErrInvalid},
		{name: "upsert bad state", cmd: NodeUpsert{Name: "x", State: "sideways"}, wantErr: ErrInvalid},
		{name: "remove", setup: twoNodes(), cmd: NodeRemove{Name: "n2"}, check: func(t *testing.T, s *state, _ applyResult) {
			if _, ok := s.nodes["n2"]; ok || len(s.nodes) != 1 {
				t.Fatalf("nodes = %v", s.nodes)
			}
		}},
		{name: "remove unknown", setup: twoNodes(), cmd: NodeRemove{Name: "n3"}, wantErr: ErrNotFound},
		{name: "set state", setup: twoNodes(), cmd: NodeSetState{Name: "n2", State: NodeLeft}, check: func(t *testing.T, s *state, _ applyResult) {
			if s.nodes["n2"].State != NodeLeft {
				t.Fatalf("state = %s", s.nodes["n2"].State)
			}
		}},
		{name: "set state unknown node", cmd: NodeSetState{Name: "n9", State: NodeDown}, wantErr: ErrNotFound},
		{name: "set bad state", setup: twoNodes(), cmd: NodeSetState{Name: "n1", State: "gone"}, wantErr: ErrInvalid},
	})
}

func TestFSMAdminSwitches(t *testing.T) {
	cases := []fsmCase{
		{name: "unknown switch", setup: twoNodes(), cmd: AdminSet{Node: "n1", Switch: "teleport", Value: true}, wantErr: ErrInvalid},
		{name: "unknown node", cmd: AdminSet{Node: "n1", Switch: SwitchStay, Value: true}, wantErr: ErrNotFound},
		{name: "off again", setup: append(twoNodes(), AdminSet{Node: "n1", Switch: SwitchExpel, Value: true}),
			cmd: AdminSet{Node: "n1", Switch: SwitchExpel, Value: false},
			check: func(t *testing.T, s *state, _ applyResult) {
				if s.nodes["n1"].Admin != (Admin{}) {
					t.Fatalf("admin = %+v", s.nodes["n1"].Admin)
				}
			}},
	}
	for _, sw := range []string{SwitchBlock, SwitchBring, SwitchExpel, SwitchStay} {
		cases = append(cases, fsmCase{name: "set " + sw, setup: twoNodes(),
			cmd: AdminSet{Node: "n2", Switch: sw, Value: true},
			check: func(t *testing.T, s *state, _ applyResult) {
				m := s.nodes["n2"].Admin.Map()
				for name, v := range m {
					if v != (name == sw) {
						t.Errorf("switch %s = %v after setting %s", name, v, sw)
					}
				}
				if s.nodes["n1"].Admin != (Admin{}) {
					t.Errorf("n1 admin changed: %+v", s.nodes["n1"].Admin)
				}
			}})
	}
	runFSMCases(t, cases)
}

func wantCPID(want int) func(*testing.T, *state, applyResult) {
	return func(t *testing.T, s *state, res applyResult) {
		t.Helper()
		if res.cpid != want {
			t.Fatalf("cpid = %d, want %d", res.cpid, want)
		}
		if p := s.procs[want]; p == nil || p.CPID != want || p.State != ProcRunning {
			t.Fatalf("proc %d = %+v", want, p)
		}
	}
}

func TestFSMProcAdd(t *testing.T) {
	add := func(cpid int) ProcAdd {
		return ProcAdd{CPID: cpid, Home: "n1", UID: 1000, Argv: []string{"sleep", "1"}, StartedAt: t0}
	}
	withProcs := func(cmds ...Command) []Command { return append(twoNodes(), cmds...) }
	runFSMCases(t, []fsmCase{
		{name: "no wish takes counter", setup: twoNodes(), cmd: add(0), check: wantCPID(1)},
		{name: "wanted free is used", setup: twoNodes(), cmd: add(42), check: func(t *testing.T, s *state, res applyResult) {
			wantCPID(42)(t, s, res)
			if s.nextCPID != 43 {
				t.Fatalf("next = %d, want 43: the counter must skip wanted numbers", s.nextCPID)
			}
			p := s.procs[42]
			if p.Home != "n1" || p.Node != "n1" || p.UID != 1000 || len(p.Argv) != 2 || !p.StartedAt.Equal(t0) {
				t.Fatalf("proc = %+v", p)
			}
		}},
		{name: "wanted taken gets next free", setup: withProcs(add(1), add(2)), cmd: add(1), check: wantCPID(3)},
		{name: "wanted below counter and free", setup: withProcs(add(5), ProcRemove{CPID: 5}), cmd: add(2), check: wantCPID(2)},
		{name: "counter never reuses", setup: withProcs(add(0), add(0), ProcRemove{CPID: 2}), cmd: add(0), check: wantCPID(3)},
		{name: "counter skips occupied", setup: withProcs(add(0), add(2)), cmd: add(0), check: wantCPID(3)},
		{name: "negative wish ignored", setup: twoNodes(), cmd: add(-7), check: wantCPID(1)},
		{name: "unknown home", cmd: add(0), wantErr: ErrNotFound},
		{name: "unknown node", setup: twoNodes(), cmd: ProcAdd{Home: "n1", Node: "n7"}, wantErr: ErrNotFound},
	})
}

func TestFSMProcUpdateRemove(t *testing.T) {
	setup := append(twoNodes(), ProcAdd{CPID: 7, Home: "n1", Argv: []string{"x"}, StartedAt: t0})
	migrating := append(append([]Command{}, setup...), MigrationStart{ID: "m1", CPID: 7, To: "n2", StartedAt: t0})
	runFSMCases(t, []fsmCase{
		{name: "partial update", setup: setup,
			cmd: ProcUpdate{CPID: 7, State: ptr(ProcExited), ExitCode: ptr(3), Lock: ptr(true)},
			check: func(t *testing.T, s *state, _ applyResult) {
				p := s.procs[7]
				if p.State != ProcExited || p.ExitCode == nil || *p.ExitCode != 3 || !p.Lock || p.Node != "n1" || p.NMigs != 0 {
					t.Fatalf("proc = %+v", p)
				}
			}},
		{name: "node and nmigs", setup: setup, cmd: ProcUpdate{CPID: 7, Node: ptr("n2"), NMigs: ptr(4)},
			check: func(t *testing.T, s *state, _ applyResult) {
				if p := s.procs[7]; p.Node != "n2" || p.NMigs != 4 || p.State != ProcRunning {
					t.Fatalf("proc = %+v", p)
				}
			}},
		{name: "unknown proc", setup: setup, cmd: ProcUpdate{CPID: 8, Lock: ptr(true)}, wantErr: ErrNotFound},
		{name: "unknown node", setup: setup, cmd: ProcUpdate{CPID: 7, Node: ptr("n9")}, wantErr: ErrNotFound},
		{name: "state migrating refused", setup: setup, cmd: ProcUpdate{CPID: 7, State: ptr(ProcMigrating)}, wantErr: ErrInvalid},
		{name: "bad state", setup: setup, cmd: ProcUpdate{CPID: 7, State: ptr(ProcState("zombie"))}, wantErr: ErrInvalid},
		{name: "negative nmigs", setup: setup, cmd: ProcUpdate{CPID: 7, NMigs: ptr(-1), Lock: ptr(true)}, wantErr: ErrInvalid},
		{name: "node while migrating", setup: migrating, cmd: ProcUpdate{CPID: 7, Node: ptr("n2")}, wantErr: ErrBusy},
		{name: "lock while migrating", setup: migrating, cmd: ProcUpdate{CPID: 7, Lock: ptr(true)},
			check: func(t *testing.T, s *state, _ applyResult) {
				if !s.procs[7].Lock || s.procs[7].State != ProcMigrating {
					t.Fatalf("proc = %+v", s.procs[7])
				}
			}},
		{name: "remove drops migration", setup: migrating, cmd: ProcRemove{CPID: 7},
			check: func(t *testing.T, s *state, _ applyResult) {
				if len(s.procs) != 0 || len(s.migrations) != 0 {
					t.Fatalf("procs %v migrations %v", s.procs, s.migrations)
				}
			}},
		{name: "remove unknown", setup: setup, cmd: ProcRemove{CPID: 99}, wantErr: ErrNotFound},
	})
}

func TestFSMMigrations(t *testing.T) {
	setup := append(twoNodes(), ProcAdd{CPID: 7, Home: "n1", StartedAt: t0})
	start := MigrationStart{ID: "m1", CPID: 7, From: "n1", To: "n2", StartedAt: t0, Phase: "dump"}
	started := append(append([]Command{}, setup...), start)
	runFSMCases(t, []fsmCase{
		{name: "start", setup: setup, cmd: start, check: func(t *testing.T, s *state, _ applyResult) {
			m := s.migrations[7]
			if m == nil || *m != (Migration{ID: "m1", CPID: 7, From: "n1", To: "n2", StartedAt: t0, Phase: "dump"}) {
				t.Fatalf("migration = %+v", m)
			}
			if s.procs[7].State != ProcMigrating {
				t.Fatalf("proc state = %s", s.procs[7].State)
			}
		}},
		{name: "start twice is busy", setup: started, cmd: MigrationStart{ID: "m2", CPID: 7, To: "n2"}, wantErr: ErrBusy},
		{name: "unknown proc", setup: setup, cmd: MigrationStart{ID: "m1", CPID: 8, To: "n2"}, wantErr: ErrNotFound},
		{name: "unknown destination", setup: setup, cmd: MigrationStart{ID: "m1", CPID: 7, To: "n3"}, wantErr: ErrNotFound},
		{name: "wrong source", setup: setup, cmd: MigrationStart{ID: "m1", CPID: 7, From: "n2", To: "n2"}, wantErr: ErrInvalid},
		{name: "to itself", setup: setup, cmd: MigrationStart{ID: "m1", CPID: 7, To: "n1"}, wantErr: ErrInvalid},
		// The balancer's reservation: one exclusive arrival at a time per
		// node; a plain move is not held back, and n1 may still take one.
		{name: "exclusive while another arrives", setup: append(append([]Command{}, started...), ProcAdd{CPID: 8, Home: "n1", StartedAt: t0}),
			cmd: MigrationStart{ID: "m2", CPID: 8, To: "n2", Exclusive: true}, wantErr: ErrBusy},
		{name: "plain while another arrives", setup: append(append([]Command{}, started...), ProcAdd{CPID: 8, Home: "n1", StartedAt: t0}),
			cmd: MigrationStart{ID: "m2", CPID: 8, To: "n2"}},
		{name: "exclusive to a free node", setup: append(append([]Command{}, started...), ProcAdd{CPID: 8, Home: "n2", Node: "n2", StartedAt: t0}),
			cmd: MigrationStart{ID: "m2", CPID: 8, To: "n1", Exclusive: true}},
		{name: "exited process", setup: append(append([]Command{}, setup...), ProcUpdate{CPID: 7, State: ptr(ProcExited)}),
			cmd: start, wantErr: ErrInvalid},
		{name: "phase", setup: started, cmd: MigrationPhase{CPID: 7, ID: "m1", Phase: "restore"},
			check: func(t *testing.T, s *state, _ applyResult) {
				if s.migrations[7].Phase != "restore" {
					t.Fatalf("phase = %s", s.migrations[7].Phase)
				}
			}},
		{name: "end commit moves and counts", setup: started, cmd: MigrationEnd{CPID: 7, ID: "m1", Commit: true},
			check: func(t *testing.T, s *state, _ applyResult) {
				p := s.procs[7]
				if p.Node != "n2" || p.NMigs != 1 || p.State != ProcRunning || p.Home != "n1" || len(s.migrations) != 0 {
					t.Fatalf("proc = %+v, migrations %v", p, s.migrations)
				}
			}},
		{name: "end abort restores", setup: started, cmd: MigrationEnd{CPID: 7, Commit: false},
			check: func(t *testing.T, s *state, _ applyResult) {
				p := s.procs[7]
				if p.Node != "n1" || p.NMigs != 0 || p.State != ProcRunning || len(s.migrations) != 0 {
					t.Fatalf("proc = %+v, migrations %v", p, s.migrations)
				}
			}},
		{name: "end wrong id", setup: started, cmd: MigrationEnd{CPID: 7, ID: "other", Commit: true}, wantErr: ErrNotFound},
		{name: "end without start", setup: setup, cmd: MigrationEnd{CPID: 7, Commit: true}, wantErr: ErrNotFound},
	})
}

func TestFSMTokens(t *testing.T) {
	h1, h2 := HashToken("secret-1"), HashToken("secret-2")
	runFSMCases(t, []fsmCase{
		{name: "add", cmd: TokenAdd{Hash: h1, CreatedAt: t0}, check: func(t *testing.T, s *state, _ applyResult) {
			if got := s.tokens[h1]; got.Hash != h1 || !got.CreatedAt.Equal(t0) {
				t.Fatalf("token = %+v", got)
			}
		}},
		{name: "add twice", setup: []Command{TokenAdd{Hash: h1}}, cmd: TokenAdd{Hash: h1}, wantErr: ErrExists},
		{name: "add plain token refused", cmd: TokenAdd{Hash: "secret-1"}, wantErr: ErrInvalid},
		{name: "add upper-case hex refused", cmd: TokenAdd{Hash: "AB" + h1[2:]}, wantErr: ErrInvalid},
		{name: "remove", setup: []Command{TokenAdd{Hash: h1}, TokenAdd{Hash: h2}}, cmd: TokenRemove{Hash: h1},
			check: func(t *testing.T, s *state, _ applyResult) {
				if l := s.tokenList(); len(l) != 1 || l[0].Hash != h2 {
					t.Fatalf("tokens = %v", l)
				}
			}},
		{name: "remove unknown", cmd: TokenRemove{Hash: h1}, wantErr: ErrNotFound},
	})
}
