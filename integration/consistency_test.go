package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
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
			k.procRound()
		} else {
			k.homeRound()
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

// homeOp is one file operation and the state it leaves.
type homeOp struct {
	kind   string
	argv   []string
	stdin  []byte
	user   bool
	after  map[string][]byte // path -> content after (nil: absent)
	target string            // the path the reads check first
}

func (k *checker) randSize(limit int) int {
	switch k.rng.Intn(20) {
	case 0:
		return 1
	case 1:
		return limit
	}
	return max(1, min(limit, int(math.Exp(k.rng.Float64()*math.Log(float64(limit))))))
}

func (k *checker) randData(n int) []byte {
	b := make([]byte, n)
	k.rng.Read(b)
	return b
}

func (k *checker) reg(p string) *register {
	r := k.files[p]
	if r == nil {
		r = &register{seen: map[string]bool{"absent": true}}
		k.files[p] = r
	}
	return r
}

// nextOp chooses an operation on one of the root's six or the user's
// four files.
func (k *checker) nextOp() homeOp {
	user := k.rng.Intn(4) == 0
	dir, slots := linDir, 6
	if user {
		dir, slots = linDir+"/u", 4
	}
	var names, existing []string
	for i := 0; i < slots; i++ {
		p := fmt.Sprintf("%s/f%d", dir, i)
		names = append(names, p)
		if k.reg(p).data != nil {
			existing = append(existing, p)
		}
	}
	p := k.pick(names)
	cur := k.files[p].data
	kinds := []string{"write", "shorter", "append", "rename", "unlink"}
	kind := "write"
	if cur != nil {
		kind = k.pick(kinds)
	}
	others := without(existing, p)
	if kind == "rename" && len(others) == 0 || kind == "shorter" && len(cur) < 2 || kind == "append" && len(cur) >= maxFile {
		kind = "write"
	}
	op := homeOp{kind: kind, user: user, target: p, after: map[string][]byte{}}
	switch kind {
	case "write":
		op.stdin = k.randData(k.randSize(maxFile))
		op.argv = []string{"sh", "-c", `cat > "$1"`, "sh", p}
		op.after[p] = op.stdin
	case "shorter":
		op.stdin = k.randData(k.randSize(len(cur) - 1))
		op.argv = []string{"sh", "-c", `cat > "$1"`, "sh", p}
		op.after[p] = op.stdin
	case "append":
		op.stdin = k.randData(k.randSize(min(maxFile-len(cur), 64<<10)))
		op.argv = []string{"sh", "-c", `cat >> "$1"`, "sh", p}
		op.after[p] = append(slices.Clone(cur), op.stdin...)
	case "rename":
		to := k.pick(others)
		op.argv = []string{"mv", "-f", "--", p, to}
		op.after[p], op.after[to], op.target = nil, cur, to
	case "unlink":
		op.argv = []string{"rm", "--", p}
		op.after[p] = nil
	}
	return op
}

// settle returns a command that puts every path of op into its state
// after op, whatever op did before it failed: the way to retry it.
func settle(op homeOp) ([]string, []byte) {
	script, args := "", []string{"sh"}
	var stdin []byte
	for p, data := range op.after {
		args = append(args, p)
		i := strconv.Itoa(len(args) - 1)
		if data == nil {
			script += `rm -f -- "$` + i + `" && `
		} else {
			script += `cat > "$` + i + `" && `
			stdin = data
		}
	}
	return append([]string{"sh", "-c", script + "true"}, args...), stdin
}

// homeRound issues one file operation (by the leader every other round)
// and reads what it touched on every other live node at once.
func (k *checker) homeRound() {
	k.t.Helper()
	op := k.nextOp()
	writer := ""
	if k.n.homeOps%2 == 0 {
		writer = k.leader()
	}
	if writer == "" {
		writer = k.pick(k.live)
	} else {
		k.n.leaderWrites++
	}
	k.n.homeOps++
	if op.user {
		k.n.users++
	}
	r := k.exec(writer, op.user, op.stdin, op.argv...)
	if r.code != 0 {
		k.recover(writer, op, r)
	}
	for p, data := range op.after {
		reg := k.reg(p)
		reg.data = data
		reg.seen[state(data)] = true
	}
	readers := without(k.live, writer)
	paths := []string{op.target}
	for p := range op.after {
		if p != op.target {
			paths = append(paths, p)
		}
	}
	k.verify(readers, paths, fmt.Sprintf("after %s on %s", op.kind, writer))
}

// recover retries a failed operation until its paths hold their state
// after it; a failure that is not an election's is counted.
func (k *checker) recover(writer string, op homeOp, r result) {
	k.t.Helper()
	msg := strings.TrimSpace(r.err)
	if k.retryOK && retryable(msg) {
		k.n.retried++
		k.note("retried", "%s of %s on %s: %s", op.kind, op.target, writer, msg)
	} else {
		k.n.writeErrs++
		k.note("failed write", "%s of %s on %s: exit %d: %s", op.kind, op.target, writer, r.code, msg)
	}
	argv, stdin := settle(op)
	deadline := time.Now().Add(45 * time.Second)
	for {
		r = k.exec(writer, op.user, stdin, argv...)
		if r.code == 0 {
			return
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("%s: retrying %s of %s on %s for 45s: exit %d: %s", k.phase, op.kind, op.target, writer, r.code, r.err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// psEntry is what the checker reads of `ssi ps --json`.
type psEntry struct {
	CPID int    `json:"cpid"`
	Node string `json:"node"`
}

// listed reads, on each live node at once, whether /cluster/proc and
// `ssi ps --json` list cpid (and on which node ps says it runs): two
// reads a node. want is the node it runs on, "" once it has ended.
func (k *checker) listed(cpid, want, why string) {
	k.t.Helper()
	res := k.onEach(k.live, "sh", "-c", `test -d /cluster/proc/"$1" && echo present || echo absent; "$2" ps --json`,
		"sh", cpid, ssiBin)
	for _, n := range k.live {
		out := res[n].out
		dir, js, _ := strings.Cut(out, "\n")
		var ps []psEntry
		err := json.Unmarshal([]byte(js), &ps)
		on := ""
		for _, p := range ps {
			if strconv.Itoa(p.CPID) == cpid {
				on = p.Node
			}
		}
		k.n.reads += 2
		if (dir == "present") != (want != "") {
			k.n.stale++
			k.note("stale process listing", "/cluster/proc/%s on %s %s: %s", cpid, n, why, dir)
		}
		if err != nil || on != want {
			k.n.stale++
			k.note("stale process listing", "ssi ps on %s %s lists %s on %q, want %q (%v)", n, why, cpid, on, want, err)
		}
	}
}

// whereOn reads /cluster/proc/CPID/where on every live node at once.
func (k *checker) whereOn(cpid, want, why string) {
	k.t.Helper()
	res := k.onEach(k.live, "cat", "/cluster/proc/"+cpid+"/where")
	for _, n := range k.live {
		k.n.reads++
		if got := strings.TrimSpace(res[n].out); got != want {
			k.n.stale++
			k.note("stale where", "where of %s on %s %s reads %q, want %q %s", cpid, n, why, got, want, strings.TrimSpace(res[n].err))
		}
	}
}

// counterProg is the process the checker moves: it counts in memory.
var counterProg = []string{"bash", "-c", "i=0; while :; do i=$((i+1)); sleep 0.1; done"}

// procRound runs a counter on a random node (as uid 1000 in one round of
// four), moves it back-to-back from random nodes (uid 1000's moved by
// uid 1000 or root at random), then kills it and waits for it from
// random nodes, reading after each step.
func (k *checker) procRound() {
	k.t.Helper()
	user := k.n.procs%procRounds == procRounds-1
	node := k.pick(k.live)
	r := k.procCmd(node, user, append([]string{ssiBin, "run", "-d", "--"}, counterProg...)...)
	cpid := strings.TrimSpace(r.out)
	if _, err := strconv.Atoi(cpid); r.code != 0 || err != nil {
		k.n.procErrs++
		k.note("failed run/kill/wait", "ssi run -d on %s: exit %d %q %s", node, r.code, r.out, strings.TrimSpace(r.err))
		return
	}
	k.n.procs++
	k.listed(cpid, node, fmt.Sprintf("right after ssi run -d on %s printed it", node))
	where := node
	for i := 0; i < movesPerRound && where != ""; i++ {
		where = k.move(cpid, where, i == 0, user)
	}
	k.finish(cpid, user)
}

// procCmd runs a process command, retried while an election refuses it.
func (k *checker) procCmd(node string, user bool, argv ...string) result {
	k.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		r := k.exec(node, user, nil, argv...)
		if r.code == 0 || !k.retryOK || !retryable(r.err) || time.Now().After(deadline) {
			return r
		}
		k.n.retried++
		k.note("retried", "%s on %s: %s", strings.Join(argv, " "), node, strings.TrimSpace(r.err))
		time.Sleep(200 * time.Millisecond)
	}
}

// move writes a new node to where, issued from a random live node (the
// first move of a round from one that is neither source nor
// destination), reads where everywhere, and returns where it runs now.
func (k *checker) move(cpid, from string, third, user bool) string {
	k.t.Helper()
	targets := without(k.live, from)
	if len(targets) == 0 {
		return from
	}
	to := k.pick(targets)
	issuer := k.pick(k.live)
	if others := without(k.live, from, to); third && len(others) > 0 {
		issuer = others[0]
	}
	asUser := user && k.rng.Intn(2) == 0
	k.n.moves++
	r := k.procCmd(issuer, asUser, "bash", "-c", `printf '%s\n' "$1" > /cluster/proc/"$2"/where`, "-", to, cpid)
	if r.code != 0 {
		k.n.failedMoves++
		why := k.exec(issuer, false, nil, "cat", "/cluster/proc/"+cpid+"/cantmove")
		owner := "root's"
		if user {
			owner = "uid 1000's"
		}
		k.note("failed move", "%s (%s) %s -> %s written on %s: exit %d: %s (cantmove: %q)", cpid, owner, from, to, issuer, r.code,
			strings.TrimSpace(r.err), firstLine(strings.TrimSpace(why.out+why.err)))
		return k.settleWhere(cpid)
	}
	k.whereOn(cpid, to, fmt.Sprintf("right after the move %s -> %s (issued on %s) returned", from, to, issuer))
	return to
}

// settleWhere waits until every live node names the same live node as
// where the process runs, after a failed move; "" if it is gone.
func (k *checker) settleWhere(cpid string) string {
	k.t.Helper()
	where := ""
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		res := k.onEach(k.live, "cat", "/cluster/proc/"+cpid+"/where")
		where = strings.TrimSpace(res[k.live[0]].out)
		same := slices.Contains(k.live, where)
		for _, n := range k.live {
			same = same && strings.TrimSpace(res[n].out) == where
		}
		if same {
			return where
		}
		time.Sleep(200 * time.Millisecond)
	}
	k.note("failed move", "after it the nodes did not agree where %s runs within 15s", cpid)
	return ""
}

// finish kills the process from a random node and waits for it from
// another: kill returning 0 means delivered, so the wait returns 143;
// once the wait returned, no node lists the process.
func (k *checker) finish(cpid string, user bool) {
	k.t.Helper()
	killer, waiter := k.pick(k.live), k.pick(k.live)
	want := 128 + 15
	r := k.procCmd(killer, user && k.rng.Intn(2) == 0, ssiBin, "kill", cpid)
	if r.code != 0 {
		k.n.procErrs++
		k.note("failed run/kill/wait", "ssi kill %s on %s: exit %d: %s", cpid, killer, r.code, strings.TrimSpace(r.err))
		// Do not leave it running: the next rounds count processes.
		k.exec(killer, false, nil, ssiBin, "kill", "-s", "KILL", cpid)
		want = -1
	}
	w, err := run(30*time.Second, k.c.env, nil, ssiBin, k.c.args("exec", waiter, "--", ssiBin, "wait", cpid)...)
	switch {
	case err != nil:
		k.n.procErrs++
		k.note("failed run/kill/wait", "ssi wait %s on %s after kill on %s: %v", cpid, waiter, killer, firstLine(err.Error()))
		k.exec(killer, false, nil, ssiBin, "kill", "-s", "KILL", cpid)
		return
	case want > 0 && w.code != want:
		k.n.procErrs++
		k.note("failed run/kill/wait", "ssi kill %s on %s returned 0 but ssi wait on %s exited %d, want %d: %s",
			cpid, killer, waiter, w.code, want, strings.TrimSpace(w.err))
	}
	k.listed(cpid, "", fmt.Sprintf("right after ssi wait on %s returned", waiter))
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}
