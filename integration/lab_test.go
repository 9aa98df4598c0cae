package integration

import (
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// hostState is what a lab may touch on the host, as the acceptance test
// compares it: namespaces, mounts, cgroup folders, links, processes.
func hostState(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	show := func(name string, args ...string) {
		r, err := run(cmdTimeout, nil, nil, name, args...)
		if err != nil || r.code != 0 {
			t.Fatalf("%s %v: exit %d, %v: %s%s", name, args, r.code, err, r.out, r.err)
		}
		b.WriteString("$ " + name + " " + strings.Join(args, " ") + "\n" + r.out + r.err)
	}
	show("ip", "netns", "list")
	show("ip", "-br", "link")
	mounts, _ := os.ReadFile("/proc/self/mounts")
	b.WriteString("$ mount | grep ssi\n")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, "ssi") {
			b.WriteString(line + "\n")
		}
	}
	cg, _ := filepath.Glob("/sys/fs/cgroup/*/ssi-lab*")
	cg2, _ := filepath.Glob("/sys/fs/cgroup/ssi-lab*")
	cg = append(cg, cg2...)
	sort.Strings(cg)
	b.WriteString("$ cgroups\n" + strings.Join(cg, "\n") + "\n")
	return b.String()
}

// hostOutput runs a command on the host, bounded by cmdTimeout, and
// returns its standard output whatever its exit status (pgrep's 1 is
// "none").
func hostOutput(t *testing.T, name string, args ...string) string {
	t.Helper()
	r, err := run(cmdTimeout, nil, nil, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r.out
}

// agentProcs lists running `ssi agent` processes of the lab under test.
func agentProcs(t *testing.T) []string {
	return strings.Fields(strings.TrimSpace(hostOutput(t, "pgrep", "-af", ssiBin+" agent")))
}

const itSubnet = "SSI_LAB_SUBNET=10.213.8.0/24"

// TestLabAcceptance walks the foundation issue's acceptance: 3 nodes, each
// with its own address, TCP between them, partition and heal, kill and
// start, and a down (twice) that leaves the host as it was.
func TestLabAcceptance(t *testing.T) {
	needRoot(t)
	env := []string{itSubnet}
	lab := []string{"lab", "--name", "itlab"}
	args := func(a ...string) []string { return append(append([]string{}, lab...), a...) }
	ssi(t, env, args("down")...) // a previous run's leftovers
	before := hostState(t)
	t.Cleanup(func() { ssi(t, env, args("down")...) })

	out := mustSSI(t, env, args("up", "--nodes", "3", "--cpu-quota", "0.5")...)
	for _, want := range []string{"node1: 10.213.8.11", "node2: 10.213.8.12", "node3: 10.213.8.13"} {
		if !strings.Contains(out, want) {
			t.Errorf("lab up output lacks %q:\n%s", want, out)
		}
	}
	// Idempotent: a second up keeps the running agents.
	status1 := mustSSI(t, env, args("status", "--json")...)
	mustSSI(t, env, args("up", "--nodes", "3", "--cpu-quota", "0.5")...)
	if status2 := mustSSI(t, env, args("status", "--json")...); status2 != status1 {
		t.Errorf("second lab up changed the lab:\n%s\nthen\n%s", status1, status2)
	}

	t.Run("own address", func(t *testing.T) { testLabOwnAddress(t, env, args) })
	t.Run("tcp node1 to node2", func(t *testing.T) { testLabTCP(t, env, args) })
	t.Run("exit code passes through", func(t *testing.T) { testLabExitCode(t, env, args) })
	t.Run("own mount namespace", func(t *testing.T) { testLabMountNamespace(t, env, args) })
	t.Run("cgroup and quota", func(t *testing.T) { testLabCgroup(t, env, args) })
	reach3 := func() bool {
		r := ssi(t, env, args("exec", "node1", "--", "timeout", "2", "bash", "-c",
			"exec 3<>/dev/tcp/10.213.8.13/7700 && echo connected")...)
		return r.code == 0 && strings.TrimSpace(r.out) == "connected"
	}
	t.Run("partition and heal", func(t *testing.T) { testLabPartition(t, env, args, reach3) })
	t.Run("kill and start", func(t *testing.T) { testLabKillStart(t, env, args) })
	t.Run("unknown node", func(t *testing.T) { testLabUnknownNode(t, env, args) })

	mustSSI(t, env, args("down")...)
	mustSSI(t, env, args("down")...)
	if after := hostState(t); after != before {
		t.Fatalf("lab down left the host changed.\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if p := agentProcs(t); len(p) > 0 {
		t.Fatalf("agents left running: %v", p)
	}
}

// The subtests of TestLabAcceptance, in its order: env and args are the
// test's lab environment and `ssi lab --name itlab` arguments.

func testLabOwnAddress(t *testing.T, env []string, args func(a ...string) []string) {
	out := mustSSI(t, env, args("exec", "node2", "--", "ip", "-br", "addr")...)
	if !strings.Contains(out, "10.213.8.12/24") || strings.Contains(out, "10.213.8.11") {
		t.Fatalf("node2's addresses:\n%s", out)
	}
}

func testLabTCP(t *testing.T, env []string, args func(a ...string) []string) {
	// The agent speaks TLS only: a plain connect proves the path.
	out := mustSSI(t, env, args("exec", "node1", "--", "bash", "-c",
		"exec 3<>/dev/tcp/10.213.8.12/7700 && echo connected")...)
	if strings.TrimSpace(out) != "connected" {
		t.Fatalf("node1 to node2:7700: %q", out)
	}
}

func testLabExitCode(t *testing.T, env []string, args func(a ...string) []string) {
	if r := ssi(t, env, args("exec", "node3", "--", "sh", "-c", "exit 7")...); r.code != 7 {
		t.Fatalf("exit code %d, want 7", r.code)
	}
}

func testLabMountNamespace(t *testing.T, env []string, args func(a ...string) []string) {
	mustSSI(t, env, args("exec", "node1", "--", "sh", "-c", "echo node1 > /var/lib/ssi/who")...)
	out := mustSSI(t, env, args("exec", "node2", "--", "sh", "-c", "cat /var/lib/ssi/who 2>/dev/null || echo none")...)
	if strings.TrimSpace(out) != "none" {
		t.Fatalf("node2 sees node1's /var/lib/ssi: %q", out)
	}
}

func testLabCgroup(t *testing.T, env []string, args func(a ...string) []string) {
	q, err := os.ReadFile("/sys/fs/cgroup/cpu/ssi-lab/itlab/node1/cpu.cfs_quota_us")
	if err != nil {
		q, err = os.ReadFile("/sys/fs/cgroup/ssi-lab/itlab/node1/cpu.max")
	}
	if err != nil || !strings.HasPrefix(strings.TrimSpace(string(q)), "50000") {
		t.Fatalf("node1's CPU quota: %q, %v", q, err)
	}
	out := mustSSI(t, env, args("exec", "node1", "--", "cat", "/proc/self/cgroup")...)
	if !strings.Contains(out, "ssi-lab/itlab/node1") {
		t.Fatalf("a command in node1 is not in node1's cgroup:\n%s", out)
	}
}

// testLabPartition: reach3 (the whole test's) says whether node1
// reaches node3.
func testLabPartition(t *testing.T, env []string, args func(a ...string) []string, reach3 func() bool) {
	mustSSI(t, env, args("partition", "node3")...)
	if reach3() {
		t.Fatal("node1 reaches node3 through a partition")
	}
	if !strings.Contains(mustSSI(t, env, args("status")...), "partitioned") {
		t.Error("status does not show the partition")
	}
	mustSSI(t, env, args("heal", "node3")...)
	eventually(t, "node1 to reach node3 after heal", 20*time.Second, reach3)
}

func testLabKillStart(t *testing.T, env []string, args func(a ...string) []string) {
	mustSSI(t, env, args("exec", "node2", "--", "sh", "-c", "echo kept > /var/lib/ssi/marker")...)
	mustSSI(t, env, args("exec", "node2", "--", "sh", "-c", "sleep 1000 >/dev/null 2>&1 & exit 0")...)
	mustSSI(t, env, args("kill", "node2")...)
	st := mustSSI(t, env, args("status")...)
	if !strings.Contains(st, "node2") || !regexpLine(st, "node2", "down") {
		t.Fatalf("status after kill:\n%s", st)
	}
	if r := ssi(t, env, args("exec", "node1", "--", "timeout", "2", "bash", "-c",
		"exec 3<>/dev/tcp/10.213.8.12/7700")...); r.code == 0 {
		t.Fatal("node2's agent still answers after lab kill")
	}
	if procs, _ := os.ReadFile("/sys/fs/cgroup/pids/ssi-lab/itlab/node2/cgroup.procs"); len(strings.TrimSpace(string(procs))) > 0 {
		t.Fatalf("processes left in node2 after kill: %s", procs)
	}
	mustSSI(t, env, args("start", "node2")...)
	out := mustSSI(t, env, args("exec", "node2", "--", "cat", "/var/lib/ssi/marker")...)
	if strings.TrimSpace(out) != "kept" {
		t.Fatalf("node2's state directory after start: %q", out)
	}
	out = mustSSI(t, env, args("exec", "node1", "--", "bash", "-c",
		"exec 3<>/dev/tcp/10.213.8.12/7700 && echo connected")...)
	if strings.TrimSpace(out) != "connected" {
		t.Fatalf("node2's agent after start: %q", out)
	}
}

func testLabUnknownNode(t *testing.T, env []string, args func(a ...string) []string) {
	r := ssi(t, env, args("exec", "node9", "--", "true")...)
	if r.code == 0 || !strings.Contains(r.err, "no such node") {
		t.Fatalf("exec on node9: exit %d, stderr %q", r.code, r.err)
	}
}

// TestLabDownAfterFailedUp: an up whose agents cannot start fails, and
// down still removes everything it built.
func TestLabDownAfterFailedUp(t *testing.T) {
	needRoot(t)
	env := []string{"SSI_LAB_SUBNET=10.213.9.0/24"}
	lab := []string{"lab", "--name", "itfail"}
	ssi(t, env, append(lab, "down")...)
	before := hostState(t)
	t.Cleanup(func() { ssi(t, env, append(lab, "down")...) })

	// Agents inherit this and cannot bind an address their node lacks.
	bad := append(env, "SSI_NODE_BIND_ADDR=192.0.2.1")
	r := ssi(t, bad, append(lab, "up", "--nodes", "2")...)
	if r.code == 0 {
		t.Fatalf("lab up with agents that cannot start succeeded:\n%s", r.out)
	}
	if !strings.Contains(r.err, "agent exited") {
		t.Errorf("lab up's error does not say why: %q", r.err)
	}
	if hostState(t) == before {
		t.Fatal("the failed up built nothing: the test proves nothing")
	}
	mustSSI(t, env, append(lab, "down")...)
	mustSSI(t, env, append(lab, "down")...)
	if after := hostState(t); after != before {
		t.Fatalf("down after a failed up left the host changed.\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// regexpLine says whether some line of text holds all the words.
func regexpLine(text string, words ...string) bool {
	for _, line := range strings.Split(text, "\n") {
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			return true
		}
	}
	return false
}
