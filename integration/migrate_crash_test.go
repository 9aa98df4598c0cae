package integration

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testMigrationAdopt: node1's agent is killed and started again; its
// process ran on and the new agent moves it.
func testMigrationAdopt(t *testing.T, lab *migLab) {
	c := lab.clusterLab
	m := &migLab{clusterLab: c.with(t), dir: lab.dir}
	c.agree("node1", three, 30*time.Second)
	// It counts into a host file: /cluster on node1 is away while
	// its agent is.
	out := filepath.Join(m.dir, "adopt.txt")
	counter := m.counter(t, "counter4.sh", out)
	cpid := m.runDetached(t, "node1", counter)
	counted := hostCounts(t, out)
	eventually(t, "the counter to start", 10*time.Second, func() bool { return counted() > 2 })
	m.killAgent(t, "node1")
	n := counted()
	eventually(t, "the process to go on without its agent", 10*time.Second, func() bool { return counted() > n+3 })
	m.must("start", "node1")
	c.agree("node2", three, 30*time.Second)
	if got := m.where("node2", cpid); got != "node1" {
		t.Fatalf("after the agent's restart, where reads %q", got)
	}
	m.must("exec", "node1", "--", ssiBin, "migrate", cpid, "node2")
	n = counted()
	eventually(t, "the adopted process to count on node2", 10*time.Second, func() bool { return counted() > n+3 })
	m.must("exec", "node1", "--", ssiBin, "kill", cpid)
	if r := m.ssi("exec", "node3", "--", ssiBin, "wait", cpid); r.code != 128+15 {
		t.Fatalf("ssi wait: %d %s", r.code, r.err)
	}
}

// testMigrationArrivalCrash: node2's agent crashes mid-arrival, before
// the verdict and after a commit; its next agent sorts it out.
func testMigrationArrivalCrash(t *testing.T, lab *migLab) {
	c := lab.clusterLab
	m := &migLab{clusterLab: c.with(t), dir: lab.dir}
	c.agree("node1", three, 30*time.Second)
	// A host file: node2's /cluster goes away with its agent.
	out := filepath.Join(m.dir, "arrive.txt")
	counter := m.counter(t, "counter5.sh", out)
	cpid := m.runDetached(t, "node1", counter)
	counted := hostCounts(t, out)
	copies := func() int {
		out := hostOutput(t, "pgrep", "-c", "-f", "^/bin/bash "+regexpQuote(counter))
		n, _ := strconv.Atoi(strings.TrimSpace(out))
		return n
	}
	grows := func(what string) {
		n := counted()
		eventually(t, what, 20*time.Second, func() bool { return counted() > n+3 })
	}
	restart := func(env ...string) {
		m.killAgent(t, "node2")
		if r := ssi(t, append(append([]string{}, m.env...), env...), m.args("start", "node2")...); r.code != 0 {
			t.Fatalf("lab start node2: %s", r.err)
		}
		c.agree("node1", three, 30*time.Second)
	}
	grows("the counter to start")

	// Crash after the restore, before the verdict: the move is
	// aborted, the process goes on at node1, and node2's next agent
	// kills the stopped copy it finds.
	restart("SSI_CRASH_AT=restored")
	if r := m.ssi("exec", "node1", "--", ssiBin, "migrate", cpid, "node2"); r.code == 0 {
		t.Fatal("the move succeeded although its destination crashed before the verdict")
	}
	if got := m.where("node3", cpid); got != "node1" {
		t.Fatalf("after the crash before the verdict, where reads %q", got)
	}
	grows("the process to go on at node1")
	restart()
	eventually(t, "node2's next agent to kill the stopped copy", 20*time.Second, func() bool { return copies() == 1 })

	// Crash after a commit, before resuming: the process is node2's,
	// and node2's next agent resumes it.
	restart("SSI_CRASH_AT=verdict")
	m.must("exec", "node1", "--", ssiBin, "migrate", cpid, "node2")
	if got := m.where("node3", cpid); got != "node2" {
		t.Fatalf("after the committed move, where reads %q", got)
	}
	restart()
	grows("the process to go on at node2 under its next agent")
	if n := copies(); n != 1 {
		t.Fatalf("%d copies run", n)
	}
	m.must("exec", "node1", "--", ssiBin, "kill", "-s", "KILL", cpid)
	eventually(t, "the process to end", 20*time.Second, func() bool { return copies() == 0 })
}

// testMigrationDestinationDies: node2 dies while a 256 MiB process
// moves there; the process runs on at node1, memory intact.
func testMigrationDestinationDies(t *testing.T, lab *migLab) {
	c := lab.clusterLab
	m := &migLab{clusterLab: c.with(t), dir: lab.dir}
	c.agree("node1", three, 30*time.Second)
	out := m.must("exec", "node1", "--", "env", "SSI_ITEST_HELPER=mem", ssiBin, "run", "-d", "--",
		testBin, "256", "/cluster/home/mem.txt")
	cpid := strings.TrimSpace(out)
	n := m.waitGrows(t, "node1", "mem.txt", 2)
	var mig result
	var migErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Not t.Fatal: this is not the test's goroutine.
		mig, migErr = run(cmdTimeout, m.env, nil, ssiBin, m.args("exec", "node1", "--", ssiBin, "migrate", cpid, "node2")...)
	}()
	eventually(t, "the move to begin", 20*time.Second, func() bool {
		r := m.ssi("exec", "node1", "--", "cat", "/cluster/proc/"+cpid+"/status")
		return strings.Contains(r.out, "State:\tmigrating")
	})
	m.must("kill", "node2")
	select {
	case <-done:
	case <-time.After(cmdTimeout + 30*time.Second):
		t.Fatal("the move whose destination died did not return")
	}
	if migErr != nil {
		t.Fatal(migErr)
	}
	if mig.code == 0 {
		t.Fatalf("the move succeeded although its destination died: %s", mig.out)
	}
	if got := m.where("node3", cpid); got != "node1" {
		t.Fatalf("after the failed move, where reads %q", got)
	}
	// It runs on, memory intact.
	n = m.waitGrows(t, "node1", "mem.txt", n+5)
	text := m.must("exec", "node1", "--", "cat", "/cluster/home/mem.txt")
	if strings.Contains(text, "bad") {
		t.Fatalf("memory changed by the failed move:\n%s", text)
	}
	// One copy, on node1: the host sees every node's processes.
	pg := hostOutput(t, "pgrep", "-f", "-c", "^"+regexpQuote(testBin)+" 256 ")
	if strings.TrimSpace(pg) != "1" {
		t.Fatalf("%s copies of the process run", strings.TrimSpace(pg))
	}
	m.must("start", "node2")
	m.must("exec", "node1", "--", ssiBin, "kill", "-s", "KILL", cpid)
	_ = n
}
