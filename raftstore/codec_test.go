package raftstore

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// allCommands has one filled-in value of every command type.
func allCommands() []Command {
	return append([]Command{
		NodeUpsert{Name: "n1", Addr: "a:1", State: NodeDown, CPUs: 1.5, Memory: 1 << 30, Speed: 7, JoinedAt: t0},
		NodeRemove{Name: "n1"},
		NodeSetState{Name: "n1", State: NodeLeft},
		AdminSet{Node: "n1", Switch: SwitchStay, Value: true},
		ProcAdd{CPID: 3, Home: "n1", Node: "n2", UID: 1000, Argv: []string{"a", "b"}, StartedAt: t0},
		ProcUpdate{CPID: 3, Node: ptr("n2"), State: ptr(ProcStopped), Lock: ptr(true), ExitCode: ptr(0), NMigs: ptr(2)},
		ProcRemove{CPID: 3},
		MigrationStart{ID: "m", CPID: 3, From: "n1", To: "n2", StartedAt: t0, Phase: "p"},
		MigrationPhase{CPID: 3, ID: "m", Phase: "q"},
		MigrationEnd{CPID: 3, ID: "m", Commit: true},
		TokenAdd{Hash: HashToken("t"), CreatedAt: t0},
		TokenRemove{Hash: HashToken("t")},
		TokenUse{Hash: HashToken("t"), At: t0},
		TokenRevoke{Key: "abc"},
		CertIssue{Serial: "0a", Node: "n1", NotAfter: t0, At: t0},
		CertRevoke{Serial: "0a"},
		Once{ID: "f00d", Cmd: TokenUse{Hash: "abc"}},
	}, allHomeCommands()...)
}

func TestCommandRoundTrip(t *testing.T) {
	seen := map[CommandType]bool{}
	for _, cmd := range allCommands() {
		t.Run(cmd.Type().String(), func(t *testing.T) {
			b, err := EncodeCommand(cmd)
			if err != nil {
				t.Fatal(err)
			}
			json := codecs[cmd.Type()].encode == nil
			if CommandType(b[0]) != cmd.Type() || b[1] != codecs[cmd.Type()].current || json && b[2] != '{' {
				t.Fatalf("header = % x, want type %d, version %d, JSON", b[:3], cmd.Type(), codecs[cmd.Type()].current)
			}
			got, err := DecodeCommand(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, cmd) {
				t.Fatalf("decoded %#v, want %#v", got, cmd)
			}
		})
		seen[cmd.Type()] = true
	}
	if len(seen) != len(codecs) {
		t.Errorf("allCommands covers %d of %d command types", len(seen), len(codecs))
	}
}

func TestDecodeRejects(t *testing.T) {
	good, err := EncodeCommand(NodeRemove{Name: "n1"})
	if err != nil {
		t.Fatal(err)
	}
	withVersion := func(v byte) []byte {
		b := append([]byte(nil), good...)
		b[1] = v
		return b
	}
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"empty", nil, "at least 2"},
		{"type only", good[:1], "at least 2"},
		{"unknown type", append([]byte{200, 1}, good[2:]...), "unknown command type 200"},
		{"type zero", append([]byte{0, 1}, good[2:]...), "unknown command type 0"},
		{"unknown version of known type", withVersion(2), "unknown version 2"},
		{"version zero", withVersion(0), "unknown version 0"},
		{"garbage body", append([]byte{byte(CmdNodeRemove), 1}, "\x00\xffnot json"...), "node remove v1"},
		{"empty body", good[:2], "node remove v1"},
		{"wrong field type", append([]byte{byte(CmdNodeRemove), 1}, `{"name":7}`...), "node remove v1"},
		{"unknown field", append([]byte{byte(CmdNodeRemove), 1}, `{"name":"n1","extra":1}`...), "unknown field"},
		{"trailing data", append(append([]byte(nil), good...), `{}`...), "trailing data"},
		{"other command's body", append([]byte{byte(CmdTokenRemove), 1}, good[2:]...), "unknown field"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeCommand(tc.b)
			if !errors.Is(err, ErrBadCommand) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrBadCommand mentioning %q", err, tc.want)
			}
		})
	}
}

func TestEncodeRejectsNil(t *testing.T) {
	if _, err := EncodeCommand(nil); !errors.Is(err, ErrBadCommand) {
		t.Fatalf("err = %v, want ErrBadCommand", err)
	}
}

// A committed entry that does not decode must stop the node, never be
// skipped: skipping would let this replica diverge.
func TestCommittedGarbagePanics(t *testing.T) {
	for _, data := range [][]byte{
		{0xde, 0xad, 0xbe, 0xef},
		{byte(CmdProcAdd), 99, '{', '}'},
	} {
		f := newTestFSM()
		f.must(t, twoNodes()...)
		before := f.st.clone()
		msg := func() (msg any) {
			defer func() { msg = recover() }()
			f.Apply(&raft.Log{Index: 10, Term: 2, Type: raft.LogCommand, Data: data})
			return nil
		}()
		s, _ := msg.(string)
		if !strings.Contains(s, "committed log entry 10") || !strings.Contains(s, "diverge") {
			t.Fatalf("panic = %v, want a message naming the entry and why", msg)
		}
		assertStateEqual(t, before, f.st)
	}
}

func TestErrorCodes(t *testing.T) {
	for _, c := range errorCodes {
		err := ErrorFromCode(ErrorCode(wrap(c.err)), "remote: "+c.err.Error())
		if !errors.Is(err, c.err) || err.Error() != "remote: "+c.err.Error() {
			t.Errorf("code %s: rebuilt %v, want it to wrap %v", c.code, err, c.err)
		}
	}
	if ErrorCode(&NotLeaderError{LeaderID: "n1"}) != "not_leader" {
		t.Error("NotLeaderError has no not_leader code")
	}
	if ErrorCode(nil) != "" || ErrorFromCode("", "x") != nil {
		t.Error("nil error does not round-trip as no error")
	}
	if ErrorCode(errors.New("disk on fire")) != "internal" {
		t.Error("unknown error is not internal")
	}
}

func wrap(err error) error { return errors.Join(errors.New("context"), err) }
