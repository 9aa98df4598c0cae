package raftstore

import (
	"bytes"
	"testing"
	"time"
)

// Ends and finished moves are kept (bounded, oldest dropped first) and
// survive a snapshot.
func TestHistoryKeptBoundedAndSnapshotted(t *testing.T) {
	s := newState()
	s.nodes["a"] = &Node{Name: "a", State: NodeUp}
	s.nodes["b"] = &Node{Name: "b", State: NodeUp}
	code := 7
	for i := 1; i <= maxEnded+5; i++ {
		s.procs[i] = &Proc{CPID: i, Home: "a", Node: "a", State: ProcRunning}
		if err := applyProcRemove(s, ProcRemove{CPID: i, ExitCode: &code, EndedAt: time.Unix(int64(i), 0)}); err != nil {
			t.Fatal(err)
		}
	}
	if len(s.ended) != maxEnded || s.ended[0].CPID != 6 || *s.ended[len(s.ended)-1].ExitCode != 7 {
		t.Fatalf("ended: %d kept, first %d", len(s.ended), s.ended[0].CPID)
	}
	s.procs[9000] = &Proc{CPID: 9000, Home: "a", Node: "a", State: ProcRunning}
	if err := applyMigrationStart(s, MigrationStart{ID: "m1", CPID: 9000, To: "b"}); err != nil {
		t.Fatal(err)
	}
	st := &MoveStats{Frozen: 20 * time.Millisecond, Total: 30 * time.Millisecond, Bytes: 4096}
	if err := applyMigrationEnd(s, MigrationEnd{CPID: 9000, ID: "m1", Commit: true, Stats: st}); err != nil {
		t.Fatal(err)
	}
	if len(s.moves) != 1 || !s.moves[0].Committed || s.moves[0].To != "b" || s.moves[0].Bytes != 4096 {
		t.Fatalf("moves: %+v", s.moves)
	}
	var buf bytes.Buffer
	if err := writeSnapshot(&buf, s); err != nil {
		t.Fatal(err)
	}
	got, err := readSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.ended) != maxEnded || got.ended[0].CPID != 6 || len(got.moves) != 1 || got.moves[0].Frozen != st.Frozen {
		t.Fatalf("after a snapshot: %d ends (first %d), moves %+v", len(got.ended), got.ended[0].CPID, got.moves)
	}
}
