package migration_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"ssi/cluster/migration"
	"ssi/cluster/wire"
	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// The harness: two agents' Movers, node1 (where the process runs) and
// node2, agreeing through one real raftstore (raftstoretest), their
// migration streams in-process pipes. After each case the test counts
// the copies of the process that run: exactly one, or none and the
// process reported lost, never two.

const (
	mountpoint = "/cluster"
	owner      = 1000 // the process's uid
	// waitFor bounds every wait: a hang fails the test instead of
	// stalling it.
	waitFor = 20 * time.Second
)

type harness struct {
	t     *testing.T
	store *raftstore.Store
	log   *slog.Logger
	wg    sync.WaitGroup // the streams' and page servers' goroutines
	// settleWait is every agent's Config.SettleWait (0: the agent's).
	settleWait time.Duration

	mu     sync.Mutex
	nodes  map[string]*node // each node's agent now
	all    []*node          // every agent, the dead ones too
	copies []*copyOf        // every copy of the process, in the order they began
}

// node is one agent: its Mover and the fakes it reaches the world by.
type node struct {
	name    string
	h       *harness
	mover   *migration.Mover
	criu    *fakeCRIU
	host    *fakeHost
	cluster *fakeCluster
	jobs    *fakeJobs
	hooks   *migration.Hooks

	// Set before a move: what this node's migration port sees.
	onStream  func(*wire.StreamHeader) // as a stream's header arrives
	peerName  string                   // the certificate's name, if not the dialer's
	at        func(wire.Frame) bool    // each frame it reads: true cuts the stream
	balanceTo string                   // where "balance" goes

	mu      sync.Mutex
	conns   []net.Conn
	crashed bool
}

func newHarness(t *testing.T) *harness { return newHarnessSettling(t, 0) }

// newHarnessSettling starts agents whose settles give up after
// settleWait (0: the agent's wait).
func newHarnessSettling(t *testing.T, settleWait time.Duration) *harness {
	s := raftstoretest.New(t)
	h := &harness{t: t, store: s, log: raftstoretest.Logger(t), nodes: map[string]*node{}, settleWait: settleWait}
	t.Cleanup(h.cleanup)
	for _, name := range []string{"node1", "node2"} {
		raftstoretest.AddNode(t, s, name, name+":7946")
		h.nodes[name] = h.newNode(name)
	}
	return h
}

func (h *harness) newNode(name string) *node {
	n := &node{name: name, h: h, host: &fakeHost{h: h}, jobs: newFakeJobs(h), hooks: &migration.Hooks{}}
	n.criu = &fakeCRIU{h: h, node: name}
	n.cluster = &fakeCluster{h: h, n: n, held: make(chan struct{}, 1)}
	place := func(*raftstore.Store, string) string { return n.balanceTo }
	cfg := migration.Config{Node: name, WorkDir: h.t.TempDir(), Mountpoint: mountpoint, SettleWait: h.settleWait}
	n.mover = migration.New(cfg, n.criu, n.host, n.cluster, n.jobs, place, n.hooks, h.log.With("node", name))
	h.mu.Lock()
	defer h.mu.Unlock()
	h.all = append(h.all, n)
	return n
}

func (h *harness) node(name string) *node {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.nodes[name]
}

// restart gives node name a new agent, as after its old one died: new
// fakes, the same processes and agreed state.
func (h *harness) restart(name string) *node {
	n := h.newNode(name)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nodes[name] = n
	return n
}

// cleanup unblocks whatever still waits, waits for the goroutines the
// harness started, then kills and reaps every copy.
func (h *harness) cleanup() {
	h.mu.Lock()
	nodes := slices.Clone(h.all)
	h.mu.Unlock()
	for _, n := range nodes {
		n.cluster.releaseEnds()
		n.closeStreams()
	}
	if !streamsEnded(h) {
		h.t.Errorf("the harness's goroutines did not end")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, c := range h.copies {
		_ = c.cmd.Process.Kill()
		_ = c.cmd.Wait()
	}
}

// dial opens a stream from node from to node to's migration port.
func (h *harness) dial(from *node, to string) (net.Conn, error) {
	dst := h.node(to)
	if dst == nil {
		return nil, fmt.Errorf("no node %s", to)
	}
	a, b := net.Pipe()
	src, srv := &tap{Conn: a, at: from.at}, &tap{Conn: b, at: dst.at}
	from.track(src)
	dst.track(srv)
	h.wg.Go(func() { dst.serve(srv, from.name) })
	return src, nil
}

// serve is the node's migration port for one stream, as the agent's:
// the header first, then a move goes to the Mover.
func (n *node) serve(conn net.Conn, dialer string) {
	defer conn.Close()
	c := wire.NewConn(conn)
	var hdr wire.StreamHeader
	if err := c.Expect(wire.FrHeader, &hdr); err != nil || hdr.Kind != wire.KindMove {
		return
	}
	if n.onStream != nil {
		n.onStream(&hdr)
	}
	peer := dialer
	if n.peerName != "" {
		peer = n.peerName
	}
	n.mover.Receive(conn, c, hdr, peer)
}

func (n *node) track(c net.Conn) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.conns = append(n.conns, c)
}

func (n *node) closeStreams() {
	n.mu.Lock()
	conns := slices.Clone(n.conns)
	n.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// crash ends this node's agent where it stands: its streams close and
// nothing more runs in it. Called on one of its goroutines, it ends
// that goroutine; its processes stay as they are.
func (n *node) crash() {
	n.mu.Lock()
	n.crashed = true
	n.mu.Unlock()
	n.closeStreams()
	runtime.Goexit()
}

func (n *node) hasCrashed() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.crashed
}

// crashAt makes the node's agent die at an arrival's step.
func (n *node) crashAt(at migration.CrashPoint) {
	n.hooks.CrashAt = at
	n.hooks.Crash = func(migration.CrashPoint) { n.crash() }
}

// copyOf is one copy of the process: the original, or one restored.
type copyOf struct {
	node   string
	cmd    *exec.Cmd
	killed bool // sent SIGKILL
	dead   bool // once seen dead: its pid may be someone else's later
}

// signal sends sig to pid, a copy of the process. A copy sent SIGKILL is
// dead from then on: it never runs its program again, though /proc may
// show it running while the kernel wakes it to die.
func (h *harness) signal(pid int, sig syscall.Signal) {
	if sig == syscall.SIGKILL {
		h.mu.Lock()
		for _, c := range h.copies {
			if c.cmd.Process.Pid == pid && !c.dead {
				c.killed = true
			}
		}
		h.mu.Unlock()
	}
	_ = syscall.Kill(pid, sig)
}

// spawn starts a copy of the process on node; a stopped one stops
// itself before it runs the program.
func (h *harness) spawn(node string, stopped bool) (*copyOf, error) {
	cmd := exec.Command("sleep", "300")
	if stopped {
		cmd = exec.Command("sh", "-c", "kill -STOP $$; exec sleep 300")
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	c := &copyOf{node: node, cmd: cmd}
	h.mu.Lock()
	h.copies = append(h.copies, c)
	h.mu.Unlock()
	if stopped {
		if err := waitState(cmd.Process.Pid, isStopped); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// startJob starts the process on node1, homed at home, as a job of
// node1's agent owned by owner, and returns its cpid.
func (h *harness) startJob(home string) int {
	h.t.Helper()
	cpid := raftstoretest.AddProc(h.t, h.store, raftstore.ProcAdd{Home: home, Node: "node1", UID: owner,
		Argv: []string{"sleep", "300"}, StartedAt: time.Now()})
	c, err := h.spawn("node1", false)
	if err != nil {
		h.t.Fatal(err)
	}
	n1 := h.node("node1")
	n1.jobs.add(cpid, c.cmd.Process.Pid)
	n1.jobs.Record(cpid, c.cmd.Process.Pid, false)
	return cpid
}

// outcome is how a Migrate call ended: its error, or the agent died in
// it.
type outcome struct {
	err     error
	crashed bool
}

// migrate asks node on to move cpid, as a write to `where` would.
func (h *harness) migrate(on string, cpid int, target string, uid uint32) <-chan outcome {
	n := h.node(on)
	ch := make(chan outcome, 1)
	go func() {
		res := outcome{crashed: true}
		defer func() { ch <- res }()
		res.err = n.mover.Migrate(context.Background(), cpid, target, uid)
		res.crashed = false
	}()
	return ch
}

func (h *harness) await(ch <-chan outcome) outcome {
	h.t.Helper()
	select {
	case res := <-ch:
		return res
	case <-time.After(waitFor):
		h.t.Fatal("the move did not end")
		return outcome{}
	}
}

// signalled waits for what ch tells, n times.
func (h *harness) signalled(ch <-chan struct{}, what string, n int) {
	h.t.Helper()
	for range n {
		select {
		case <-ch:
		case <-time.After(waitFor):
			h.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// quiesce waits for every stream to end.
func (h *harness) quiesce() {
	h.t.Helper()
	if !streamsEnded(h) {
		h.t.Fatal("the streams did not end")
	}
}

// streamsEnded waits for the goroutines of the streams and page
// servers, and says whether they ended in time.
func streamsEnded(h *harness) bool {
	done := make(chan struct{})
	go func() { h.wg.Wait(); close(done) }()
	select {
	case <-done:
		return true
	case <-time.After(waitFor):
		return false
	}
}

// awaitStore waits for cond to hold of the agreed state, woken by its
// changes.
func (h *harness) awaitStore(what string, cond func(*raftstore.Store) bool) {
	h.t.Helper()
	deadline := time.After(waitFor)
	for {
		changed := h.store.Changed()
		if cond(h.store) {
			return
		}
		select {
		case <-changed:
		case <-deadline:
			h.t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// adopt plays the next agent of next's node taking over the copy its
// previous agent recorded, as jobs.Table.Adopt does: a move still open
// that the node was part of is resolved first (Mover.Resolve); then the
// copy runs here, or is killed. It reports whether it runs here.
func (h *harness) adopt(next *node, rec record, cpid int) bool {
	h.t.Helper()
	p, here := h.store.Proc(cpid)
	if m, moving := h.store.Migration(cpid); here && moving &&
		((rec.arriving && m.To == next.name) || m.From == next.name) {
		ctx, cancel := context.WithTimeout(context.Background(), waitFor)
		defer cancel()
		var err error
		if here, err = next.mover.Resolve(ctx, m, rec.arriving && m.To == next.name); err != nil {
			h.t.Fatalf("resolve on %s: %v", next.name, err)
		}
	} else if here && p.Node != next.name {
		here = false
	}
	sig := syscall.SIGKILL
	if here {
		sig = syscall.SIGCONT
	}
	h.signal(rec.pid, sig)
	return here
}

// The copies, as /proc tells.

// state is what a copy does: "runs", "stopped" or "dead".
func (c *copyOf) state() string {
	if c.dead || c.killed {
		return "dead"
	}
	// Through the process's pidfd: a reaped copy's pid may be reused.
	if err := c.cmd.Process.Signal(syscall.Signal(0)); err != nil {
		c.dead = true
		return "dead"
	}
	switch st := procState(c.cmd.Process.Pid); {
	case isStopped(st):
		return "stopped"
	case st == 'Z' || st == 'X' || st == 0:
		c.dead = true
		return "dead"
	}
	return "runs"
}

// copiesState says what each copy does, in the order they began:
// "node1:stopped node2:runs".
func copiesState(h *harness) string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var s []string
	for _, c := range h.copies {
		s = append(s, c.node+":"+c.state())
	}
	return strings.Join(s, " ")
}

// copiesNow checks what the copies do at this moment: while a move's
// outcome waits, nothing may change.
func (h *harness) copiesNow(want string) {
	h.t.Helper()
	if got := copiesState(h); got != want {
		h.t.Fatalf("the copies: %s, want %s", got, want)
	}
}

// expectCopies waits for the copies to be as want says, failing at once
// if two ever run.
func (h *harness) expectCopies(want string) {
	h.t.Helper()
	h.poll(want, func(got string) bool { return got == want })
}

// poll waits for ok to hold of the copies' state, asserting the one
// invariant at each look: never two running.
func (h *harness) poll(what string, ok func(state string) bool) {
	h.t.Helper()
	deadline := time.Now().Add(waitFor)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		got := copiesState(h)
		if strings.Count(got, ":runs") > 1 {
			h.t.Fatalf("two copies run: %s", got)
		}
		if ok(got) {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s; the copies: %s", what, got)
		}
		<-tick.C
	}
}

// settled waits for the move's end with the process running on node
// alone ("": on none), every other copy dead (a stopped one could still
// be resumed), and checks that the agreed state says the same: no
// migration open, the process on node, or gone.
func (h *harness) settled(cpid int, node string) {
	h.t.Helper()
	h.quiesce()
	h.poll("the process to run on "+node+" alone", func(got string) bool {
		want := 0
		if node != "" {
			want = 1
		}
		return strings.Count(got, ":runs") == want && !strings.Contains(got, ":stopped") &&
			(node == "" || strings.Contains(got, node+":runs"))
	})
	if m, busy := h.store.Migration(cpid); busy {
		h.t.Fatalf("migration %s of %d is still open", m.ID, cpid)
	}
	p, ok := h.store.Proc(cpid)
	switch {
	case node == "" && ok:
		h.t.Fatalf("no copy runs, but the cluster places %d on %s", cpid, p.Node)
	case node != "" && (!ok || p.Node != node || p.State != raftstore.ProcRunning):
		h.t.Fatalf("the process runs on %s; the cluster says %+v (%v)", node, p, ok)
	}
}

// moved checks the one recorded move of cpid.
func (h *harness) moved(cpid int, committed bool, why string) raftstore.MoveRecord {
	h.t.Helper()
	var recs []raftstore.MoveRecord
	for _, r := range h.store.Moves() {
		if r.CPID == cpid {
			recs = append(recs, r)
		}
	}
	if len(recs) != 1 {
		h.t.Fatalf("%d moves of %d recorded, want 1: %+v", len(recs), cpid, recs)
	}
	r := recs[0]
	if r.Committed != committed || r.From != "node1" || r.To != "node2" || !strings.Contains(r.Reason, why) {
		h.t.Fatalf("move %+v; want node1 -> node2, committed %v, reason with %q", r, committed, why)
	}
	return r
}

// noMove checks that no move of cpid was recorded.
func (h *harness) noMove(cpid int) {
	h.t.Helper()
	for _, r := range h.store.Moves() {
		if r.CPID == cpid {
			h.t.Fatalf("a move was recorded: %+v", r)
		}
	}
}

// died waits for a Migrate whose agent must die in it.
func (h *harness) died(ch <-chan outcome) {
	h.t.Helper()
	if res := h.await(ch); !res.crashed {
		h.t.Fatalf("the source's agent lived on: %v", res.err)
	}
}

// wantFailure checks that a move failed with want, saying why.
func wantFailure(t *testing.T, got outcome, want error, why string) {
	t.Helper()
	wantErr(t, got, want)
	if got.err != nil && !strings.Contains(got.err.Error(), why) {
		t.Errorf("Migrate: %v, want it to say %q", got.err, why)
	}
}

func wantErr(t *testing.T, got outcome, want error) {
	t.Helper()
	switch {
	case got.crashed:
		t.Fatal("the source's agent died in Migrate")
	case want == nil && got.err != nil:
		t.Fatalf("Migrate: %v", got.err)
	case want != nil && !errors.Is(got.err, want):
		t.Fatalf("Migrate: %v, want %v", got.err, want)
	}
}

// procState is the state letter of pid in /proc (0 when it is gone).
func procState(pid int) byte {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) {
		return 0
	}
	return b[i+2]
}

func isStopped(st byte) bool { return st == 'T' || st == 't' }

// waitState waits for pid's state to satisfy ok, as CRIU waits for a
// tree to freeze.
func waitState(pid int, ok func(byte) bool) error {
	deadline := time.Now().Add(waitFor)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for !ok(procState(pid)) {
		if time.Now().After(deadline) {
			return fmt.Errorf("process %d is in state %q", pid, procState(pid))
		}
		<-tick.C
	}
	return nil
}

// freeze stops pid, as CRIU's dump freezes the tree.
func freeze(pid int) error {
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return err
	}
	return waitState(pid, isStopped)
}
