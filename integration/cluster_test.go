package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// nodeInfo and statusInfo mirror `ssi nodes --json` and `ssi status
// --json`: the test reads the binary's output as a user's script would.
type nodeInfo struct {
	Name     string          `json:"name"`
	Addr     string          `json:"addr"`
	State    string          `json:"state"`
	Role     string          `json:"role"`
	Voter    bool            `json:"voter"`
	Load     float64         `json:"load"`
	CPUs     float64         `json:"cpus"`
	Admin    map[string]bool `json:"admin"`
	LastSeen *time.Time      `json:"last_seen"`
}

type statusInfo struct {
	Node         string `json:"node"`
	ClusterID    string `json:"cluster_id"`
	Leader       string `json:"leader"`
	NodesUp      int    `json:"nodes_up"`
	NodesTotal   int    `json:"nodes_total"`
	Voters       int    `json:"voters"`
	Quorum       bool   `json:"quorum"`
	AppliedIndex uint64 `json:"applied_index"`
}

// clusterLab is a lab under test with helpers to ask its nodes.
type clusterLab struct {
	t    *testing.T
	name string
	env  []string
	// limit bounds each command run through c; zero means cmdTimeout.
	limit time.Duration
}

func newClusterLab(t *testing.T, name, subnet string, up ...string) *clusterLab {
	t.Helper()
	return newClusterLabEnv(t, name, []string{"SSI_LAB_SUBNET=" + subnet}, up...)
}

// newClusterLabEnv is newClusterLab with the lab's environment, which
// names its subnet (SSI_LAB_SUBNET) and which its agents inherit. The
// balancer is off unless env turns it on: a test that moves processes
// itself must find them where it put them (the balancer's own tests
// turn it on).
func newClusterLabEnv(t *testing.T, name string, env []string, up ...string) *clusterLab {
	t.Helper()
	needRoot(t)
	if !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "SSI_BALANCE_ENABLED=") }) {
		env = append(slices.Clone(env), "SSI_BALANCE_ENABLED=false")
	}
	c := &clusterLab{t: t, name: name, env: env}
	c.ssi("down")
	t.Cleanup(func() {
		if t.Failed() {
			c.logTails()
		}
		c.ssi("down")
	})
	c.must(append([]string{"up"}, up...)...)
	return c
}

// logTails prints the end of every node's agent log, Raft's chatter
// aside: what a failed test's reader needs first.
func (c *clusterLab) logTails() {
	logs, _ := filepath.Glob(filepath.Join("/var/lib/ssi-lab", c.name, "node*", "agent.log"))
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			continue
		}
		var keep []string
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.Contains(line, "component=raft") && line != "" {
				keep = append(keep, line)
			}
		}
		c.t.Logf("%s (last lines):\n%s", l, strings.Join(keep[max(0, len(keep)-25):], "\n"))
	}
}

// with is c reporting to t (a subtest).
func (c *clusterLab) with(t *testing.T) *clusterLab {
	cc := *c
	cc.t = t
	return &cc
}

// within is c with commands that may take up to d.
func (c *clusterLab) within(d time.Duration) *clusterLab {
	cc := *c
	cc.limit = d
	return &cc
}

func (c *clusterLab) timeout() time.Duration {
	if c.limit > 0 {
		return c.limit
	}
	return cmdTimeout
}

func (c *clusterLab) args(a ...string) []string {
	return append([]string{"lab", "--name", c.name}, a...)
}
func (c *clusterLab) ssi(a ...string) result {
	c.t.Helper()
	return ssiWithin(c.t, c.timeout(), c.env, c.args(a...)...)
}
func (c *clusterLab) must(a ...string) string {
	c.t.Helper()
	return mustSSIWithin(c.t, c.timeout(), c.env, c.args(a...)...)
}

// on runs ssi inside node and decodes its JSON output into v; it reports
// whether that worked.
func (c *clusterLab) on(node string, v any, a ...string) bool {
	r := c.ssi(append([]string{"exec", node, "--", ssiBin}, a...)...)
	return r.code == 0 && json.Unmarshal([]byte(r.out), v) == nil
}

func (c *clusterLab) nodes(node string) ([]nodeInfo, bool) {
	var n []nodeInfo
	ok := c.on(node, &n, "nodes", "--json")
	return n, ok
}

func (c *clusterLab) status(node string) (statusInfo, bool) {
	var s statusInfo
	ok := c.on(node, &s, "status", "--json")
	return s, ok
}

// agree waits until node lists exactly want as up with live load, one
// leader among them.
func (c *clusterLab) agree(node string, want []string, timeout time.Duration) []nodeInfo {
	c.t.Helper()
	var last []nodeInfo
	eventually(c.t, fmt.Sprintf("%s to list %v up with live load", node, want), timeout, func() bool {
		ns, ok := c.nodes(node)
		if !ok {
			return false
		}
		last = ns
		return liveAndExactly(ns, want)
	})
	return last
}

// background starts ssi lab ARGS in its own process group, output to out.
func (c *clusterLab) background(out io.Writer, a ...string) *exec.Cmd {
	c.t.Helper()
	cmd := exec.Command(ssiBin, c.args(a...)...)
	cmd.Env = append(cmd.Environ(), c.env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// The command's children may hold its output open after it is killed.
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		c.t.Fatal(err)
	}
	return cmd
}

// attached starts ssi lab ARGS in its own process group with a pipe to
// its stdin and its stdout read line by line (stderr goes to the test's
// log when it fails); stop ends it.
func (c *clusterLab) attached(t *testing.T, a ...string) (*exec.Cmd, io.WriteCloser, *lineReader) {
	t.Helper()
	cmd := exec.Command(ssiBin, c.args(a...)...)
	cmd.Env = append(cmd.Environ(), c.env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb syncBuffer
	cmd.Stderr = &errb
	t.Cleanup(func() {
		if t.Failed() && errb.String() != "" {
			t.Logf("stderr of %s: %s", strings.Join(a, " "), errb.String())
		}
	})
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, in, newLineReader(out)
}

// stop kills a background command and everything it started in the
// host's view (what it started inside a node dies with the lab), and
// waits a bounded time for it to end.
func stop(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	killGroup(cmd)
	if err := waitFor(cmd, 30*time.Second); errors.Is(err, errTimedOut) {
		t.Errorf("%s did not end after SIGKILL: %v", strings.Join(cmd.Args, " "), err)
	}
}

func liveAndExactly(ns []nodeInfo, want []string) bool {
	if len(ns) != len(want) {
		return false
	}
	leaders := 0
	for i, n := range ns {
		if n.Name != want[i] || n.State != "up" || n.CPUs <= 0 || n.LastSeen == nil ||
			time.Since(*n.LastSeen) > 5*time.Second {
			return false
		}
		if n.Role == "leader" {
			leaders++
		}
	}
	return leaders == 1
}

var three = []string{"node1", "node2", "node3"}

// TestClusterForms: three agents started with only a token (no address
// configured) form one cluster, and every node lists all three with live
// load.
func TestClusterForms(t *testing.T) {
	c := newClusterLab(t, "itform", "10.213.10.0/24", "--nodes", "3")
	for _, n := range three {
		ns := c.agree(n, three, 5*time.Second)
		voters := 0
		for _, x := range ns {
			if x.Voter {
				voters++
			}
		}
		if voters != 3 {
			t.Errorf("%s: %d voters, want 3: %+v", n, voters, ns)
		}
	}
	s1, _ := c.status("node1")
	s3, _ := c.status("node3")
	if s1.ClusterID == "" || s1.ClusterID != s3.ClusterID || !s1.Quorum {
		t.Fatalf("status node1 %+v, node3 %+v", s1, s3)
	}
	// Load is live: make node2 busy and watch its load rise on node3.
	busy := c.background(nil, "exec", "node2", "--", "sh", "-c", "while :; do :; done")
	defer stop(t, busy)
	eventually(t, "node2's load to show on node3", 10*time.Second, func() bool {
		ns, ok := c.nodes("node3")
		return ok && len(ns) == 3 && ns[1].Name == "node2" && ns[1].Load > 0.5
	})
	// ... and in node3's /cluster, as openMosix's /proc/hpc showed it.
	eventually(t, "/cluster/nodes/node2/load on node3 to show the work", 10*time.Second, func() bool {
		r := c.ssi("exec", "node3", "--", "cat", "/cluster/nodes/node2/load")
		var load float64
		_, err := fmt.Sscanf(r.out, "%f", &load)
		return r.code == 0 && err == nil && load > 0.5
	})
}

// TestClusterFiles: every node's /cluster shows the whole cluster, and
// its admin files set this node's switches in the agreed state.
func TestClusterFiles(t *testing.T) {
	c := newClusterLab(t, "itfile", "10.213.16.0/24", "--nodes", "3")
	c.agree("node1", three, 5*time.Second)
	for _, n := range three {
		out := c.must("exec", n, "--", "ls", "/cluster/nodes")
		if strings.Join(strings.Fields(out), " ") != "node1 node2 node3" {
			t.Fatalf("ls /cluster/nodes on %s: %q", n, out)
		}
		if st := c.must("exec", n, "--", "cat", "/cluster/nodes/node1/status"); st != "up\n" {
			t.Fatalf("node1's status on %s: %q", n, st)
		}
	}
	c.must("exec", "node2", "--", "sh", "-c", "echo 1 > /cluster/admin/block")
	eventually(t, "node3 to see node2 blocking", 10*time.Second, func() bool {
		ns, ok := c.nodes("node3")
		return ok && len(ns) == 3 && ns[1].Admin["block"] && !ns[0].Admin["block"]
	})
	if got := c.must("exec", "node2", "--", "cat", "/cluster/admin/block"); got != "1\n" {
		t.Fatalf("node2's admin/block reads %q", got)
	}
	r := c.ssi("exec", "node2", "--", "bash", "-c", "echo maybe > /cluster/admin/block")
	if r.code == 0 || !strings.Contains(r.err, "Invalid argument") {
		t.Fatalf("garbage to admin/block: exit %d, %q", r.code, r.err)
	}
	r = c.ssi("exec", "node2", "--", "setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups",
		"bash", "-c", "echo 0 > /cluster/admin/block")
	if r.code == 0 || !strings.Contains(r.err, "Permission denied") {
		t.Fatalf("a user's write to admin/block: exit %d, %q", r.code, r.err)
	}
	if got := c.must("exec", "node2", "--", "cat", "/cluster/admin/block"); got != "1\n" {
		t.Fatalf("a refused write changed admin/block: %q", got)
	}

	clusterUnmounts(t, c)
}

// clusterUnmounts is TestClusterFiles' end: /cluster across an agent's
// SIGTERM, SIGKILL and start.
func clusterUnmounts(t *testing.T, c *clusterLab) {
	// SIGTERM: the agent unmounts /cluster on its way out.
	mounted := func(node string) bool {
		return c.ssi("exec", node, "--", "grep", "-q", " /cluster ", "/proc/self/mountinfo").code == 0
	}
	var labNodes []struct {
		Name     string `json:"name"`
		AgentPid int    `json:"agent_pid"`
	}
	if err := json.Unmarshal([]byte(c.must("status", "--json")), &labNodes); err != nil || labNodes[0].AgentPid == 0 {
		t.Fatalf("lab status: %v %+v", err, labNodes)
	}
	if err := syscall.Kill(labNodes[0].AgentPid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node1's /cluster to be unmounted after SIGTERM", 20*time.Second, func() bool { return !mounted("node1") })
	// SIGKILL leaves a stale mount, which the next start replaces.
	c.must("kill", "node2")
	if r := c.ssi("exec", "node2", "--", "ls", "/cluster/nodes"); r.code == 0 {
		t.Fatalf("/cluster of a killed agent still answers: %q", r.out)
	}
	c.must("start", "node1")
	c.must("start", "node2")
	for _, n := range []string{"node1", "node2"} {
		eventually(t, n+"'s /cluster back", 20*time.Second, func() bool {
			r := c.ssi("exec", n, "--", "ls", "/cluster/nodes")
			return r.code == 0 && strings.Join(strings.Fields(r.out), " ") == "node1 node2 node3"
		})
	}
}

// TestLeaderLossAndReturn: kill the leader, the two others elect one and
// serve `ssi nodes`; start it again: three nodes, no duplicate.
func TestLeaderLossAndReturn(t *testing.T) {
	c := newClusterLab(t, "itlead", "10.213.11.0/24", "--nodes", "3")
	c.agree("node1", three, 5*time.Second)
	st, _ := c.status("node1")
	old := st.Leader
	if old == "" {
		t.Fatal("no leader")
	}
	c.must("kill", old)
	var rest []string
	for _, n := range three {
		if n != old {
			rest = append(rest, n)
		}
	}
	eventually(t, "a new leader among "+strings.Join(rest, ","), 15*time.Second, func() bool {
		s, ok := c.status(rest[0])
		return ok && s.Leader != "" && s.Leader != old && s.Quorum
	})
	eventually(t, "the dead leader to show down", 15*time.Second, func() bool {
		ns, ok := c.nodes(rest[1])
		if !ok || len(ns) != 3 {
			return false
		}
		for _, n := range ns {
			if n.Name == old {
				return n.State == "down"
			}
		}
		return false
	})
	c.must("start", old)
	for _, n := range three {
		c.agree(n, three, 15*time.Second)
	}
}

// TestRestartAll: stop all three, start all three: the agreed state is as
// before, with no token or address given again.
func TestRestartAll(t *testing.T) {
	c := newClusterLab(t, "itrest", "10.213.12.0/24", "--nodes", "3")
	c.agree("node1", three, 5*time.Second)
	c.must("exec", "node2", "--", ssiBin, "debug", "admin", "block", "1")
	c.must("exec", "node3", "--", ssiBin, "debug", "admin", "stay", "1")
	before, _ := c.status("node1")
	for _, n := range three {
		c.must("kill", n)
	}
	c.must("start", "node1")
	c.must("start", "node2")
	// node3 comes back with its state directory and no token at all.
	agent3 := c.background(nil, "exec", "node3", "--", ssiBin, "agent", "--node-name", "node3",
		"--node-advertise-addr", "10.213.12.13")
	defer stop(t, agent3)
	for _, n := range three {
		ns := c.agree(n, three, 20*time.Second)
		if !ns[1].Admin["block"] || !ns[2].Admin["stay"] || ns[0].Admin["block"] {
			t.Fatalf("%s: admin switches after restart: %+v", n, ns)
		}
	}
	after, _ := c.status("node3")
	if after.ClusterID != before.ClusterID || after.NodesTotal != 3 {
		t.Fatalf("status before %+v, after %+v", before, after)
	}
}

// TestStrangersAreRefused: an agent with a wrong token is refused; one
// with no token forms its own cluster and never enters ours; garbage on
// the cluster port and on the discovery port harms nothing.
func TestStrangersAreRefused(t *testing.T) {
	c := newClusterLab(t, "itstr", "10.213.13.0/24", "--nodes", "5", "--no-agents")
	for _, n := range three {
		c.must("start", n)
	}
	c.agree("node1", three, 10*time.Second)
	before, _ := c.status("node1")
	seed := "10.213.13.11:7700"

	// A well-formed token of another cluster.
	other := strings.TrimSpace(mustSSI(t, nil, "token", "create", "--offline"))
	wout := &syncBuffer{}
	wrong := c.background(wout, "exec", "node4", "--", ssiBin, "agent", "--node-name", "node4",
		"--join-token", other, "--join", seed)
	defer stop(t, wrong)
	eventually(t, "the wrong token to be refused", 20*time.Second, func() bool {
		return strings.Contains(wout.String(), "join refused") && strings.Contains(wout.String(), "token")
	})

	alone := c.background(nil, "exec", "node5", "--", ssiBin, "agent", "--node-name", "node5")
	defer stop(t, alone)
	eventually(t, "the tokenless agent to form its own cluster", 20*time.Second, func() bool {
		ns, ok := c.nodes("node5")
		return ok && len(ns) == 1 && ns[0].Name == "node5"
	})

	// Garbage to the cluster port: the server hangs up.
	r := c.ssi("exec", "node4", "--", "timeout", "20", "bash", "-c",
		"exec 3<>/dev/tcp/10.213.13.12/7700; head -c 65536 /dev/urandom >&3 2>/dev/null; cat <&3 >/dev/null")
	// cat ends at EOF (0) or on the reset that a close with unread
	// garbage sends (1); timeout's 124 means the server kept listening.
	if r.code != 0 && r.code != 1 {
		t.Errorf("the cluster port did not hang up on garbage (exit %d)", r.code)
	}
	// Garbage to the discovery port.
	c.must("exec", "node4", "--", "bash", "-c",
		"for i in 1 2 3 4 5; do head -c 512 /dev/urandom > /dev/udp/239.255.77.77/7701; done; "+
			`echo '{"v":1,"tag":"x","node":"evil","addr":"1.2.3.4:1","state":"member"}' > /dev/udp/239.255.77.77/7701`)

	for _, n := range three {
		c.agree(n, three, 10*time.Second)
	}
	after, _ := c.status("node1")
	if after.ClusterID != before.ClusterID || after.NodesTotal != 3 {
		t.Fatalf("the cluster changed: before %+v, after %+v", before, after)
	}
}

// TestPartition: cut one node of three off; the majority keeps working;
// after heal all agree, including on what was written meanwhile.
func TestPartition(t *testing.T) {
	c := newClusterLab(t, "itpart", "10.213.14.0/24", "--nodes", "3")
	c.agree("node1", three, 5*time.Second)
	c.must("partition", "node3")
	eventually(t, "node3 to show down on node1", 20*time.Second, func() bool {
		ns, ok := c.nodes("node1")
		return ok && len(ns) == 3 && ns[2].State == "down"
	})
	eventually(t, "the majority to accept a write", 20*time.Second, func() bool {
		return c.ssi("exec", "node1", "--", ssiBin, "debug", "admin", "expel", "1").code == 0
	})
	eventually(t, "node3 to know it lost quorum", 20*time.Second, func() bool {
		s, ok := c.status("node3")
		return ok && !s.Quorum
	})
	c.must("heal", "node3")
	for _, n := range three {
		ns := c.agree(n, three, 20*time.Second)
		if !ns[0].Admin["expel"] {
			t.Fatalf("%s does not have the write made during the partition: %+v", n, ns)
		}
	}
}

// TestVotersAndRemoval: the fourth node joins as a non-voter; when a
// voter dies the leader promotes it, and removes the dead node once it
// has been gone longer than cluster.remove_after.
func TestVotersAndRemoval(t *testing.T) {
	c := newClusterLabEnv(t, "itvote", []string{"SSI_LAB_SUBNET=10.213.15.0/24",
		// Agents inherit the lab's environment.
		"SSI_CLUSTER_REMOVE_AFTER=5s"}, "--nodes", "4")
	four := []string{"node1", "node2", "node3", "node4"}
	ns := c.agree("node2", four, 10*time.Second)
	if !ns[0].Voter || !ns[1].Voter || !ns[2].Voter || ns[3].Voter {
		t.Fatalf("want node1-3 voters and node4 not: %+v", ns)
	}
	c.must("kill", "node1")
	rest := []string{"node2", "node3", "node4"}
	eventually(t, "node1 removed and node4 promoted", 40*time.Second, func() bool {
		ns, ok := c.nodes("node3")
		if !ok || !liveAndExactly(ns, rest) {
			return false
		}
		for _, n := range ns {
			if !n.Voter {
				return false
			}
		}
		return true
	})
}

// TestClusterProcesses: a process started with `ssi run -d` on node1 is
// a cluster process every node's /cluster/proc shows, until it ends.
func TestClusterProcesses(t *testing.T) {
	c := newClusterLab(t, "itproc", "10.213.22.0/24", "--nodes", "3")
	c.agree("node1", three, 5*time.Second)
	cpid := strings.TrimSpace(c.must("exec", "node1", "--", ssiBin, "run", "-d", "--", "sleep", "1000"))
	if _, err := strconv.Atoi(cpid); err != nil {
		t.Fatalf("ssi run -d printed %q", cpid)
	}
	eventually(t, "node3 to list cpid "+cpid, 10*time.Second, func() bool {
		r := c.ssi("exec", "node3", "--", "ls", "/cluster/proc")
		return r.code == 0 && strings.TrimSpace(r.out) == cpid
	})
	if got := c.must("exec", "node3", "--", "cat", "/cluster/proc/"+cpid+"/where"); got != "node1\n" {
		t.Fatalf("where on node3: %q", got)
	}
	if got := c.must("exec", "node2", "--", "cat", "/cluster/proc/"+cpid+"/cmdline"); got != "sleep\x001000\x00" {
		t.Fatalf("cmdline on node2: %q", got)
	}
	// Its owner (root) pins it from node2; another user may not.
	c.must("exec", "node2", "--", "sh", "-c", "echo 1 > /cluster/proc/"+cpid+"/lock")
	eventually(t, "the lock to show on node3", 10*time.Second, func() bool {
		r := c.ssi("exec", "node3", "--", "cat", "/cluster/proc/"+cpid+"/lock")
		return r.out == "1\n"
	})
	r := c.ssi("exec", "node3", "--", "setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups",
		"bash", "-c", "echo 0 > /cluster/proc/"+cpid+"/lock")
	if r.code == 0 || !strings.Contains(r.err, "Permission denied") {
		t.Fatalf("another user's write to lock: %d %q", r.code, r.err)
	}
	// It ends (its command is killed where it runs): it leaves every node.
	c.must("exec", "node1", "--", "sh", "-c", "kill $(cat /proc/"+cpid+"/task/*/children)")
	eventually(t, "the ended process to leave node3's /cluster/proc", 10*time.Second, func() bool {
		r := c.ssi("exec", "node3", "--", "ls", "/cluster/proc")
		return r.code == 0 && strings.TrimSpace(r.out) == ""
	})
}
