package integration

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// memLow is the free-memory fraction under which the test's nodes usher
// a process away. The default, 0.1, is 51 MiB of a 512 MiB node: a
// process that reaches 400 MiB beside the node's own 40-50 MiB leaves
// about 60 MiB and would never be moved, and one that grows on would be
// caught with 51 MiB left for up to three seconds of growth (a sample up
// to an interval old, a round up to an interval away, the move's start)
// and CRIU's own memory. 0.3 (154 MiB) leaves room for more than 5 s at
// the test's 20 MiB/s.
const memLow = "0.3"

// TestBalanceMemory (issue 13, memory ushering): a node with a 512 MiB
// memory limit sends away a process of uid 1000 growing to 400 MiB
// before the OOM killer kills anything; the process goes on elsewhere
// with its memory intact (every check of its pattern passes, its count
// goes on from where it was) and stays there.
func TestBalanceMemory(t *testing.T) {
	c := newClusterLabEnv(t, "itmem", []string{"SSI_LAB_SUBNET=10.213.93.0/24", "SSI_BALANCE_ENABLED=true",
		"SSI_BALANCE_MEM_LOW=" + memLow}, "--nodes", "3", "--mem-limit", "512M,2G,2G")
	c.agree("node1", three, 30*time.Second)
	b := &balLab{migLab: &migLab{clusterLab: c, dir: t.TempDir()}, u: asUser{1000, "-uid1000"}}
	checkLimitSeen(t, c)
	resetPeak(t, c.name, "node1")
	oomBefore := oomKills(t, c.name)

	home := b.homeOf(t, b.u)
	file := homeRel(home, "grow.txt")
	// 2 MiB every 100 ms: about 20 MiB/s, 400 MiB in 20 s.
	// Its stderr in a file: a Go program's stacks, if it hangs (SIGQUIT).
	cpid := b.runDetachedAs(t, b.u, "node1", "sh", "-c", "SSI_ITEST_HELPER=mem exec "+testBin+
		" 400 /cluster/home/"+file+" 2 2>/cluster/home/"+file+".err")
	defer b.killAll([]string{cpid})
	g := grower{b: b, file: file, cpid: cpid}
	var at string
	eventually(t, "the growing process to leave node1", 2*time.Minute, func() bool {
		g.lines(t)
		at = b.where("node2", cpid)
		return at != "node1" && at != ""
	})
	movedAt, movedSize := g.lines(t)
	t.Logf("%s moved to %s at line %d, %d MiB; node1's peak use %d MiB of 512", cpid, at, movedAt, movedSize,
		peakUse(t, c.name, "node1")>>20)

	// It goes on there, memory intact, to its full size and beyond.
	g.countsOn(t, movedAt+20)
	if got := b.where("node3", cpid); got != at {
		t.Fatalf("the process went on from %s to %s", at, got)
	}
	if n := strings.TrimSpace(b.must("exec", "node1", "--", "cat", "/cluster/proc/"+cpid+"/nmigs")); n != "1" {
		t.Errorf("the process moved %s times, want once", n)
	}
	var explained bool
	for _, r := range b.explain(t, "node2") {
		if r.Action == "moved" && strconv.Itoa(r.CPID) == cpid && r.Kind == "memory" && r.From == "node1" && r.To == at {
			explained = true
			t.Logf("ssi balance --explain: %s -> %s: %s", r.From, r.To, r.Why)
		}
	}
	if !explained {
		t.Errorf("ssi balance --explain lists no memory move of %s from node1 to %s", cpid, at)
	}
	if after := oomKills(t, c.name); after != oomBefore {
		t.Errorf("OOM kills went from %v to %v", oomBefore, after)
	}
}

// grower is the test's growing process: cpid, writing its lines to file
// (relative to /cluster/home), its stderr to file.err.
type grower struct {
	b          *balLab
	file, cpid string
}

// lines reads the grower's file on node3: how many lines, in order,
// and the size the last one reports; it fails the test if a check of
// its memory failed.
func (g grower) lines(t *testing.T) (n, size int) {
	t.Helper()
	text := g.b.must("exec", "node3", "--", "cat", "/cluster/home/"+g.file)
	// A read while the file grows on another node has been seen to end
	// in NUL bytes where the last line was being appended (a bug of
	// /cluster/home of its own): the test reads up to the last whole
	// line, and says so.
	if trimmed := strings.TrimRight(text, "\x00"); trimmed != text {
		t.Logf("a read of %s ended in %d NUL bytes", g.file, len(text)-len(trimmed))
		text = trimmed
	}
	text = text[:strings.LastIndexByte(text, '\n')+1]
	n, ok := countsInOrder(text)
	if !ok || strings.Contains(text, " bad ") {
		t.Fatalf("%s: not 1..n in order, or a check failed:\n%s", g.file, text)
	}
	if l := strings.Fields(lastLine(text)); len(l) == 3 {
		size, _ = strconv.Atoi(l[2])
	}
	return n, size
}

// countsOn waits until the grower has reached 400 MiB and written more
// than n lines; if it hangs, the test fails with its goroutines' stacks.
func (g grower) countsOn(t *testing.T, n int) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if got, size := g.lines(t); size == 400 && got > n {
			return
		}
		if time.Now().After(deadline) {
			g.b.ssi(g.b.u.cmd("node1", ssiBin, "kill", "-s", "QUIT", g.cpid)...)
			var stacks string
			for end := time.Now().Add(5 * time.Second); time.Now().Before(end) && !strings.Contains(stacks, "goroutine"); {
				stacks = g.b.ssi("exec", "node3", "--", "cat", "/cluster/home/"+g.file+".err").out
			}
			t.Fatalf("the process did not count on to 400 MiB after its move; its stacks:\n%s", stacks)
		}
	}
}

// checkLimitSeen: the cluster sees node1's memory as its 512 MiB limit,
// with less free than that.
func checkLimitSeen(t *testing.T, c *clusterLab) {
	t.Helper()
	var nodes []struct {
		Name     string `json:"name"`
		MemTotal uint64 `json:"mem_total"`
		MemFree  uint64 `json:"mem_free"`
	}
	eventually(t, "node2 to see node1's memory limit", 30*time.Second, func() bool {
		if !c.on("node2", &nodes, "nodes", "--json") {
			return false
		}
		for _, n := range nodes {
			if n.Name == "node1" && n.MemTotal == 512<<20 && n.MemFree > 0 && n.MemFree < n.MemTotal {
				return true
			}
		}
		return false
	})
}

// memCgroup is node's memory cgroup: cgroup v1's memory hierarchy, or
// the v2 tree.
func memCgroup(lab, node string) string {
	if d := filepath.Join("/sys/fs/cgroup/memory/ssi-lab", lab, node); isDir(d) {
		return d
	}
	return filepath.Join("/sys/fs/cgroup/ssi-lab", lab, node)
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// resetPeak starts node's peak memory use afresh (v1 only; v2's
// memory.peak counts from the cgroup's birth).
func resetPeak(t *testing.T, lab, node string) {
	f := filepath.Join(memCgroup(lab, node), "memory.max_usage_in_bytes")
	if err := os.WriteFile(f, []byte("0"), 0o644); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
}

// peakUse is the most node's memory cgroup ever charged.
func peakUse(t *testing.T, lab, node string) uint64 {
	for _, f := range []string{"memory.max_usage_in_bytes", "memory.peak"} {
		if b, err := os.ReadFile(filepath.Join(memCgroup(lab, node), f)); err == nil {
			n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
			return n
		}
	}
	t.Fatalf("no peak memory use for %s", node)
	return 0
}

// oomKills counts the kernel's OOM kills: the machine's (/proc/vmstat),
// and those in each of the lab's memory cgroups (v1 counts a kill in the
// victim's own cgroup, a job's or the node's: memory.oom_control; v2
// counts it up the tree: memory.events).
func oomKills(t *testing.T, lab string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/vmstat")
	if err != nil {
		t.Fatal(err)
	}
	machine := counter(string(b), "oom_kill")
	perNode := map[string]int{}
	for _, node := range three {
		_ = filepath.WalkDir(memCgroup(lab, node), func(p string, e fs.DirEntry, err error) error {
			if err != nil || e.IsDir() || e.Name() != "memory.oom_control" && e.Name() != "memory.events" {
				return nil
			}
			b, _ := os.ReadFile(p)
			if filepath.Dir(p) == memCgroup(lab, node) || e.Name() == "memory.oom_control" {
				perNode[node] += counter(string(b), "oom_kill")
			}
			return nil
		})
	}
	return fmt.Sprintf("machine %d, lab %v", machine, perNode)
}

// counter reads "key N" from a kernel's key-value file.
func counter(text, key string) int {
	for _, l := range strings.Split(text, "\n") {
		if v, ok := strings.CutPrefix(l, key+" "); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(v))
			return n
		}
	}
	return 0
}
