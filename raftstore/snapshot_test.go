package raftstore

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"time"
)

func assertStateEqual(t *testing.T, want, got *state) {
	t.Helper()
	if !reflect.DeepEqual(want, got) {
		t.Fatalf("state differs:\nwant %s\n got %s", dumpState(want), dumpState(got))
	}
}

func dumpState(s *state) string {
	var b bytes.Buffer
	if err := writeSnapshot(&b, s); err != nil {
		return err.Error()
	}
	return b.String()
}

// richFSM has some of everything: nodes with switches, processes in
// every shape, a migration and tokens.
func richFSM(t *testing.T) *testFSM {
	f := newTestFSM()
	f.must(t, twoNodes()...)
	f.must(t,
		AdminSet{Node: "n2", Switch: SwitchBlock, Value: true},
		ProcAdd{CPID: 10, Home: "n1", UID: 1000, Argv: []string{"make", "-j8"}, StartedAt: t0},
		ProcAdd{Home: "n2", Node: "n1", Argv: []string{}, StartedAt: t0},
		ProcAdd{Home: "n1", StartedAt: t0},
		ProcUpdate{CPID: 11, State: ptr(ProcExited), ExitCode: ptr(1), Lock: ptr(true)},
		MigrationStart{ID: "m1", CPID: 10, To: "n2", StartedAt: t0, Phase: "dump"},
		TokenAdd{Hash: HashToken("a"), CreatedAt: t0},
		TokenAdd{Hash: HashToken("b"), CreatedAt: t0, ID: "tb", ExpiresAt: t0.Add(time.Hour), Uses: 2},
		TokenUse{Hash: HashToken("b"), At: t0},
		CertIssue{Serial: "01", Node: "n1", NotAfter: t0.Add(time.Hour), At: t0},
		CertRevoke{Serial: "02"},
	)
	return f
}

// memSink is a raft.SnapshotSink in memory.
type memSink struct {
	bytes.Buffer
	closed, cancelled bool
}

func (s *memSink) ID() string    { return "mem" }
func (s *memSink) Close() error  { s.closed = true; return nil }
func (s *memSink) Cancel() error { s.cancelled = true; return nil }

func snapshotBytes(t *testing.T, f *fsm) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var sink memSink
	if err := snap.Persist(&sink); err != nil || !sink.closed || sink.cancelled {
		t.Fatalf("persist: err %v, closed %v, cancelled %v", err, sink.closed, sink.cancelled)
	}
	return sink.Bytes()
}

func TestSnapshotRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    *testFSM
	}{{"empty", newTestFSM()}, {"rich", richFSM(t)}} {
		t.Run(tc.name, func(t *testing.T) {
			b := snapshotBytes(t, tc.f.fsm)
			g := newFSM()
			if err := g.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
				t.Fatal(err)
			}
			assertStateEqual(t, tc.f.st, g.st)
		})
	}
}

// The snapshot is a copy: applying after Snapshot does not change what
// Persist writes.
func TestSnapshotIsolatedFromLaterApplies(t *testing.T) {
	f := richFSM(t)
	want := f.st.clone()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	f.must(t, NodeRemove{Name: "n2"}, ProcUpdate{CPID: 10, Lock: ptr(true)})
	var sink memSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	g := newFSM()
	if err := g.Restore(io.NopCloser(&sink.Buffer)); err != nil {
		t.Fatal(err)
	}
	assertStateEqual(t, want, g.st)
}

func TestSnapshotCorruptLeavesStateAlone(t *testing.T) {
	good := snapshotBytes(t, richFSM(t).fsm)
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 0x40
		return b
	}
	cases := map[string][]byte{
		"empty":            nil,
		"header only":      good[:10],
		"truncated middle": good[:len(good)/2],
		"no end record":    good[:len(good)-20],
		"one byte short":   good[:len(good)-1],
		"bad magic":        flip(0),
		"newer format":     flip(9),
		"flipped body bit": flip(len(good) / 2),
		"unknown record":   withRecord(t, good[:10], 0x7f),
		"end count wrong":  withRecord(t, good[:10], recEnd),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			f := newTestFSM()
			f.must(t, twoNodes()...)
			before := f.st.clone()
			err := f.Restore(io.NopCloser(bytes.NewReader(b)))
			if !errors.Is(err, ErrBadSnapshot) {
				t.Fatalf("restore err = %v, want ErrBadSnapshot", err)
			}
			assertStateEqual(t, before, f.st)
		})
	}
}

// withRecord appends a well-formed record of type typ (with a body that
// counts 5 records) to prefix.
func withRecord(t *testing.T, prefix []byte, typ byte) []byte {
	var buf bytes.Buffer
	sw := &snapWriter{w: bufio.NewWriter(&buf)}
	sw.record(typ, snapEnd{Records: 5})
	if sw.err != nil || sw.w.Flush() != nil {
		t.Fatal("cannot build record")
	}
	return append(bytes.Clone(prefix), buf.Bytes()...)
}

// failingSink fails every write, as a full disk would.
type failingSink struct{ memSink }

func (s *failingSink) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestSnapshotPersistErrorCancels(t *testing.T) {
	snap, err := richFSM(t).Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink failingSink
	if err := snap.Persist(&sink); err == nil || !sink.cancelled || sink.closed {
		t.Fatalf("persist: err %v, cancelled %v, closed %v; want error and cancel", err, sink.cancelled, sink.closed)
	}
}
