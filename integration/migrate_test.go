package integration

import (
	"strings"
	"testing"
	"time"
)

// TestMigration: real CRIU moves of real processes between the nodes of
// a 3-node lab.
func TestMigration(t *testing.T) {
	c := newClusterLab(t, "itmig", "10.213.23.0/24", "--nodes", "3")
	c.agree("node1", three, 10*time.Second)
	m := &migLab{clusterLab: c, dir: t.TempDir()}
	// The tests' normal user runs the scripts there too.
	openToAll(t, m.dir)

	for _, u := range asWhom {
		t.Run("counter hops node1 node2 node3 home"+u.suffix, func(t *testing.T) { testMigrationHops(t, m, u) })
	}

	for _, u := range asWhom {
		t.Run("attached stdio follows the process"+u.suffix, func(t *testing.T) { testMigrationStdio(t, m, u) })
	}

	t.Run("ctrl-c reaches an attached process after a move", func(t *testing.T) { testMigrationCtrlC(t, m) })

	for _, u := range asWhom {
		t.Run("a tree with a pipe and a daemon move"+u.suffix, func(t *testing.T) { testMigrationTree(t, m, u) })
	}

	t.Run("bad requests harm nothing", func(t *testing.T) { testMigrationBadRequests(t, m) })
	t.Run("admin switches", func(t *testing.T) { testMigrationAdmin(t, m) })
	t.Run("a restarted agent adopts its processes", func(t *testing.T) { testMigrationAdopt(t, m) })
	t.Run("a destination agent crashes mid-arrival", func(t *testing.T) { testMigrationArrivalCrash(t, m) })
	t.Run("destination dies mid-move", func(t *testing.T) { testMigrationDestinationDies(t, m) })
}

// testMigrationHops moves u's counter node1 -> node2 -> node3 -> home,
// each move asked on a third node (root asks on the home); it counts on,
// in order.
func testMigrationHops(t *testing.T, lab *migLab, u asUser) {
	c := lab.clusterLab
	m := &migLab{clusterLab: c.with(t), dir: lab.dir}
	home := m.homeOf(t, u)
	counter := m.counter(t, "counter"+u.suffix+".sh", home+"/hops.txt")
	before := committedMoves(t, c)
	cpid := m.runDetachedAs(t, u, "node1", counter)
	n := m.waitGrows(t, "node1", homeRel(home, "hops.txt"), 3)
	for _, hop := range []struct{ from, target, want string }{
		{"node3", "node2", "node2"}, {"node1", "node3", "node3"}, {"node2", "home", "node1"},
	} {
		m.must(u.cmd(u.from(hop.from, "node1"), "sh", "-c", "echo "+hop.target+" > /cluster/proc/"+cpid+"/where")...)
		for _, node := range three {
			if got := m.where(node, cpid); got != hop.want {
				t.Fatalf("after moving to %s, where on %s reads %q", hop.target, node, got)
			}
		}
		// It goes on counting from where it was: a restart would
		// write 1 again and break the order.
		n = m.waitGrows(t, hop.want, homeRel(home, "hops.txt"), n+3)
	}
	if got := strings.TrimSpace(m.must("exec", "node2", "--", "cat", "/cluster/proc/"+cpid+"/nmigs")); got != "3" {
		t.Fatalf("nmigs: %q, want 3", got)
	}
	checkListedMoves(t, m, cpid)
	// Each node was the source of one move: its metrics say so.
	if got := committedMoves(t, c); got != before+1 {
		t.Fatalf("node2's metrics count %d committed moves, want %d", got, before+1)
	}
	m.must(u.cmd(u.from("node3", "node1"), ssiBin, "kill", "-s", "KILL", cpid)...)
	r := m.ssi(u.cmd("node2", ssiBin, "wait", cpid)...)
	if r.code != 128+9 {
		t.Fatalf("ssi wait after kill -9: exit %d (%s)", r.code, r.err)
	}
	final := m.must("exec", "node2", "--", "cat", home+"/hops.txt")
	if _, ok := countsInOrder(final); !ok {
		t.Fatalf("hops.txt is not 1..n in order:\n%s", final)
	}
}

// testMigrationTree moves u's pipeline and u's daemon, whose first
// process has exited.
func testMigrationTree(t *testing.T, lab *migLab, u asUser) {
	m := &migLab{clusterLab: lab.with(t), dir: lab.dir}
	home := m.homeOf(t, u)
	tree := m.script(t, "tree"+u.suffix+".sh",
		"(i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done) | "+
			"(while read -r l; do echo $l >> "+home+"/tree.txt; done)\n")
	cpid := m.runDetachedAs(t, u, "node2", tree)
	n := m.waitGrows(t, "node2", homeRel(home, "tree.txt"), 3)
	m.must(u.cmd("node2", ssiBin, "migrate", cpid, "node1")...)
	m.waitGrows(t, "node1", homeRel(home, "tree.txt"), n+3)

	daemon := m.script(t, "daemon"+u.suffix+".sh",
		"setsid bash -c 'i=0; while :; do i=$((i+1)); echo $i >> "+home+"/daemon.txt; sleep 0.1; done' "+
			"</dev/null >/dev/null 2>&1 &\nexit 0\n")
	dcpid := m.runDetachedAs(t, u, "node3", daemon)
	n = m.waitGrows(t, "node3", homeRel(home, "daemon.txt"), 3)
	// Its first process has exited; the job is still a cluster process.
	if got := m.where("node1", dcpid); got != "node3" {
		t.Fatalf("the daemon's where on node1: %q", got)
	}
	m.must(u.cmd(u.from("node1", "node3"), "sh", "-c", "echo node2 > /cluster/proc/"+dcpid+"/where")...)
	m.waitGrows(t, "node2", homeRel(home, "daemon.txt"), n+3)
	m.must(u.cmd("node1", ssiBin, "kill", "--all", cpid)...)
	m.must(u.cmd(u.from("node1", "node3"), ssiBin, "kill", dcpid)...)
	// The tree's leader dies of the TERM; the daemon's leader had
	// exited 0 long before its child got the TERM.
	for p, want := range map[string]int{cpid: 128 + 15, dcpid: 0} {
		if r := m.ssi(u.cmd("node3", ssiBin, "wait", p)...); r.code != want {
			t.Fatalf("ssi wait %s: exit %d, want %d (%s)", p, r.code, want, r.err)
		}
	}
}

// testMigrationBadRequests: garbage, unknown, same-node, another
// user's and down-node moves are refused and leave the process be.
func testMigrationBadRequests(t *testing.T, lab *migLab) {
	m := &migLab{clusterLab: lab.with(t), dir: lab.dir}
	counter := m.counter(t, "counter2.sh", "/cluster/home/bad.txt")
	cpid := m.runDetached(t, "node1", counter)
	n := m.waitGrows(t, "node1", "bad.txt", 2)
	// write returns what bash says of a write to where ("" if none).
	write := func(node, value string, asUser bool) string {
		argv := []string{"exec", node, "--"}
		if asUser {
			argv = append(argv, "setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups")
		}
		r := m.ssi(append(argv, "bash", "-c", `printf "%s" "$1" > /cluster/proc/`+cpid+`/where`, "-", value)...)
		if r.code == 0 {
			return ""
		}
		stderr := strings.TrimSpace(r.err)
		_, msg, ok := strings.Cut(stderr, "write error: ")
		if !ok { // refused at open: "bash: line 1: PATH: Permission denied"
			msg = stderr[strings.LastIndex(stderr, ": ")+2:]
		}
		return msg
	}
	for _, tc := range []struct {
		value, want string
		user        bool
	}{
		{"\x01garbage\n", "Invalid argument", false},
		{"node9\n", "Invalid argument", false},
		{"node1\n", "Invalid argument", false},
		{"node2\n", "Permission denied", true},
	} {
		if got := write("node3", tc.value, tc.user); got != tc.want {
			t.Fatalf("writing %q to where: %q, want %q", tc.value, got, tc.want)
		}
	}
	if r := m.ssi("exec", "node2", "--", ssiBin, "migrate", cpid, "node9"); r.code == 0 || !strings.Contains(r.err, "node9") {
		t.Fatalf("ssi migrate to node9: %d %q", r.code, r.err)
	}
	m.must("kill", "node3")
	eventually(t, "node3 to be down", 20*time.Second, func() bool {
		ns, ok := m.nodes("node1")
		for _, n := range ns {
			if n.Name == "node3" {
				return ok && n.State == "down"
			}
		}
		return false
	})
	if got := write("node2", "node3", false); got != "No route to host" {
		t.Fatalf("moving to a down node: %q", got)
	}
	m.must("start", "node3")
	if got := m.where("node2", cpid); got != "node1" {
		t.Fatalf("after bad requests it is on %q", got)
	}
	m.waitGrows(t, "node1", "bad.txt", n+3)
	m.must("exec", "node1", "--", ssiBin, "kill", "-s", "KILL", cpid)
}

// testMigrationAdmin: block refuses arrivals, expel sends guests home,
// bring calls a node's processes back.
func testMigrationAdmin(t *testing.T, lab *migLab) {
	c := lab.clusterLab
	m := &migLab{clusterLab: c.with(t), dir: lab.dir}
	c.agree("node1", three, 30*time.Second)
	counter := m.counter(t, "counter3.sh", "/cluster/home/admin.txt")
	cpid := m.runDetached(t, "node1", counter)
	m.waitGrows(t, "node1", "admin.txt", 2)
	admin := func(node, sw, v string) {
		m.must("exec", node, "--", "sh", "-c", "echo "+v+" > /cluster/admin/"+sw)
	}
	// block: node2 takes no arrivals.
	admin("node2", "block", "1")
	eventually(t, "node1 to see node2 blocking", 10*time.Second, func() bool {
		ns, ok := m.nodes("node1")
		return ok && len(ns) == 3 && ns[1].Admin["block"]
	})
	r := m.ssi("exec", "node1", "--", ssiBin, "migrate", cpid, "node2")
	if r.code == 0 || !strings.Contains(r.err, "block") {
		t.Fatalf("moving to a blocking node: %d %q", r.code, r.err)
	}
	admin("node2", "block", "0")
	// expel: node3 sends its guest home.
	m.must("exec", "node1", "--", ssiBin, "migrate", cpid, "node3")
	admin("node3", "expel", "1")
	eventually(t, "node3 to expel the process to node1", 30*time.Second, func() bool { return m.where("node2", cpid) == "node1" })
	admin("node3", "expel", "0")
	// bring: node1 calls its process back from node2.
	m.must("exec", "node1", "--", ssiBin, "migrate", cpid, "node2")
	admin("node1", "bring", "1")
	eventually(t, "node1 to bring the process home", 30*time.Second, func() bool { return m.where("node3", cpid) == "node1" })
	admin("node1", "bring", "0")
	n := m.waitGrows(t, "node1", "admin.txt", 2)
	m.waitGrows(t, "node1", "admin.txt", n+2)
	m.must("exec", "node1", "--", ssiBin, "kill", "-s", "KILL", cpid)
}
