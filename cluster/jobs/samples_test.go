package jobs

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"ssi/cluster/api"
	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// A sample says what a job holds that keeps it here, else why its last
// move failed.
func TestSamplesCantMove(t *testing.T) {
	tb, s := testTable(t)
	c := sleeper(t)
	cpid := raftstoretest.AddProc(t, s, raftstore.ProcAdd{CPID: 20, Home: "node1", StartedAt: time.Now()})
	put(tb, c.job(cpid))
	tb.SetCantMove(cpid, "the destination refused it")
	ps := tb.Samples(time.Now())[cpid]
	if ps.Pid != c.pid() || ps.RSS == 0 || ps.CantMove != "the destination refused it" {
		t.Fatalf("sample %+v", ps)
	}
	lock := true
	raftstoretest.Apply(t, s, raftstore.ProcUpdate{CPID: cpid, Lock: &lock})
	if ps := tb.Samples(time.Now())[cpid]; ps.CantMove != "locked (write 0 to lock to let it move)" {
		t.Fatalf("locked: %+v", ps)
	}
	lock = false
	raftstoretest.Apply(t, s, raftstore.ProcUpdate{CPID: cpid, Lock: &lock})
	tb.ClearFailure(cpid)
	if ps := tb.Samples(time.Now())[cpid]; ps.CantMove != "" {
		t.Fatalf("cleared: %+v", ps)
	}
}

// ssi wait answers when the agreed state forgets the process, with the
// code it ended with.
func TestHandleWait(t *testing.T) {
	tb, s := testTable(t)
	cpid := raftstoretest.AddProc(t, s, raftstore.ProcAdd{CPID: 30, Home: "node1", StartedAt: time.Now()})
	wait := func(cpid string) *httptest.ResponseRecorder {
		rec := httptest.NewRecorder()
		req := httptest.NewRequestWithContext(context.Background(), http.MethodGet, "/v1/wait?cpid="+cpid, nil)
		tb.HandleWait(rec, req)
		return rec
	}
	done := make(chan *httptest.ResponseRecorder, 1)
	go func() { done <- wait("30") }()
	code := 3
	raftstoretest.Apply(t, s, raftstore.ProcRemove{CPID: cpid, ExitCode: &code, EndedAt: time.Now()})
	var rec *httptest.ResponseRecorder
	select {
	case rec = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("wait did not notice the end")
	}
	var res api.WaitResult
	if rec.Code != http.StatusOK || json.Unmarshal(rec.Body.Bytes(), &res) != nil || res.Code == nil || *res.Code != 3 {
		t.Fatalf("answer %d %s", rec.Code, rec.Body)
	}
	if rec := wait("31"); rec.Code != http.StatusConflict {
		t.Fatalf("wait for no process: %d %s", rec.Code, rec.Body)
	}
}
