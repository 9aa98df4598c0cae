package jobs

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"ssi/cluster/api"
	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// fakeCluster is a one-node cluster over a real store: applies and
// barriers go to the store, no peer answers.
type fakeCluster struct{ raftstoretest.Local }

func (f fakeCluster) Post(context.Context, string, string, []byte, any) error {
	return fmt.Errorf("%w: no peers in a unit test", api.ErrRetry)
}

func (f fakeCluster) NodeAddr(name string) (string, error) {
	return "", fmt.Errorf("node %q is unknown", name)
}

// testTable is a table of node1 over a real one-node store that also
// knows node2; its jobs get no cgroups.
func testTable(t *testing.T) (*Table, *raftstore.Store) {
	t.Helper()
	log := raftstoretest.Logger(t)
	s := raftstoretest.New(t, raftstoretest.WithNodeID("node1"), raftstoretest.WithLogger(log))
	raftstoretest.AddNode(t, s, "node1", s.Addr())
	raftstoretest.AddNode(t, s, "node2", "127.0.0.1:1")
	tb := New(Config{Node: "node1", DataDir: t.TempDir()}, fakeCluster{raftstoretest.Local{S: s}}, nil, nil, log)
	tb.cg.root = filepath.Join(t.TempDir(), "no-cgroups")
	return tb, s
}

// adopted closes tb's adoption with nothing to adopt (run before adding
// processes to the store, which it would find lost).
func adopted(t *testing.T, tb *Table) {
	t.Helper()
	tb.Adopt(context.Background(), resolver{})
	if err := tb.WaitAdoption(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// child is a process the test started and reaps.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once it has ended
}

// sleeper starts `sleep 60`, killed when the test ends.
func sleeper(t *testing.T) *child {
	t.Helper()
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(c.done)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.done
	})
	// Running sleep, not just exec'd: what the tests measure of it (its
	// resident memory) exists only once it has run.
	deadline := time.Now().Add(10 * time.Second)
	for !sleeping(c.pid()) {
		if time.Now().After(deadline) {
			t.Fatalf("sleep %d never went to sleep", c.pid())
		}
		time.Sleep(time.Millisecond)
	}
	return c
}

// sleeping reports whether pid waits in the kernel (state S in
// /proc/PID/stat).
func sleeping(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	i := bytes.LastIndexByte(b, ')')
	return err == nil && i > 0 && len(b) > i+2 && b[i+2] == 'S'
}

func (c *child) pid() int { return c.cmd.Process.Pid }

func (c *child) ended() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// waitEnded fails the test unless c ends soon, and returns the signal
// that ended it (0 if none).
func (c *child) waitEnded(t *testing.T) syscall.Signal {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("process %d still runs", c.pid())
	}
	if ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return ws.Signal()
	}
	return 0
}

// job is a job of c, in no table.
func (c *child) job(cpid int) *Job { return &Job{cpid: cpid, proc: c.cmd.Process} }

// put adds j to tb's jobs as add does, but unsupervised: the test reaps
// its process.
func put(tb *Table, j *Job) {
	j.onChange = tb.changed.wake
	tb.mu.Lock()
	tb.jobs[j.cpid] = j
	tb.mu.Unlock()
}

// resolver answers Resolve from a table by cpid (runsHere false when
// absent) and notes each call.
type resolver struct {
	runs  map[int]bool
	err   map[int]error
	calls map[int]bool // cpid -> arriving
}

func (r resolver) Resolve(_ context.Context, m raftstore.Migration, arriving bool) (bool, error) {
	if r.calls != nil {
		r.calls[m.CPID] = arriving
	}
	return r.runs[m.CPID], r.err[m.CPID]
}
