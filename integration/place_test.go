package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPlace: `ssi run --node N` and `ssi sh` start a process directly on
// the chosen node (no checkpoint, no move), homed where the user asked,
// with the caller's directory, environment, uid and stdio; a start the
// chosen node refuses, or that it dies in the middle of, leaves nothing
// listed that runs nowhere.
func TestPlace(t *testing.T) {
	c := newClusterLab(t, "itplace", "10.213.90.0/24", "--nodes", "3")
	c.agree("node1", three, 30*time.Second)
	m := &migLab{clusterLab: c, dir: t.TempDir()}
	openToAll(t, m.dir)
	work := filepath.Join(m.dir, "work dir")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, u := range asWhom {
		t.Run("attached on node2"+u.suffix, func(t *testing.T) {
			testPlaceAttached(t, &migLab{clusterLab: c.with(t), dir: m.dir}, u, work)
		})
		t.Run("terminal and ^C on node2"+u.suffix, func(t *testing.T) {
			testPlaceSignals(t, &migLab{clusterLab: c.with(t), dir: m.dir}, u, work)
		})
		t.Run("detached on node2"+u.suffix, func(t *testing.T) {
			testPlaceDetached(t, &migLab{clusterLab: c.with(t), dir: m.dir}, u, work)
		})
		t.Run("ssi sh"+u.suffix, func(t *testing.T) {
			testPlaceSh(t, &migLab{clusterLab: c.with(t), dir: m.dir}, u, work)
		})
		t.Run("refused by a blocked node"+u.suffix, func(t *testing.T) {
			testPlaceBlocked(t, &migLab{clusterLab: c.with(t), dir: m.dir}, u)
		})
	}
	t.Run("ssi sh overhead", func(t *testing.T) {
		testPlaceShOverhead(t, &migLab{clusterLab: c.with(t), dir: m.dir})
	})
	t.Run("refused by a node that is down", func(t *testing.T) {
		testPlaceDown(t, &migLab{clusterLab: c.with(t), dir: m.dir})
	})
	t.Run("chosen node killed mid-start", func(t *testing.T) {
		testPlaceKilledMidStart(t, &migLab{clusterLab: c.with(t), dir: m.dir})
	})
}

// inDir is argv run by u on node from directory dir with PLACE_VAR set.
func inDir(u asUser, node, dir string, argv ...string) []string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return u.cmd(node, "env", "PLACE_VAR=placed value", "sh", "-c", "cd '"+dir+"' && exec "+strings.Join(q, " "))
}

// checkPlacedOnNode2 fails the test unless cpid runs on node2 on every
// node's word, never moved (nmigs 0, no move listed), owned by uid.
func checkPlacedOnNode2(t *testing.T, m *migLab, cpid string, uid int) {
	t.Helper()
	for _, n := range three {
		if got := m.where(n, cpid); got != "node2" {
			t.Fatalf("where of %s on %s reads %q, want node2", cpid, n, got)
		}
	}
	if got := strings.TrimSpace(m.must("exec", "node1", "--", "cat", "/cluster/proc/"+cpid+"/nmigs")); got != "0" {
		t.Fatalf("nmigs of %s reads %q, want 0", cpid, got)
	}
	st := m.must("exec", "node3", "--", "cat", "/cluster/proc/"+cpid+"/status")
	for _, want := range []string{"Home:\tnode1", "Node:\tnode2", "Uid:\t" + strconv.Itoa(uid)} {
		if !strings.Contains(st, want+"\n") {
			t.Fatalf("status of %s lacks %q:\n%s", cpid, want, st)
		}
	}
	var moves []struct {
		CPID int `json:"cpid"`
	}
	if !m.on("node3", &moves, "migrations", "--json") {
		t.Fatal("ssi migrations --json failed")
	}
	for _, mv := range moves {
		if strconv.Itoa(mv.CPID) == cpid {
			t.Fatalf("ssi migrations lists a move of %s: %+v", cpid, mv)
		}
	}
}

// testPlaceAttached: an attached run on node2 round-trips its stdio,
// arrives with the caller's directory, environment and uid, and keeps
// talking to its caller after a move; its exit code comes back.
func testPlaceAttached(t *testing.T, m *migLab, u asUser, work string) {
	name := "placed-echo" + u.suffix + ".sh"
	script := m.script(t, name, "echo \"pwd $PWD\"; echo \"var $PLACE_VAR\"; echo \"uid $(id -u)\"\n"+
		"while read -r l; do echo \"got $l\"; done\nexit 7\n")
	cmd, stdin, lines := m.attached(t, inDir(u, "node1", work, ssiBin, "run", "--node", "node2", "--", script)...)
	defer stop(t, cmd)
	for _, want := range []string{"pwd " + work, "var placed value", "uid " + strconv.Itoa(u.uid)} {
		if got, err := lines.next(time.Minute); err != nil || got != want+"\n" {
			t.Fatalf("first lines: got %q %v, want %q", got, err, want)
		}
	}
	next := 0
	exchange := func(k int) {
		for i := 0; i < k; i++ {
			next++
			fmt.Fprintf(stdin, "line %d\n", next)
			if got, err := lines.next(time.Minute); err != nil || got != fmt.Sprintf("got line %d\n", next) {
				t.Fatalf("reply to line %d: %q %v", next, got, err)
			}
		}
	}
	exchange(2)
	cpid := m.cpidOf(t, name)
	checkPlacedOnNode2(t, m, cpid, u.uid)
	// Moved afterwards like any other: it still talks to its caller.
	m.must(u.cmd(u.from("node3", "node1"), ssiBin, "migrate", cpid, "node3")...)
	if got := m.where("node1", cpid); got != "node3" {
		t.Fatalf("after the move where reads %q", got)
	}
	exchange(2)
	stdin.Close()
	if rest, err := lines.rest(time.Minute); err != nil || rest != "" {
		t.Fatalf("after stdin closed: %q %v", rest, err)
	}
	err := waitFor(cmd, time.Minute)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
		t.Fatalf("ssi run exit: %v, want 7", err)
	}
}

// testPlaceSignals: -t gives a process started on node2 a terminal of
// its own, and ^C to an attached ssi run reaches one started there.
func testPlaceSignals(t *testing.T, m *migLab, u asUser, work string) {
	r := m.ssi(inDir(u, "node1", work, ssiBin, "run", "-t", "--node", "node2", "--", "sh", "-c",
		"test -t 0 && test -t 1 && echo on a terminal; exit 5")...)
	if r.code != 5 || !strings.Contains(r.out, "on a terminal") {
		t.Fatalf("ssi run -t --node node2: exit %d, out %q, err %q", r.code, r.out, r.err)
	}
	name := "placed-trap" + u.suffix + ".sh"
	script := m.script(t, name, "trap 'echo caught INT; exit 42' INT\necho ready\nwhile :; do sleep 0.1; done\n")
	cmd, _, lines := m.attached(t, inDir(u, "node1", work, ssiBin, "run", "--node", "node2", "--", script)...)
	defer stop(t, cmd)
	if l, err := lines.next(time.Minute); err != nil || l != "ready\n" {
		t.Fatalf("first line: %q %v", l, err)
	}
	checkPlacedOnNode2(t, m, m.cpidOf(t, name), u.uid)
	interruptRun(t, regexpQuote(ssiBin)+" run --node node2 -- "+regexpQuote(script), lines, cmd)
}

// testPlaceDetached: -d prints the cpid at once, of a process that runs
// on node2 from its start.
func testPlaceDetached(t *testing.T, m *migLab, u asUser, work string) {
	r := m.ssi(inDir(u, "node1", work, ssiBin, "run", "-d", "--node", "node2", "--", "sleep", "600")...)
	cpid := strings.TrimSpace(r.out)
	if _, err := strconv.Atoi(cpid); r.code != 0 || err != nil {
		t.Fatalf("ssi run -d --node node2: exit %d, out %q, err %q", r.code, r.out, r.err)
	}
	checkPlacedOnNode2(t, m, cpid, u.uid)
	m.must(u.cmd(u.from("node3", "node1"), ssiBin, "kill", "-s", "KILL", cpid)...)
	eventually(t, "the process to end", 20*time.Second, func() bool {
		return m.ssi("exec", "node1", "--", "test", "-e", "/cluster/proc/"+cpid).code != 0
	})
}

// testPlaceSh: ssi sh runs its command in the caller's directory and
// passes its exit code through; without an agent it runs nothing.
func testPlaceSh(t *testing.T, m *migLab, u asUser, work string) {
	r := m.ssi(inDir(u, "node1", work, ssiBin, "sh", "-c", `echo "$PWD $PLACE_VAR"; exit 3`)...)
	if r.code != 3 || r.out != work+" placed value\n" {
		t.Fatalf("ssi sh: exit %d, out %q, err %q; want 3 and %q", r.code, r.out, r.err, work+" placed value\n")
	}
	// make's own flags (-e, as .POSIX gives) pass through to /bin/sh.
	r = m.ssi(inDir(u, "node3", work, ssiBin, "sh", "-ec", "false; echo not reached")...)
	if r.code != 1 || r.out != "" {
		t.Fatalf("ssi sh -ec: exit %d, out %q, err %q", r.code, r.out, r.err)
	}
	r = m.ssi(inDir(u, "node1", work, "env", "SSI_SOCKET=/nonexistent.sock", ssiBin, "sh", "-c", "echo ran here")...)
	if r.code == 0 || r.out != "" || !strings.Contains(r.err, "agent") {
		t.Fatalf("ssi sh with no agent: exit %d, out %q, err %q", r.code, r.out, r.err)
	}
}

// listed reports whether node1's ssi ps lists a process whose command
// line holds marker; ok is false when ps failed.
func listedOn(m *migLab, marker string) (listed, ok bool) {
	r := m.ssi("exec", "node1", "--", ssiBin, "ps")
	return strings.Contains(r.out, marker), r.code == 0
}

// runsOnHost reports whether a process whose command line is exactly
// cmdline runs anywhere on the machine (every node is in it).
func runsOnHost(cmdline string) bool {
	out, _ := exec.Command("pgrep", "-f", "-x", cmdline).Output()
	return strings.TrimSpace(string(out)) != ""
}

// checkNothingOf fails the test unless no process with marker is
// listed or runs, after a refused start.
func checkNothingOf(t *testing.T, m *migLab, marker string) {
	t.Helper()
	eventually(t, "ssi ps to answer without "+marker, 20*time.Second, func() bool {
		listed, ok := listedOn(m, marker)
		return ok && !listed
	})
	if runsOnHost(marker) {
		t.Fatalf("%q runs although its start was refused", marker)
	}
}

// testPlaceBlocked: a node that blocks arrivals refuses a start too,
// with a clear error, and nothing is listed or runs.
func testPlaceBlocked(t *testing.T, m *migLab, u asUser) {
	m.must("exec", "node2", "--", "sh", "-c", "echo 1 > /cluster/admin/block")
	defer m.must("exec", "node2", "--", "sh", "-c", "echo 0 > /cluster/admin/block")
	eventually(t, "node1 to see node2 blocking", 10*time.Second, func() bool {
		ns, ok := m.nodes("node1")
		return ok && len(ns) == 3 && ns[1].Admin["block"]
	})
	for _, detach := range [][]string{nil, {"-d"}} {
		marker := "sleep 9" + strconv.Itoa(101+u.uid+len(detach))
		argv := append(append([]string{ssiBin, "run"}, detach...), "--node", "node2", "--", "sh", "-c", marker)
		r := m.ssi(u.cmd("node1", argv...)...)
		if r.code == 0 || !strings.Contains(r.err, "block") {
			t.Fatalf("ssi run %v on a blocked node: exit %d, out %q, err %q", detach, r.code, r.out, r.err)
		}
		checkNothingOf(t, m, marker)
	}
}

// testPlaceDown: a start on a node whose agent is dead fails clearly
// and leaves nothing, both before the cluster has noticed and after.
func testPlaceDown(t *testing.T, m *migLab) {
	m.must("kill", "node2")
	defer func() {
		m.must("start", "node2")
		m.agree("node1", three, 60*time.Second)
	}()
	try := func(marker string) {
		r := m.ssi("exec", "node1", "--", ssiBin, "run", "--node", "node2", "--", "sh", "-c", marker)
		if r.code == 0 || !strings.Contains(r.err, "node2") {
			t.Fatalf("ssi run on a dead node: exit %d, out %q, err %q", r.code, r.out, r.err)
		}
		t.Logf("refused: %s", strings.TrimSpace(r.err))
		checkNothingOf(t, m, marker)
	}
	try("sleep 9201")
	eventually(t, "node1 to see node2 down", 60*time.Second, func() bool {
		ns, ok := m.nodes("node1")
		return ok && len(ns) == 3 && ns[1].State == "down"
	})
	try("sleep 9202")
}

// testPlaceKilledMidStart: node2's agent dies while it serves a start
// (held by SSI_PAUSE_START): the caller hears so, and once node2 is
// back nothing is listed that runs nowhere, nor runs twice.
func testPlaceKilledMidStart(t *testing.T, m *migLab) {
	pause := filepath.Join(m.dir, "start-pause")
	m.killAgent(t, "node2")
	if r := ssi(t, append(append([]string{}, m.env...), "SSI_PAUSE_START="+pause), m.args("start", "node2")...); r.code != 0 {
		t.Fatalf("lab start node2: %s", r.err)
	}
	m.agree("node1", three, 60*time.Second)
	const marker = "sleep 9301"
	var out syncBuffer
	run := m.background(&out, "exec", "node1", "--", ssiBin, "run", "-d", "--node", "node2", "--", "sh", "-c", marker)
	defer stop(t, run)
	eventually(t, "node2 to hold the start", 30*time.Second, func() bool {
		_, err := os.Stat(pause + ".paused")
		return err == nil
	})
	m.must("kill", "node2")
	err := waitFor(run, time.Minute)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 || !strings.Contains(out.String(), "node2") {
		t.Fatalf("ssi run whose chosen node died: %v, output %q", err, out.String())
	}
	t.Logf("caller heard: %s", strings.TrimSpace(out.String()))
	m.must("start", "node2")
	m.agree("node1", three, 60*time.Second)
	eventually(t, "the listing to be forgotten once node2 is back", 60*time.Second, func() bool {
		listed, ok := listedOn(m, marker)
		return ok && !listed
	})
	if runsOnHost(marker) {
		t.Fatalf("%q runs although node2 died before starting it", marker)
	}
}

// testPlaceShOverhead measures 50 runs of `ssi sh -c true` on node1 next
// to 50 of `sh -c true`, for the report (a figure, not a bound); each
// must end within 5 s (a command that ends before its stdio holder
// reaches its session once waited for the session to give up on it).
func testPlaceShOverhead(t *testing.T, m *migLab) {
	loop := func(cmd string) time.Duration {
		script := "i=0; while [ $i -lt 50 ]; do timeout 5 " + cmd + " || exit 1; i=$((i+1)); done"
		t0 := time.Now()
		m.within(5*time.Minute).must("exec", "node1", "--", "sh", "-c", script)
		return time.Since(t0) / 50
	}
	sh := loop("sh -c true")
	ssiSh := loop(ssiBin + " sh -c true")
	t.Logf("per command, on node1 of a 3-node lab: ssi sh -c true %v, sh -c true %v", ssiSh.Round(time.Millisecond/10),
		sh.Round(time.Microsecond))
}
