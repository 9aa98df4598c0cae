package jobs

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"ssi/cluster/api"
	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// serveRuns serves tb's /v1/run on a unix socket, as the agent does, and
// returns a client of it.
func serveRuns(t *testing.T, tb *Table) *api.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/run", tb.HandleRun)
	srv := &http.Server{Handler: mux, ConnContext: api.ConnContext, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close() })
	return api.NewClient(sock)
}

// An argv and environment over MaxArgEnv are refused with E2BIG, before
// anything starts or is stored; at the limit they pass that check.
func TestRunOverMaxArgEnvIsE2BIG(t *testing.T) {
	tb, s := testTable(t)
	c := serveRuns(t, tb)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	big := strings.Repeat("x", 50<<10)
	for name, req := range map[string]api.RunRequest{
		"argv":           {Argv: []string{"echo", big, big, big}},
		"argv and env":   {Argv: []string{"echo", big, big}, Env: []string{"A=" + big}},
		"over the wire":  {Argv: []string{"echo", strings.Repeat("\x01", 2*MaxArgEnv)}},
		"one byte over":  {Argv: []string{"echo", strings.Repeat("x", MaxArgEnv-len("echo")-2+1)}},
		"env alone over": {Argv: []string{"true"}, Env: []string{strings.Repeat("y", MaxArgEnv)}},
	} {
		_, err := c.Run(ctx, req)
		if err == nil || !strings.Contains(err.Error(), "E2BIG") {
			t.Errorf("%s: run answered %v, want E2BIG", name, err)
		}
	}
	if ps := s.Procs(); len(ps) != 0 {
		t.Fatalf("refused runs left processes in the agreed state: %+v", ps)
	}
	if err := tooBig([]string{"echo", strings.Repeat("x", MaxArgEnv-len("echo")-2)}, nil); err != nil {
		t.Fatalf("exactly MaxArgEnv: %v", err)
	}
}

// The per-user limit counts the uid's processes in the agreed state, on
// every node; root and a limit of 0 are not limited.
func TestAdmitPerUserLimit(t *testing.T) {
	tb, s := testTable(t)
	tb.cfg.MaxPerUser = 2
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admitted := func(uid uint32) error {
		release, err := tb.admit(ctx, uid)
		if err == nil {
			release()
			release() // twice is harmless
		}
		return err
	}
	raftstoretest.AddProc(t, s, raftstore.ProcAdd{Home: "node1", UID: 1000, Argv: []string{"a"}, StartedAt: time.Now()})
	if err := admitted(1000); err != nil {
		t.Fatalf("the second process of uid 1000: %v", err)
	}
	// The second one runs on another node: it counts the same.
	raftstoretest.AddProc(t, s, raftstore.ProcAdd{Home: "node2", UID: 1000, Argv: []string{"b"}, StartedAt: time.Now()})
	raftstoretest.AddProc(t, s, raftstore.ProcAdd{Home: "node1", UID: 1001, Argv: []string{"c"}, StartedAt: time.Now()})
	for i := 0; i < 3; i++ {
		raftstoretest.AddProc(t, s, raftstore.ProcAdd{Home: "node1", UID: 0, Argv: []string{"root"}, StartedAt: time.Now()})
	}
	err := admitted(1000)
	var rf *refusal
	if !errors.As(err, &rf) || rf.errno != "EAGAIN" || rf.status != http.StatusTooManyRequests ||
		!strings.Contains(err.Error(), "jobs.max_per_user") {
		t.Fatalf("the third process of uid 1000: %v, want EAGAIN naming jobs.max_per_user", err)
	}
	for _, uid := range []uint32{1001, 0} {
		if err := admitted(uid); err != nil {
			t.Errorf("uid %d: %v", uid, err)
		}
	}
	tb.cfg.MaxPerUser = 0
	if err := admitted(1000); err != nil {
		t.Errorf("no limit: %v", err)
	}
}

// Two starts of one uid on a node wait for each other: the second
// counts what the first registered.
func TestAdmitSerialisesAUser(t *testing.T) {
	tb, _ := testTable(t)
	tb.cfg.MaxPerUser = 5
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	release, err := tb.admit(ctx, 1000)
	if err != nil {
		t.Fatal(err)
	}
	second := make(chan error, 1)
	go func() {
		r, err := tb.admit(ctx, 1000)
		if err == nil {
			r()
		}
		second <- err
	}()
	other, err := tb.admit(ctx, 1001)
	if err != nil {
		t.Fatalf("another uid waits for uid 1000: %v", err)
	}
	other()
	select {
	case err := <-second:
		t.Fatalf("the second start of uid 1000 did not wait for the first: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	release()
	select {
	case err := <-second:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the second start of uid 1000 never went on")
	}
}
