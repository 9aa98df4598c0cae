package raftstore

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"ssi/raftstore/internal/testutil"
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

// Removing a node ends what ran there and aborts moves towards it.
func TestNodeRemoveEndsItsProcesses(t *testing.T) {
	s := newState()
	for _, n := range []string{"a", "b", "c"} {
		s.nodes[n] = &Node{Name: n, State: NodeUp}
	}
	s.procs[1] = &Proc{CPID: 1, Home: "a", Node: "b", State: ProcRunning}
	s.procs[2] = &Proc{CPID: 2, Home: "a", Node: "a", State: ProcRunning}
	s.procs[3] = &Proc{CPID: 3, Home: "c", Node: "c", State: ProcRunning}
	if err := applyMigrationStart(s, MigrationStart{ID: "m", CPID: 2, To: "b"}); err != nil {
		t.Fatal(err)
	}
	if err := applyNodeRemove(s, NodeRemove{Name: "b", At: time.Unix(5, 0)}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.procs[1]; ok || len(s.ended) != 1 || s.ended[0].CPID != 1 || s.ended[0].ExitCode != nil {
		t.Fatalf("process on the removed node: %v, ended %+v", s.procs[1], s.ended)
	}
	if p := s.procs[2]; p == nil || p.State != ProcRunning || p.Node != "a" || len(s.migrations) != 0 {
		t.Fatalf("move towards the removed node: %+v %v", p, s.migrations)
	}
	if s.procs[3] == nil {
		t.Fatal("a process elsewhere went too")
	}
}

// A second store on a data dir in use fails at once instead of hanging
// on the log's files.
func TestDataDirInUseFailsFast(t *testing.T) {
	c := newCluster(t, 1)
	nd := c.nodes[0]
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		s, err := Open(Config{NodeID: "again", Addr: ln.Addr().String(), DataDir: nd.dir, Layer: testutil.TCPLayer{Listener: ln},
			Logger: c.log})
		if err == nil {
			_ = s.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "in use") {
			t.Fatalf("second open: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a second open of a data dir in use hangs")
	}
}
