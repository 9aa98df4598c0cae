package jobs

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"ssi/cluster/api"
	"ssi/raftstore"
	"ssi/raftstore/raftstoretest"
)

// scriptedCluster is fakeCluster whose asks of peers get the answers in
// posts, one each, the last one again once they run out.
type scriptedCluster struct {
	raftstoretest.Local
	posts []error
	asked *int
}

func (f scriptedCluster) Post(context.Context, string, string, []byte, any) error {
	i := min(*f.asked, len(f.posts)-1)
	*f.asked++
	return f.posts[i]
}

func (f scriptedCluster) NodeAddr(name string) (string, error) { return name + ":1", nil }

// placeTable is a table of node1 over a store that knows node1..node3
// (node3 blocks), asking node2 with the answers in posts.
func placeTable(t *testing.T, posts ...error) (*Table, *raftstore.Store, *int) {
	t.Helper()
	log := raftstoretest.Logger(t)
	s := raftstoretest.New(t, raftstoretest.WithNodeID("node1"), raftstoretest.WithLogger(log))
	for _, n := range []string{"node1", "node2", "node3"} {
		raftstoretest.AddNode(t, s, n, n+":1")
	}
	raftstoretest.Apply(t, s, raftstore.AdminSet{Node: "node3", Switch: raftstore.SwitchBlock, Value: true})
	asked := new(int)
	c := scriptedCluster{Local: raftstoretest.Local{S: s}, posts: posts, asked: asked}
	tb := New(Config{Node: "node1", DataDir: t.TempDir()}, c, nil, nil, log)
	tb.cg.root = filepath.Join(t.TempDir(), "no-cgroups")
	return tb, s, asked
}

func TestChooseNode(t *testing.T) {
	tb, s, _ := placeTable(t, nil)
	raftstoretest.AddNode(t, s, "node4", "node4:1")
	raftstoretest.Apply(t, s, raftstore.NodeSetState{Name: "node4", State: raftstore.NodeDown})
	for _, c := range []struct {
		target, want, errText string
		place                 func(*raftstore.Store, string) string
	}{
		{target: "", want: "node1"},
		{target: "node1", want: "node1"},
		{target: "node2", want: "node2"},
		{target: "node3", errText: "node3 refuses new processes (block)"},
		{target: "node4", errText: "node4 is down"},
		{target: "node9", errText: `no node called "node9"`},
		{target: "balance", want: "node1"}, // no policy: here
		{target: "balance", want: "node2", place: func(_ *raftstore.Store, cur string) string {
			if cur != "node1" {
				t.Errorf("the policy was asked from %q", cur)
			}
			return "node2"
		}},
		{target: "balance", errText: "no node is up", place: func(*raftstore.Store, string) string { return "" }},
	} {
		t.Run(c.target+"->"+c.want, func(t *testing.T) {
			tb.cfg.Place = c.place
			got, err := homeOf(tb).chooseNode(c.target)
			if c.errText != "" {
				if err == nil || !strings.Contains(err.Error(), c.errText) {
					t.Fatalf("chooseNode(%q) = %q, %v; want an error with %q", c.target, got, err, c.errText)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("chooseNode(%q) = %q, %v; want %q", c.target, got, err, c.want)
			}
		})
	}
}

// TestAskStart: a refusal, or an ask that never reached the node,
// forgets the listing; an ask whose fate is unknown keeps it and says
// so; a repeat that is answered ends the asking.
func TestAskStart(t *testing.T) {
	refused := errors.New("process 1 is not listed")
	connRefused := fmt.Errorf("%w: dial: %w", api.ErrRetry, syscall.ECONNREFUSED)
	reset := fmt.Errorf("%w: read: %w", api.ErrRetry, syscall.ECONNRESET)
	for _, c := range []struct {
		name       string
		posts      []error
		ok, listed bool
		asks       int // at least
	}{
		{name: "started", posts: []error{nil}, ok: true, listed: true, asks: 1},
		{name: "refused", posts: []error{refused}, asks: 1},
		{name: "never reached", posts: []error{connRefused}, asks: 1},
		{name: "answered on a repeat", posts: []error{reset, nil}, ok: true, listed: true, asks: 2},
		{name: "refused on a repeat", posts: []error{reset, refused}, asks: 2},
		{name: "unknown: reached once, then unreachable", posts: []error{reset, connRefused}, listed: true, asks: 3},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer func(d time.Duration) { askFor = d }(askFor)
			askFor = time.Second
			tb, s, asked := placeTable(t, c.posts...)
			cpid := raftstoretest.AddProc(t, s, raftstore.ProcAdd{Home: "node1", Node: "node2", UID: 1000,
				Argv: []string{"true"}, StartedAt: time.Now()})
			err := homeOf(tb).askStart(context.Background(), "node2", StartRequest{CPID: cpid, UID: 1000})
			if (err == nil) != c.ok {
				t.Fatalf("askStart: %v", err)
			}
			if _, listed := s.Proc(cpid); listed != c.listed {
				t.Fatalf("listed %v after %v, want %v", listed, err, c.listed)
			}
			if !c.ok && c.listed && !strings.Contains(err.Error(), "stays listed") {
				t.Fatalf("an unknown outcome says %q", err)
			}
			if *asked < c.asks {
				t.Fatalf("asked %d times, want at least %d", *asked, c.asks)
			}
		})
	}
}

// TestMayStart: the chosen node starts only what the agreed state lists
// on it, homed on the asking node, as the uid listed, unless it blocks.
func TestMayStart(t *testing.T) {
	_, s, _ := placeTable(t, nil)
	add := func(home, node string, uid int) int {
		return raftstoretest.AddProc(t, s, raftstore.ProcAdd{Home: home, Node: node, UID: uid, StartedAt: time.Now()})
	}
	mine, root, elsewhere, homedOn3 := add("node1", "node2", 1000), add("node1", "node2", 0), add("node1", "node3", 1000),
		add("node3", "node2", 1000)
	for _, c := range []struct {
		name, from, errText string
		cpid, uid           int
	}{
		{"its home asks", "node1", "", mine, 1000},
		{"root of its home", "node1", "", root, 0},
		{"another uid", "node1", "uid 1000's, not uid 0's", mine, 0},
		{"another node asks", "node3", "homed on node1, not on node3", mine, 1000},
		{"listed elsewhere", "node1", "listed on node3", elsewhere, 1000},
		{"not listed", "node1", "not listed", 999, 1000},
		{"homed on the asker, run here", "node3", "", homedOn3, 1000},
		{"a stranger", "", "no certificate", mine, 1000},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := mayStart(s, "node2", c.from, "", StartRequest{CPID: c.cpid, UID: uint32(c.uid)})
			if c.errText == "" && err != nil || c.errText != "" && (err == nil || !strings.Contains(err.Error(), c.errText)) {
				t.Fatalf("mayStart: %v, want %q", err, c.errText)
			}
		})
	}
	raftstoretest.Apply(t, s, raftstore.AdminSet{Node: "node2", Switch: raftstore.SwitchBlock, Value: true})
	if err := mayStart(s, "node2", "node1", "", StartRequest{CPID: mine, UID: 1000}); err == nil || !strings.Contains(err.Error(), "block") {
		t.Fatalf("a blocking node: %v", err)
	}
}

// TestPendingStartsOnce: a cpid is started at most once however often it
// is asked; a failed start may be tried again.
func TestPendingStartsOnce(t *testing.T) {
	var p pending
	if got := p.begin(7); got != askFirst {
		t.Fatalf("first ask: %v", got)
	}
	if got := p.begin(7); got != askUnderWay {
		t.Fatalf("ask while under way: %v", got)
	}
	p.end(7, false)
	if got := p.begin(7); got != askFirst {
		t.Fatalf("ask after a failed start: %v", got)
	}
	p.end(7, true)
	for i := 0; i < 2; i++ {
		if got := p.begin(7); got != askStarted {
			t.Fatalf("repeat %d after the start: %v", i, got)
		}
	}
	p.m[7] = time.Now().Add(-keepStarted - time.Second)
	if got := p.begin(8); got != askFirst || len(p.m) != 1 {
		t.Fatalf("an old start is not forgotten: %v %v", got, p.m)
	}
}

// TestSweepUnstarted: a listing here that nothing here runs, records or
// is starting is forgotten after sweepAfter; the others stay.
func TestSweepUnstarted(t *testing.T) {
	defer func(e, a time.Duration) { sweepEvery, sweepAfter = e, a }(sweepEvery, sweepAfter)
	sweepEvery, sweepAfter = 20*time.Millisecond, 200*time.Millisecond
	tb, s := testTable(t)
	adopted(t, tb)
	add := func(node string) int {
		return raftstoretest.AddProc(t, s, raftstore.ProcAdd{Home: "node1", Node: node, UID: 1000, StartedAt: time.Now()})
	}
	orphan, running, recorded, starting, elsewhere := add("node1"), add("node1"), add("node1"), add("node1"), add("node2")
	c := sleeper(t)
	put(tb, c.job(running))
	tb.rec.write(recorded, c.pid(), true)
	if tb.asked.begin(starting) != askFirst {
		t.Fatal("a fresh ask is not the first")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	t0 := time.Now()
	go SweepUnstarted(ctx, tb)
	deadline := time.Now().Add(10 * time.Second)
	for _, ok := s.Proc(orphan); ok; _, ok = s.Proc(orphan) {
		if time.Now().After(deadline) {
			t.Fatal("the orphan listing is still there")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if gone := time.Since(t0); gone < sweepAfter {
		t.Fatalf("forgotten after %v, before sweepAfter", gone)
	}
	for _, cpid := range []int{running, recorded, starting, elsewhere} {
		if _, ok := s.Proc(cpid); !ok {
			t.Fatalf("process %d was forgotten", cpid)
		}
	}
}

// TestAdoptSparesAskedStarts: a listing here with no record is a process
// that died with the last agent, unless its home is asking for its
// start right now.
func TestAdoptSparesAskedStarts(t *testing.T) {
	tb, s := testTable(t)
	add := func() int {
		return raftstoretest.AddProc(t, s, raftstore.ProcAdd{Home: "node2", Node: "node1", UID: 1000, StartedAt: time.Now()})
	}
	lost, asked := add(), add()
	tb.asked.begin(asked)
	adopted(t, tb)
	if _, ok := s.Proc(lost); ok {
		t.Fatal("a listing no record accounts for is still there")
	}
	if _, ok := s.Proc(asked); !ok {
		t.Fatal("the listing of a start under way was forgotten")
	}
}
