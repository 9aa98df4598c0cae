package peer

import (
	"errors"
	"net/http"
	"testing"
	"time"

	"ssi/fs"
	"ssi/raftstore"
)

// agreed is a hand-made agreed state: n1..n3 are nodes, n4 only a Raft
// server (joined, not yet registered); n1 votes; serial "bad" is
// revoked.
type agreed struct {
	procs map[int]raftstore.Proc
	moves map[int]raftstore.Migration
}

func (a agreed) Node(name string) (raftstore.Node, bool) {
	switch name {
	case "n1", "n2", "n3":
		return raftstore.Node{Name: name}, true
	}
	return raftstore.Node{}, false
}
func (a agreed) Proc(cpid int) (raftstore.Proc, bool) { p, ok := a.procs[cpid]; return p, ok }
func (a agreed) Migration(cpid int) (raftstore.Migration, bool) {
	m, ok := a.moves[cpid]
	return m, ok
}
func (a agreed) Servers() ([]raftstore.Server, error) {
	return []raftstore.Server{{ID: "n1", Voter: true}, {ID: "n2"}, {ID: "n3"}, {ID: "n4"}}, nil
}
func (a agreed) CertRevoked(serial string) bool { return serial == "bad" }

func testAgreed() agreed {
	return agreed{
		procs: map[int]raftstore.Proc{
			// 7: homed on n1, runs on n2; 8: on n1, moving to n3.
			7: {CPID: 7, Home: "n1", Node: "n2"},
			8: {CPID: 8, Home: "n1", Node: "n1", State: raftstore.ProcMigrating},
		},
		moves: map[int]raftstore.Migration{8: {ID: "m8", CPID: 8, From: "n1", To: "n3"}},
	}
}

func TestCheckMember(t *testing.T) {
	s := testAgreed()
	for _, tc := range []struct {
		caller, serial string
		ok             bool
	}{
		{"n1", "01", true},
		{"n4", "", true}, // a Raft server not registered yet
		{"n9", "01", false},
		{"", "", false},
		{"n1", "bad", false},
	} {
		err := CheckMember(s, tc.caller, tc.serial)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, fs.ErrPermission)) {
			t.Errorf("CheckMember(%q, %q) = %v, want ok %v", tc.caller, tc.serial, err, tc.ok)
		}
	}
	if name, serial := Caller(nil); name != "" || serial != "" {
		t.Errorf("no connection: %q %q", name, serial)
	}
}

// What Authorize answers.
const (
	allowed = iota
	refused
	missing
)

var (
	lock, one = true, 1
	n3        = "n3"
)

// authorizeCases: every command kind against who sends it: the node it
// is about, its process's home or host, a move's ends, anyone (tokens,
// home), voters (certificates issued).
var authorizeCases = []struct {
	name   string
	caller string
	cmd    raftstore.Command
	want   int
}{
	{"upsert self", "n3", raftstore.NodeUpsert{Name: "n3"}, allowed},
	{"upsert another", "n3", raftstore.NodeUpsert{Name: "n2"}, refused},
	{"set own state", "n2", raftstore.NodeSetState{Name: "n2", State: raftstore.NodeUp}, allowed},
	{"mark another down", "n2", raftstore.NodeSetState{Name: "n1", State: raftstore.NodeDown}, refused},
	{"remove another", "n2", raftstore.NodeRemove{Name: "n1"}, refused},
	{"own admin switch", "n2", raftstore.AdminSet{Node: "n2", Switch: "block", Value: true}, allowed},
	{"another's admin switch", "n2", raftstore.AdminSet{Node: "n1", Switch: "block", Value: true}, refused},

	{"add own process", "n2", raftstore.ProcAdd{Home: "n2"}, allowed},
	{"add own process here", "n2", raftstore.ProcAdd{Home: "n2", Node: "n2"}, allowed},
	{"add for another home", "n2", raftstore.ProcAdd{Home: "n1"}, refused},
	{"add onto another node, homed here", "n2", raftstore.ProcAdd{Home: "n2", Node: "n3"}, allowed},
	{"add onto this node, homed elsewhere", "n2", raftstore.ProcAdd{Home: "n3", Node: "n2"}, refused},
	{"update as host", "n2", raftstore.ProcUpdate{CPID: 7, ExitCode: &one}, allowed},
	{"update as home", "n1", raftstore.ProcUpdate{CPID: 7, Node: &n3}, allowed},
	{"update as stranger", "n3", raftstore.ProcUpdate{CPID: 7, ExitCode: &one}, refused},
	{"pin from anywhere", "n3", raftstore.ProcUpdate{CPID: 7, Lock: &lock}, allowed},
	{"pin and move", "n3", raftstore.ProcUpdate{CPID: 7, Lock: &lock, Node: &n3}, refused},
	{"update unknown", "n3", raftstore.ProcUpdate{CPID: 99, ExitCode: &one}, missing},
	{"remove as host", "n2", raftstore.ProcRemove{CPID: 7}, allowed},
	{"remove as home", "n1", raftstore.ProcRemove{CPID: 7}, allowed},
	{"remove as stranger", "n3", raftstore.ProcRemove{CPID: 7}, refused},
	{"remove unknown", "n3", raftstore.ProcRemove{CPID: 99}, missing},

	{"start as host", "n2", raftstore.MigrationStart{ID: "x", CPID: 7, To: "n3"}, allowed},
	{"start as home", "n1", raftstore.MigrationStart{ID: "x", CPID: 7, To: "n3"}, refused},
	{"start as destination", "n3", raftstore.MigrationStart{ID: "x", CPID: 7, To: "n3"}, refused},
	{"start unknown", "n2", raftstore.MigrationStart{ID: "x", CPID: 99, To: "n3"}, missing},
	{"end as source", "n1", raftstore.MigrationEnd{CPID: 8, ID: "m8", Commit: true}, allowed},
	{"end as destination", "n3", raftstore.MigrationEnd{CPID: 8, ID: "m8", Commit: true}, allowed},
	{"end as stranger", "n2", raftstore.MigrationEnd{CPID: 8, ID: "m8"}, refused},
	{"end without id", "n1", raftstore.MigrationEnd{CPID: 8}, refused},
	{"end of a move gone", "n1", raftstore.MigrationEnd{CPID: 8, ID: "old"}, missing},
	{"phase as destination", "n3", raftstore.MigrationPhase{CPID: 8, ID: "m8", Phase: "restore"}, allowed},
	{"phase as stranger", "n2", raftstore.MigrationPhase{CPID: 8, ID: "m8", Phase: "restore"}, refused},

	{"token add", "n2", raftstore.TokenAdd{Hash: "h"}, allowed},
	{"token use", "n2", raftstore.TokenUse{Hash: "h"}, allowed},
	{"token revoke", "n2", raftstore.TokenRevoke{Key: "k"}, allowed},
	{"token remove", "n2", raftstore.TokenRemove{Hash: "h"}, allowed},
	{"cert revoke", "n2", raftstore.CertRevoke{Serial: "01"}, allowed},
	{"cert issue by a voter", "n1", raftstore.CertIssue{Serial: "01", Node: "n4"}, allowed},
	{"cert issue by a non-voter", "n2", raftstore.CertIssue{Serial: "01", Node: "n2"}, refused},
	{"home write", "n2", raftstore.HomeWrite{Ino: 1}, allowed},
	{"home create", "n2", raftstore.HomeCreate{Parent: 1, Name: "f"}, allowed},
	{"home config", "n2", raftstore.HomeConfig{}, allowed},
}

func TestAuthorize(t *testing.T) {
	s := testAgreed()
	for _, tc := range authorizeCases {
		t.Run(tc.name, func(t *testing.T) {
			err := Authorize(s, tc.caller, tc.cmd)
			switch {
			case tc.want == allowed && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want == refused && !errors.Is(err, fs.ErrPermission):
				t.Fatalf("want EPERM, got %v", err)
			case tc.want == missing && !errors.Is(err, raftstore.ErrNotFound):
				t.Fatalf("want not found, got %v", err)
			}
		})
	}
}

// Root is root only for what the calling node holds or is the home of;
// elsewhere it acts as a user's process's owner, and as nobody on
// root's. Other uids are taken as the member claims them.
func TestEffectiveUID(t *testing.T) {
	p := raftstore.Proc{CPID: 7, Home: "n1", Node: "n2", UID: 0}
	users := raftstore.Proc{CPID: 8, Home: "n1", Node: "n2", UID: 1000}
	for _, tc := range []struct {
		caller  string
		claimed int
		p       raftstore.Proc
		want    int
	}{
		{"n1", 0, p, 0},                     // its home
		{"n2", 0, p, 0},                     // where it runs
		{"n3", 0, p, Nobody},                // a third node's root is squashed
		{"", 0, p, Nobody},                  // no certificate
		{"n3", 0, raftstore.Proc{}, Nobody}, // no such process
		{"n3", 0, users, 1000},              // n3 could claim 1000 itself
		{"n3", 1000, p, 1000},               // a member vouches for its users
		{"n3", Nobody, p, Nobody},
	} {
		if got := EffectiveUID(tc.caller, tc.claimed, tc.p); got != tc.want {
			t.Errorf("EffectiveUID(%q, %d, home %q node %q uid %d) = %d, want %d",
				tc.caller, tc.claimed, tc.p.Home, tc.p.Node, tc.p.UID, got, tc.want)
		}
	}
}

// Over the cluster port the caller is its certificate: a member may
// apply what is about itself and not what is about another; a
// certificate of the cluster whose node is no member, or that is
// revoked, may apply nothing.
func TestHandleApplyChecksCaller(t *testing.T) {
	m := newMember(t)
	ctx := testContext(t)
	// n2 is a node of the state, registered by the leader itself.
	if _, err := m.c.Apply(ctx, raftstore.NodeUpsert{Name: "n1", Addr: m.addr}); err != nil {
		t.Fatal(err)
	}
	if _, err := m.c.Apply(ctx, raftstore.NodeUpsert{Name: "n2", Addr: "127.0.0.1:2"}); err != nil {
		t.Fatal(err)
	}
	post := func(c *http.Client, cmd raftstore.Command) error {
		b, err := raftstore.EncodeCommand(cmd)
		if err != nil {
			t.Fatal(err)
		}
		return postWith(ctx, c, m.addr, ApplyPath, b, nil)
	}
	n2, serial := m.as(t, "n2")
	if err := post(n2, raftstore.NodeUpsert{Name: "n2", Addr: "127.0.0.1:2", CPUs: 4}); err != nil {
		t.Fatalf("n2 about itself: %v", err)
	}
	if n, _ := m.s.Node("n2"); n.CPUs != 4 {
		t.Fatalf("n2 = %+v", n)
	}
	if err := post(n2, raftstore.NodeUpsert{Name: "n1", Addr: "127.0.0.1:2"}); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("n2 about n1: %v", err)
	}
	// Wrapped in a Once, the policy is the wrapped command's.
	if err := post(n2, raftstore.Once{ID: "x", Cmd: raftstore.NodeUpsert{Name: "n1", Addr: "127.0.0.1:2"}}); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("n2 about n1 in a once: %v", err)
	}
	// A token use resent under its id spends one use, and answers alike.
	if _, err := m.c.Apply(ctx, raftstore.TokenAdd{Hash: raftstore.HashToken("u"), Uses: 2}); err != nil {
		t.Fatal(err)
	}
	use := raftstore.Once{ID: "use-1", Cmd: raftstore.TokenUse{Hash: raftstore.HashToken("u"), At: time.Now()}}
	for range 2 {
		if err := post(n2, use); err != nil {
			t.Fatalf("a token use: %v", err)
		}
	}
	if tok, _ := m.s.Token(raftstore.HashToken("u")); tok.Used != 1 {
		t.Fatalf("a use sent twice counted %d times", tok.Used)
	}
	if n, _ := m.s.Node("n1"); n.Addr != m.addr {
		t.Fatalf("n1 changed: %+v", n)
	}
	stranger, _ := m.as(t, "n9")
	if err := post(stranger, raftstore.TokenAdd{Hash: raftstore.HashToken("t")}); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("a certificate of no member: %v", err)
	}
	if _, err := m.c.Apply(ctx, raftstore.CertRevoke{Serial: serial}); err != nil {
		t.Fatal(err)
	}
	if err := post(n2, raftstore.NodeUpsert{Name: "n2", Addr: "127.0.0.1:2"}); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("a revoked certificate: %v", err)
	}
}
