package jobs

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"ssi/cluster/api"
	"ssi/fs"
	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// A job moves once at a time, and a job that runs elsewhere now never
// moves again.
func TestBeginMoveFinishLive(t *testing.T) {
	c := sleeper(t)
	j := c.job(7)
	if !j.Live() {
		t.Fatal("a new job is not live")
	}
	end, err := j.BeginMove()
	if err != nil {
		t.Fatal(err)
	}
	if j.Live() {
		t.Fatal("a moving job is live")
	}
	if _, err := j.BeginMove(); !errors.Is(err, fs.ErrBusy) {
		t.Fatalf("a second move began: %v", err)
	}
	end()
	if !j.Live() {
		t.Fatal("a failed move left the job not live")
	}
	end, err = j.BeginMove()
	if err != nil {
		t.Fatal(err)
	}
	j.Finish()
	end()
	if j.Live() {
		t.Fatal("a job that runs elsewhere is live")
	}
	if sig := c.waitEnded(t); sig != syscall.SIGKILL {
		t.Fatalf("the copy here ended by %v, want SIGKILL", sig)
	}
	if _, err := j.BeginMove(); !errors.Is(err, fs.ErrBusy) {
		t.Fatalf("a move of a finished job began: %v", err)
	}
}

// kill never signals a frozen copy: it waits for the move to end and
// signals the process where it then runs.
func TestKillWaitsForAMove(t *testing.T) {
	tb, _, c, j := tableWithJob(t, 7)
	cpid := j.CPID()
	end, err := j.BeginMove()
	if err != nil {
		t.Fatal(err)
	}
	req := api.KillRequest{CPID: cpid, Signal: int(syscall.SIGTERM)}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := tb.kill(ctx, req); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("kill of a moving job: %v", err)
	}
	if c.ended() {
		t.Fatal("a moving job was signalled")
	}
	done := make(chan error, 1)
	go func() { done <- tb.kill(context.Background(), req) }()
	time.Sleep(50 * time.Millisecond) // let kill wait, so that end wakes it
	end()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("kill did not notice the end of the move")
	}
	if sig := c.waitEnded(t); sig != syscall.SIGTERM {
		t.Fatalf("ended by %v, want SIGTERM", sig)
	}
}

// The stopped copy of a process that moved away is never signalled.
func TestKillSkipsAFinishedJob(t *testing.T) {
	tb, _, c, j := tableWithJob(t, 8)
	cpid := j.CPID()
	j.Finish()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := tb.kill(ctx, api.KillRequest{CPID: cpid, Signal: int(syscall.SIGTERM)}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("kill of a finished job: %v", err)
	}
	if sig := c.waitEnded(t); sig != syscall.SIGKILL {
		t.Fatalf("ended by %v, want Finish's SIGKILL", sig)
	}
}

// kill refuses what it must not do before it looks for the process.
func TestKillRefuses(t *testing.T) {
	tb, s, c, j := tableWithJob(t, 9)
	cpid := j.CPID()
	elsewhere := raftstoretest.AddProc(t, s, raftstore.ProcAdd{CPID: 10, Home: "node2", StartedAt: time.Now()})
	for _, tc := range []struct {
		name string
		req  api.KillRequest
		want error
	}{
		{"bad signal", api.KillRequest{CPID: cpid, Signal: 0}, fs.ErrBadValue},
		{"no such process", api.KillRequest{CPID: 999, Signal: 15}, fs.ErrNoProcess},
		{"another user's", api.KillRequest{CPID: cpid, Signal: 15, UID: 1001}, fs.ErrPermission},
		{"forwarded, not here", api.KillRequest{CPID: elsewhere, Signal: 15, Forwarded: true}, fs.ErrBusy},
		{"its node unreachable", api.KillRequest{CPID: elsewhere, Signal: 15}, fs.ErrNodeDown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tb.kill(context.Background(), tc.req); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if c.ended() {
		t.Fatal("a refused kill signalled the process")
	}
}

// tableWithJob is a table, done adopting, whose one job (a child of the
// test, of uid 1000) is placed here as cpid by the agreed state.
func tableWithJob(t *testing.T, cpid int) (*Table, *raftstore.Store, *child, *Job) {
	tb, s := testTable(t)
	adopted(t, tb)
	c := sleeper(t)
	cpid = raftstoretest.AddProc(t, s, raftstore.ProcAdd{CPID: cpid, Home: "node1", UID: 1000, StartedAt: time.Now()})
	j := c.job(cpid)
	put(tb, j)
	return tb, s, c, j
}
