package integration

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBalance (issue 13): CPU-bound processes started on one node spread
// by themselves, once each, and then stay; a locked process, a node that
// stays and a node that blocks are respected; ssi drain moves a node's
// processes away live. Four nodes of a quarter CPU: the busy loops use
// one of the machine's two CPUs at most.
func TestBalance(t *testing.T) {
	c := newClusterLabEnv(t, "itbal", []string{"SSI_LAB_SUBNET=10.213.92.0/24", "SSI_BALANCE_ENABLED=true"},
		"--nodes", "4", "--cpu-quota", "0.25")
	c.agree("node1", four, 30*time.Second)
	// Every node measured its speed at start, and every node shows it.
	for _, n := range four {
		out := strings.TrimSpace(c.must("exec", "node2", "--", "cat", "/cluster/nodes/"+n+"/speed"))
		if v, err := strconv.Atoi(out); err != nil || v <= 0 || v%1000 != 0 {
			t.Fatalf("/cluster/nodes/%s/speed reads %q: want a positive multiple of 1000", n, out)
		}
	}
	b := &balLab{migLab: &migLab{clusterLab: c, dir: t.TempDir()}, u: asUser{1000, "-uid1000"}}
	openToAll(t, b.dir)
	t.Run("busy processes spread and stay", func(t *testing.T) { testBalanceSpread(t, b.with(t)) })
	t.Run("lock, stay and block are respected", func(t *testing.T) { testBalanceSwitches(t, b.with(t)) })
	t.Run("drain moves a node's processes live", func(t *testing.T) { testBalanceDrain(t, b.with(t)) })
}

var four = []string{"node1", "node2", "node3", "node4"}

type balLab struct {
	*migLab
	u asUser
}

func (b *balLab) with(t *testing.T) *balLab {
	return &balLab{migLab: &migLab{clusterLab: b.clusterLab.with(t), dir: b.dir}, u: b.u}
}

// spinner is a script that waits for the file go (in the test's
// directory) and then spins: idle, and so left alone by the balancer,
// until the test lets it go.
func (b *balLab) spinner(t *testing.T) (script, gate string) {
	gate = filepath.Join(b.dir, "go")
	return b.script(t, "spin.sh", "while [ ! -e "+gate+" ]; do sleep 0.05; done\nwhile :; do :; done\n"), gate
}

// placement is where each cpid runs, and its nmigs, as node1 reads them.
func (b *balLab) placement(cpids []string) (map[string]int, map[string]int) {
	per, nmigs := map[string]int{}, map[string]int{}
	for _, cpid := range cpids {
		per[b.where("node1", cpid)]++
		n, _ := strconv.Atoi(strings.TrimSpace(b.ssi("exec", "node1", "--", "cat", "/cluster/proc/"+cpid+"/nmigs").out))
		nmigs[cpid] = n
	}
	return per, nmigs
}

// explain is ssi balance --explain --json, as node asks it.
func (b *balLab) explain(t *testing.T, node string) []balanceRecord {
	t.Helper()
	var rs []balanceRecord
	out := b.must("exec", node, "--", ssiBin, "balance", "--explain", "--json")
	if err := json.Unmarshal([]byte(out), &rs); err != nil {
		t.Fatalf("ssi balance --explain --json: %v: %s", err, out)
	}
	return rs
}

type balanceRecord struct {
	At     time.Time `json:"at"`
	Node   string    `json:"node"`
	CPID   int       `json:"cpid"`
	Action string    `json:"action"`
	Kind   string    `json:"kind"`
	From   string    `json:"from"`
	To     string    `json:"to"`
	Why    string    `json:"why"`
}

// roundsAfter waits until every node has planned again after since:
// each round renews the rejections a node reports.
func (b *balLab) roundsAfter(t *testing.T, since time.Time, cpids []string) {
	t.Helper()
	eventually(t, "every process to be considered again", 30*time.Second, func() bool {
		seen := map[int]bool{}
		for _, r := range b.explain(t, "node2") {
			if r.Action == "rejected" && r.At.After(since) {
				seen[r.CPID] = true
			}
		}
		for _, c := range cpids {
			if n, _ := strconv.Atoi(c); !seen[n] {
				return false
			}
		}
		return true
	})
}

func (b *balLab) killAll(cpids []string) {
	for _, cpid := range cpids {
		b.ssi(b.u.cmd("node1", ssiBin, "kill", "-s", "KILL", cpid)...)
	}
	for _, cpid := range cpids {
		b.ssi(b.u.cmd("node1", ssiBin, "wait", cpid)...)
	}
}

// testBalanceSpread: four busy processes of uid 1000 started on node1
// end one on each node, each moved at most once, and an even load then
// moves nothing.
func testBalanceSpread(t *testing.T, b *balLab) {
	spin, gate := b.spinner(t)
	var cpids []string
	for range 4 {
		cpids = append(cpids, b.runDetachedAs(t, b.u, "node1", spin))
	}
	defer b.killAll(cpids)
	defer os.Remove(gate)
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "one busy process on each node", 90*time.Second, func() bool {
		per, _ := b.placement(cpids)
		return per["node1"] == 1 && per["node2"] == 1 && per["node3"] == 1 && per["node4"] == 1
	})
	settled := time.Now()
	_, before := b.placement(cpids)
	for cpid, n := range before {
		if n > 1 {
			t.Errorf("%s moved %d times on its way", cpid, n)
		}
	}
	moved := 0
	for _, r := range b.explain(t, "node3") {
		if r.Action == "moved" && r.Kind == "load" && r.From == "node1" {
			moved++
			if !strings.Contains(r.Why, "slower") {
				t.Errorf("a move explained as %q", r.Why)
			}
		}
	}
	if moved != 3 {
		t.Errorf("ssi balance --explain lists %d moves from node1, want 3", moved)
	}
	// Even now: a few rounds of every node later, nothing moved.
	b.roundsAfter(t, settled.Add(3*time.Second), cpids)
	if _, after := b.placement(cpids); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("an even load moved: nmigs %v, then %v", before, after)
	}
}

// testBalanceSwitches: with node4 blocking and one process locked on
// node1, three busy processes on node1 spread to node2 and node3 only,
// the locked one stays; a node that stays sends nothing until it stops
// staying.
func testBalanceSwitches(t *testing.T, b *balLab) {
	spin, gate := b.spinner(t)
	b.must("exec", "node4", "--", "sh", "-c", "echo 1 > /cluster/admin/block")
	defer b.must("exec", "node4", "--", "sh", "-c", "echo 0 > /cluster/admin/block")
	var cpids []string
	for range 3 {
		cpids = append(cpids, b.runDetachedAs(t, b.u, "node1", spin))
	}
	defer b.killAll(cpids)
	defer os.Remove(gate)
	b.must(b.u.cmd("node1", "sh", "-c", "echo 1 > /cluster/proc/"+cpids[0]+"/lock")...)
	if err := os.WriteFile(gate, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the two unlocked processes to leave node1", 90*time.Second, func() bool {
		per, _ := b.placement(cpids)
		return per["node1"] == 1
	})
	per, _ := b.placement(cpids)
	if got := b.where("node2", cpids[0]); got != "node1" || per["node4"] != 0 {
		t.Fatalf("the locked process is on %s; placement %v (node4 blocks)", got, per)
	}
	var locked bool
	for _, r := range b.explain(t, "node1") {
		locked = locked || r.Action == "rejected" && strconv.Itoa(r.CPID) == cpids[0] && r.Why == "locked"
	}
	if !locked {
		t.Error("ssi balance --explain does not say the locked process stays because it is locked")
	}

	// stay: node2 keeps what it has, even with node4 free again.
	b.must("exec", "node4", "--", "sh", "-c", "echo 0 > /cluster/admin/block")
	b.must("exec", "node2", "--", "sh", "-c", "echo 1 > /cluster/admin/stay")
	more := []string{b.runDetachedAs(t, b.u, "node2", spin), b.runDetachedAs(t, b.u, "node2", spin)}
	defer b.killAll(more)
	// Long enough for them to have run enough to be worth a move.
	stays := time.Now().Add(10 * time.Second)
	eventually(t, "node2 to say it keeps both because it stays", 60*time.Second, func() bool {
		n := 0
		for _, r := range b.explain(t, "node3") {
			if r.Action == "rejected" && r.At.After(stays) && strings.Contains(r.Why, "node2 stays") &&
				(strconv.Itoa(r.CPID) == more[0] || strconv.Itoa(r.CPID) == more[1]) {
				n++
			}
		}
		return n == 2
	})
	for _, cpid := range more {
		if got := b.where("node1", cpid); got != "node2" {
			t.Fatalf("%s left node2, which stays, for %s", cpid, got)
		}
	}
	b.must("exec", "node2", "--", "sh", "-c", "echo 0 > /cluster/admin/stay")
	eventually(t, "node2 to send work to node4 once it stops staying", 90*time.Second, func() bool {
		p, _ := b.placement(append(append([]string{}, cpids...), more...))
		return p["node4"] >= 1
	})
}

// testBalanceDrain: five counters of uid 1000 on node2 all go on
// elsewhere after ssi drain node2, counting on; node2 refuses arrivals
// until ssi drain --undo; only node2's root may drain it.
func testBalanceDrain(t *testing.T, b *balLab) {
	home := b.homeOf(t, b.u)
	var cpids []string
	for i := range 5 {
		counter := b.counter(t, fmt.Sprintf("drain%d.sh", i), fmt.Sprintf("%s/drain%d.txt", home, i))
		cpids = append(cpids, b.runDetachedAs(t, b.u, "node2", counter))
	}
	defer b.killAll(cpids)
	counts := map[string]int{}
	for i, cpid := range cpids {
		counts[cpid] = b.waitGrows(t, "node2", homeRel(home, fmt.Sprintf("drain%d.txt", i)), 2)
	}
	if r := b.ssi(b.u.cmd("node2", ssiBin, "drain", "node2")...); r.code == 0 || !strings.Contains(r.err, "EPERM") {
		t.Fatalf("uid 1000 drained node2: exit %d %q", r.code, r.err)
	}
	if r := b.ssi("exec", "node1", "--", ssiBin, "drain", "node2"); r.code == 0 || !strings.Contains(r.err, "on node2 itself") {
		t.Fatalf("node1's root drained node2: exit %d %q", r.code, r.err)
	}
	out := b.must("exec", "node2", "--", ssiBin, "drain", "node2")
	if !strings.Contains(out, "5 moved, 0 stayed") {
		t.Fatalf("ssi drain node2: %s", out)
	}
	for i, cpid := range cpids {
		at := b.where("node3", cpid)
		if at == "node2" || at == "" {
			t.Fatalf("%s is on %q after the drain", cpid, at)
		}
		// Nothing restarted: it counts on from where it was.
		b.waitGrows(t, at, homeRel(home, fmt.Sprintf("drain%d.txt", i)), counts[cpid]+3)
	}
	r := b.ssi(b.u.cmd("node1", ssiBin, "migrate", cpids[0], "node2")...)
	if r.code == 0 || !strings.Contains(r.err, "block") {
		t.Fatalf("a move to the drained node2: exit %d %q", r.code, r.err)
	}
	b.must("exec", "node2", "--", ssiBin, "drain", "--undo", "node2")
	b.must(b.u.cmd("node1", ssiBin, "migrate", cpids[0], "node2")...)
	if got := b.where("node4", cpids[0]); got != "node2" {
		t.Fatalf("after --undo, a move to node2 left it on %q", got)
	}
}
