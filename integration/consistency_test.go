package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/rand"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestConsistency is a small linearizability checker in the spirit of
// Jepsen's register and append workloads, on one 3-node lab. The test is
// the only writer, one operation at a time, so the state every read must
// reflect is known exactly: a read that starts after a write returned and
// does not reflect it is stale. Home files are registers (write,
// overwrite-shorter, rename-over, unlink) and append logs; processes are
// run, moved back-to-back from random nodes, signalled and waited for,
// each followed at once by reads on the other nodes. Three phases: calm,
// the Raft leader killed mid-run, a follower partitioned and healed
// mid-run. SSI_ITEST_SEED replays a run.
func TestConsistency(t *testing.T) {
	c := newClusterLab(t, "itlin", "10.213.40.0/24", "--nodes", "3")
	c.agree("node1", three, 10*time.Second)
	seed := time.Now().UnixNano()
	if s, err := strconv.ParseInt(os.Getenv("SSI_ITEST_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (SSI_ITEST_SEED replays it)", seed)
	c.must("exec", "node1", "--", "sh", "-c", "mkdir -p "+linDir+"/u && chown 1000:1000 "+linDir+"/u")
	k := &checker{c: c.within(time.Minute), rng: rand.New(rand.NewSource(seed)), files: map[string]*register{}}
	var total counts
	for _, p := range []phase{
		{name: "calm"},
		{name: "leader killed mid-run", disrupt: (*checker).killLeader, restore: (*checker).startKilled},
		{name: "partition healed mid-run", disrupt: (*checker).partitionFollower, restore: (*checker).healPartitioned},
	} {
		t.Run(p.name, func(t *testing.T) {
			k.begin(t, p.name)
			defer k.report()
			k.runPhase(p)
			// Every path on every node, with time to converge: what
			// never shows is a lost acknowledged write.
			k.verify(k.live, k.paths(), "at the end of the phase")
		})
		total.add(k.n)
	}
	t.Logf("total: %s", total)
	if total.reads < 300 || total.moves < 30 {
		t.Errorf("the workload was too small: %d reads (want >= 300), %d back-to-back moves (want >= 30)", total.reads, total.moves)
	}
	if 3*total.leaderWrites < total.homeOps {
		t.Errorf("the leader wrote in %d of %d home rounds, want at least a third", total.leaderWrites, total.homeOps)
	}
}

// The workload's size: per phase, homeOps file operations and
// procRounds processes, each moved movesPerRound times back-to-back.
const (
	homeOps       = 36
	procRounds    = 4
	movesPerRound = 4
	maxFile       = 1 << 20
	linDir        = "/cluster/home/lin"
)

// userExec runs the rest of a command line as uid 1000 with a plain PATH.
var userExec = []string{"setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups", "env", "PATH=/usr/bin:/bin"}

// retryable says whether an error is what a node says during an
// election or without quorum: the operation may be retried then.
func retryable(stderr string) bool {
	for _, s := range []string{"Read-only file system", "no quorum", "no leader", "leadership lost"} {
		if strings.Contains(stderr, s) {
			return true
		}
	}
	return false
}

// counts are a phase's (or the run's) tallies.
type counts struct {
	reads, stale, lost           int
	homeOps, leaderWrites, users int
	procs, moves, failedMoves    int
	procErrs, writeErrs, retried int
}

func (n *counts) add(o counts) {
	n.reads += o.reads
	n.stale += o.stale
	n.lost += o.lost
	n.homeOps += o.homeOps
	n.leaderWrites += o.leaderWrites
	n.users += o.users
	n.procs += o.procs
	n.moves += o.moves
	n.failedMoves += o.failedMoves
	n.procErrs += o.procErrs
	n.writeErrs += o.writeErrs
	n.retried += o.retried
}

func (n counts) String() string {
	return fmt.Sprintf("%d reads, %d stale, %d lost acknowledged writes, %d back-to-back moves, %d failed moves; "+
		"%d home ops (%d by the leader, %d as uid 1000), %d failed writes, %d processes, %d failed run/kill/wait, %d retried in an election",
		n.reads, n.stale, n.lost, n.moves, n.failedMoves, n.homeOps, n.leaderWrites, n.users, n.writeErrs,
		n.procs, n.procErrs, n.retried)
}

// register is the model of one home path: what it holds now (nil:
// absent) and every state it ever had, to tell a stale read from garbage.
type register struct {
	data []byte
	seen map[string]bool
}

// state renders what a read of a path prints: "absent" or "SIZE SHA256".
func state(data []byte) string {
	if data == nil {
		return "absent"
	}
	sum := sha256.Sum256(data)
	return fmt.Sprintf("%d %s", len(data), hex.EncodeToString(sum[:]))
}

// phase is one run of the workload; disrupt runs a third of the way in,
// restore two thirds of the way.
type phase struct {
	name             string
	disrupt, restore func(*checker)
}

// checker runs the workload and checks every read against the model.
type checker struct {
	t     *testing.T // the phase's subtest
	c     *clusterLab
	rng   *rand.Rand
	phase string
	// live are the nodes that must serve linearizable reads now: up and
	// on the majority's side; every operation is issued on one of them.
	live     []string
	files    map[string]*register
	retryOK  bool   // operations may be retried on election errors
	disabled string // the node killed or partitioned, if any
	n        counts
	examples []string
	noted    map[string]int // examples of each kind so far
}

func (k *checker) begin(t *testing.T, name string) {
	k.t, k.c, k.phase = t, k.c.with(t), name
	k.n, k.examples, k.noted, k.retryOK = counts{}, nil, map[string]int{}, false
	// A failed phase may have left a node down or cut off.
	for _, n := range three {
		k.c.must("heal", n)
		k.c.must("start", n)
	}
	k.c.agree("node1", three, 30*time.Second)
	k.live = slices.Clone(three)
}

// report logs the phase's counts in one line and its examples, and
// fails the phase unless nothing was stale, lost or failed; it runs
// even when the phase stopped early.
func (k *checker) report() {
	k.t.Logf("%s: %s", k.phase, k.n)
	for _, e := range k.examples {
		k.t.Log("  " + e)
	}
	if k.n.stale > 0 || k.n.lost > 0 || k.n.failedMoves > 0 || k.n.procErrs > 0 || k.n.writeErrs > 0 {
		k.t.Errorf("%s: want 0 stale, 0 lost, 0 failed: %s", k.phase, k.n)
	}
}

// note records an example of a violation of one kind: the first few
// of each kind in a phase, so that rare kinds are not crowded out.
func (k *checker) note(kind, format string, a ...any) {
	if k.noted[kind] < 4 {
		k.examples = append(k.examples, kind+": "+fmt.Sprintf(format, a...))
	}
	k.noted[kind]++
}

func (k *checker) runPhase(p phase) {
	steps := homeOps + procRounds
	every := steps / procRounds
	for i := 0; i < steps; i++ {
		if i == steps/3 && p.disrupt != nil {
			p.disrupt(k)
		}
		if i == 2*steps/3 && p.restore != nil {
			p.restore(k)
		}
		if i%every == every-1 {
			procWork{k}.procRound()
		} else {
			homeWork{k}.homeRound()
		}
	}
}

func (k *checker) pick(from []string) string { return from[k.rng.Intn(len(from))] }

func without(from []string, not ...string) []string {
	var out []string
	for _, n := range from {
		if !slices.Contains(not, n) {
			out = append(out, n)
		}
	}
	return out
}

// exec runs argv inside node, as uid 1000 if user, with stdin.
func (k *checker) exec(node string, user bool, stdin []byte, argv ...string) result {
	k.t.Helper()
	a := []string{"exec", node, "--"}
	if user {
		a = append(a, userExec...)
	}
	r, err := run(k.c.timeout(), k.c.env, stdin, ssiBin, k.c.args(append(a, argv...)...)...)
	if err != nil {
		k.t.Fatalf("%s: %v", k.phase, err)
	}
	return r
}

// onEach runs argv on every node at once (reads that all start after
// the write returned) and returns the results by node.
func (k *checker) onEach(nodes []string, argv ...string) map[string]result {
	k.t.Helper()
	res := make([]result, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = run(k.c.timeout(), k.c.env, nil, ssiBin, k.c.args(append([]string{"exec", n, "--"}, argv...)...)...)
		}()
	}
	wg.Wait()
	out := map[string]result{}
	for i, n := range nodes {
		if errs[i] != nil {
			k.t.Fatalf("%s: %v", k.phase, errs[i])
		}
		out[n] = res[i]
	}
	return out
}

// leader is the node that leads now by its own account, or "" if none
// of the live nodes does.
func (k *checker) leader() string {
	k.t.Helper()
	var s statusInfo
	if !k.c.on(k.pick(k.live), &s, "status", "--json") || !slices.Contains(k.live, s.Leader) {
		return ""
	}
	var own statusInfo
	if !k.c.on(s.Leader, &own, "status", "--json") || own.Leader != s.Leader {
		return ""
	}
	return s.Leader
}

func (k *checker) killLeader() {
	l := ""
	eventually(k.t, "a leader to kill", 20*time.Second, func() bool { l = k.leader(); return l != "" })
	k.c.must("kill", l)
	k.disabled, k.live, k.retryOK = l, without(three, l), true
	k.t.Logf("%s: killed the leader %s; going on with %v", k.phase, l, k.live)
}

// startKilled brings the killed node back; it takes part again once the
// cluster lists it up (before that, a move to it is rightly refused with
// EHOSTUNREACH).
func (k *checker) startKilled() {
	k.c.must("start", k.disabled)
	k.c.agree(k.live[0], three, 30*time.Second)
	k.t.Logf("%s: started %s again", k.phase, k.disabled)
	k.disabled, k.live = "", slices.Clone(three)
}

func (k *checker) partitionFollower() {
	l := ""
	eventually(k.t, "a leader", 20*time.Second, func() bool { l = k.leader(); return l != "" })
	f := k.pick(without(three, l))
	k.c.must("partition", f)
	k.disabled, k.live, k.retryOK = f, without(three, f), true
	k.t.Logf("%s: partitioned %s (leader %s); going on with %v", k.phase, f, l, k.live)
}

// healPartitioned heals the cut-off node and reads everything on it at
// once: it must reflect every write made while it was away.
func (k *checker) healPartitioned() {
	f := k.disabled
	k.c.must("heal", f)
	k.t.Logf("%s: healed %s; reading every file there at once", k.phase, f)
	k.verify([]string{f}, k.paths(), afterHeal)
	// Moves to it wait until the cluster lists it up again.
	k.c.agree(k.live[0], three, 30*time.Second)
	k.disabled, k.live = "", slices.Clone(three)
}

const afterHeal = "right after heal"

// paths are every home path of the model, sorted.
func (k *checker) paths() []string {
	var ps []string
	for p := range k.files {
		ps = append(ps, p)
	}
	slices.Sort(ps)
	return ps
}

// readScript prints, for each path, "absent" or "SIZE SHA256": the size
// from stat (lookup, getattr), the digest from open and read.
const readScript = `for p; do if s=$(stat -c %s -- "$p" 2>/dev/null); then ` +
	`d=$(sha256sum < "$p" 2>/dev/null | cut -d" " -f1); echo "$s ${d:-unreadable}"; else echo absent; fi; done`

// verify reads paths on each node at once; every path on every node is
// one read, checked against the model.
func (k *checker) verify(nodes, paths []string, why string) {
	k.t.Helper()
	if len(paths) == 0 {
		return
	}
	res := k.onEach(nodes, append([]string{"sh", "-c", readScript, "sh"}, paths...)...)
	for _, n := range nodes {
		got := strings.Split(strings.TrimSuffix(res[n].out, "\n"), "\n")
		for i, p := range paths {
			k.n.reads++
			line := "(nothing: " + strings.TrimSpace(res[n].err) + ")"
			if i < len(got) {
				line = got[i]
			}
			k.check(n, p, line, why)
		}
	}
}

func (k *checker) check(node, path, got, why string) {
	reg := k.files[path]
	want := state(reg.data)
	if got == want {
		return
	}
	k.n.stale++
	kind := "no state an acknowledged write left"
	if reg.seen[got] {
		kind = "an older acknowledged state"
	}
	took, ok := k.converge(node, path, want)
	class := "stale home read"
	switch {
	case !ok && k.anyHas(path, want):
		class = "stale home read, still stale after 10s (other nodes have the write)"
	case !ok:
		k.n.lost++
		class = "lost acknowledged write"
	case why == afterHeal:
		class = "stale read right after heal"
	}
	k.note(class, "%s on %s %s read %s, want %s (%s); %s", path, node, why, short(got), short(want), kind, took)
}

// converge re-reads path on node until it reflects want, to tell a stale
// read (it shows later) from a lost write (it never does).
func (k *checker) converge(node, path, want string) (string, bool) {
	start := time.Now()
	for time.Since(start) < 10*time.Second {
		r := k.exec(node, false, nil, "sh", "-c", readScript, "sh", path)
		if strings.TrimSpace(r.out) == want {
			return fmt.Sprintf("it showed %v later", time.Since(start).Round(time.Millisecond)), true
		}
		time.Sleep(100 * time.Millisecond)
	}
	return "not there after 10s", false
}

// anyHas says whether some live node reads want at path: a write that
// none shows is lost, not merely late.
func (k *checker) anyHas(path, want string) bool {
	res := k.onEach(k.live, "sh", "-c", readScript, "sh", path)
	for _, r := range res {
		if strings.TrimSpace(r.out) == want {
			return true
		}
	}
	return false
}

func short(s string) string {
	if f := strings.Fields(s); len(f) == 2 && len(f[1]) == 64 {
		return f[0] + " B sha " + f[1][:8]
	}
	return s
}
