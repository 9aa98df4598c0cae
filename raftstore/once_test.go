package raftstore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"testing"
)

// A command resent under the same ID is applied once and answers what
// the first copy did, errors included, on every replica alike: the
// table travels in snapshots.
func TestOnceAppliesOnce(t *testing.T) {
	f := newTestFSM()
	f.must(t, twoNodes()...)
	add := Once{ID: "req-1", Cmd: ProcAdd{Home: "n1", StartedAt: t0}}
	first := f.apply(t, add)
	again := f.apply(t, add)
	if first.err != nil || again.err != nil || again.cpid != first.cpid || len(f.st.procs) != 1 {
		t.Fatalf("first %+v, again %+v, %d processes", first, again, len(f.st.procs))
	}
	// Another ID is another command.
	if other := f.apply(t, Once{ID: "req-2", Cmd: ProcAdd{Home: "n1", StartedAt: t0}}); other.cpid == first.cpid {
		t.Fatalf("a second request got the first one's cpid %d", other.cpid)
	}
	// An error is answered again as the same sentinel, even though the
	// state changed since (n3 exists now).
	bad := Once{ID: "req-3", Cmd: AdminSet{Node: "n3", Switch: SwitchBlock, Value: true}}
	if res := f.apply(t, bad); !errors.Is(res.err, ErrNotFound) {
		t.Fatalf("first: %v", res.err)
	}
	f.must(t, NodeUpsert{Name: "n3", Addr: "10.0.0.3:7000", JoinedAt: t0})
	if res := f.apply(t, bad); !errors.Is(res.err, ErrNotFound) || f.st.nodes["n3"].Admin.Block {
		t.Fatalf("resent: %v, n3 blocks: %v", res.err, f.st.nodes["n3"].Admin.Block)
	}
	// After a snapshot and a restore, a resend is still recognised.
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, f.st); err != nil {
		t.Fatal(err)
	}
	g := newTestFSM()
	if err := g.Restore(io.NopCloser(&buf)); err != nil {
		t.Fatal(err)
	}
	g.index = f.index
	if res := g.apply(t, add); res.cpid != first.cpid || len(g.st.procs) != 2 {
		t.Fatalf("after a restore: %+v, %d processes", res, len(g.st.procs))
	}
}

// The table keeps the last keepOnce IDs: the oldest is forgotten.
func TestOnceForgetsTheOldest(t *testing.T) {
	f := newTestFSM()
	f.must(t, twoNodes()...)
	for i := range keepOnce + 1 {
		f.must(t, Once{ID: fmt.Sprint("r", i), Cmd: AdminSet{Node: "n1", Switch: SwitchStay, Value: i%2 == 0}})
	}
	if _, ok := f.st.once.get("r0"); ok || len(f.st.once.order) != keepOnce || len(f.st.once.byID) != keepOnce {
		t.Fatalf("r0 kept: %v; %d in order, %d by id", ok, len(f.st.once.order), len(f.st.once.byID))
	}
	if _, ok := f.st.once.get(fmt.Sprint("r", keepOnce)); !ok {
		t.Fatal("the newest is not kept")
	}
}

// Malformed onces never reach the log.
func TestOnceRefusesBadOnes(t *testing.T) {
	for _, o := range []Once{{ID: "", Cmd: ProcRemove{CPID: 1}}, {ID: string(make([]byte, maxOnceID+1)), Cmd: ProcRemove{CPID: 1}},
		{ID: "x"}, {ID: "x", Cmd: Once{ID: "y", Cmd: ProcRemove{CPID: 1}}}} {
		if _, err := EncodeCommand(o); err == nil {
			t.Errorf("encoded %+v", o)
		}
	}
	empty := append([]byte{byte(CmdOnce), 1}, `{"id":"a","cmd":""}`...)
	if _, err := DecodeCommand(empty); !errors.Is(err, ErrBadCommand) {
		t.Errorf("decoded a once without a command: %v", err)
	}
	inner, _ := EncodeCommand(Once{ID: "b", Cmd: ProcRemove{CPID: 1}})
	nested, _ := json.Marshal(onceBody{ID: "a", Cmd: inner})
	if _, err := DecodeCommand(append([]byte{byte(CmdOnce), 1}, nested...)); !errors.Is(err, ErrBadCommand) {
		t.Errorf("decoded a once inside a once: %v", err)
	}
}
