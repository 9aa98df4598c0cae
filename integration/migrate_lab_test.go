package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Helper programs the migration tests run as cluster processes: this
// test binary again, chosen by SSI_ITEST_HELPER (see helperMain).
func init() {
	if h := os.Getenv("SSI_ITEST_HELPER"); h != "" {
		os.Exit(helperMain(h, os.Args[1:]))
	}
}

func helperMain(name string, args []string) int {
	switch name {
	case "holdwrite":
		return holdWrite(args)
	case "mem":
		return memHelper(args)
	}
	return 2
}

// memHelper is `mem MiB FILE [STEP]`: fill MiB of memory with a
// pattern (with STEP, growing to it by STEP MiB every 100 ms), and every
// 100 ms append "N ok SIZE" (or "N bad SIZE") to FILE after checking all
// of it, SIZE in MiB.
func memHelper(args []string) int {
	mib, _ := strconv.Atoi(args[0])
	step := mib
	if len(args) > 2 {
		step, _ = strconv.Atoi(args[2])
	}
	f, err := os.OpenFile(args[1], os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return 1
	}
	pattern := func(chunk, i int) byte { return byte(i*7 + i>>12 + chunk*13) }
	var chunks [][]byte
	size := 0
	for n := 1; ; n++ {
		if grow := min(step, mib-size); grow > 0 {
			buf := make([]byte, grow<<20)
			for i := range buf {
				buf[i] = pattern(len(chunks), i)
			}
			chunks = append(chunks, buf)
			size += grow
		}
		state := "ok"
		for c, buf := range chunks {
			for i := 0; i < len(buf); i += 4093 {
				if buf[i] != pattern(c, i) {
					state = "bad"
				}
			}
		}
		fmt.Fprintf(f, "%d %s %d\n", n, state, size)
		// A sleep of its own, as the shell counters take: a Go program
		// CRIU restored here has been seen to hang in its first sleep
		// after the move (time.Sleep, and syscall.Nanosleep too: a
		// 100 ms nanosleep still under way a minute later), a bug of
		// the move that is not what this helper's tests are about.
		_ = exec.Command("sleep", "0.1").Run()
	}
}

// openToAll lets every user reach dir: its parents below the temporary
// directory become 0755 (t.TempDir makes them 0700), so that the tests'
// normal user runs scripts and writes files there.
func openToAll(t *testing.T, dir string) {
	t.Helper()
	for p := dir; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
}

// interruptRun sends ^C to the one `ssi run` whose command line starts
// with prefix (as the host's pgrep sees it), then expects its process,
// trapping INT, to say "caught INT" on lines and exit 42 through cmd.
func interruptRun(t *testing.T, prefix string, lines *lineReader, cmd *exec.Cmd) {
	t.Helper()
	pg, err := run(cmdTimeout, nil, nil, "pgrep", "-f", "^"+prefix)
	if err == nil && pg.code != 0 {
		err = fmt.Errorf("pgrep: exit %d", pg.code)
	}
	pids := strings.Fields(pg.out)
	if err != nil || len(pids) != 1 {
		t.Fatalf("finding ssi run: %q %v", pg.out, err)
	}
	pid, _ := strconv.Atoi(pids[0])
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if l, err := lines.next(time.Minute); err != nil || l != "caught INT\n" {
		t.Fatalf("after ^C: %q %v", l, err)
	}
	err = waitFor(cmd, time.Minute)
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 42 {
		t.Fatalf("ssi run exit: %v, want 42", err)
	}
}

// countsInOrder reports whether lines are "1".."n" (first field), each
// once and in order, and returns n.
func countsInOrder(text string) (int, bool) {
	n := 0
	if strings.TrimSpace(text) == "" {
		return 0, true
	}
	for _, l := range strings.Split(strings.TrimSpace(text), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 {
			return n, false
		}
		v, err := strconv.Atoi(f[0])
		if err != nil || v != n+1 {
			return n, false
		}
		n = v
	}
	return n, true
}

type migLab struct {
	*clusterLab
	dir string // scripts, shared by every node (the host's file system)
}

func (m *migLab) where(node, cpid string) string {
	r := m.ssi("exec", node, "--", "cat", "/cluster/proc/"+cpid+"/where")
	return strings.TrimSpace(r.out)
}

// waitGrows waits until the file in /cluster/home holds more than n
// counted lines, in order, and returns the new count.
func (m *migLab) waitGrows(t *testing.T, node, file string, n int) int {
	t.Helper()
	var got int
	eventually(t, fmt.Sprintf("%s to grow past %d lines on %s", file, n, node), 20*time.Second, func() bool {
		r := m.ssi("exec", node, "--", "cat", "/cluster/home/"+file)
		c, ok := countsInOrder(r.out)
		if !ok {
			t.Fatalf("%s on %s is not 1..n in order:\n%s", file, node, r.out)
		}
		got = c
		return c > n
	})
	return got
}

func (m *migLab) script(t *testing.T, name, body string) string {
	t.Helper()
	p := filepath.Join(m.dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/bash\n"+body), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// counter writes a script that appends 1, 2, 3... to file, one line every
// 100 ms, and returns its path.
func (m *migLab) counter(t *testing.T, name, file string) string {
	return m.script(t, name, "i=0\nwhile :; do i=$((i+1)); echo $i >> "+file+"; sleep 0.1; done\n")
}

func (m *migLab) runDetached(t *testing.T, node string, argv ...string) string {
	t.Helper()
	out := m.must(append([]string{"exec", node, "--", ssiBin, "run", "-d", "--"}, argv...)...)
	cpid := strings.TrimSpace(out)
	if _, err := strconv.Atoi(cpid); err != nil {
		t.Fatalf("ssi run -d printed %q", out)
	}
	return cpid
}

// asUser is who runs a test's commands inside a node: root, or a normal
// user (uid 1000, no groups, a plain PATH) as ssi's users are.
type asUser struct {
	uid    int
	suffix string // test and file names
}

var asWhom = []asUser{{0, ""}, {1000, "-uid1000"}}

// cmd is `lab exec node -- argv` as u.
func (u asUser) cmd(node string, argv ...string) []string {
	out := []string{"exec", node, "--"}
	if u.uid != 0 {
		id := strconv.Itoa(u.uid)
		out = append(out, "setpriv", "--reuid", id, "--regid", id, "--clear-groups",
			"env", "PATH=/usr/bin:/bin", "HOME=/cluster/home/u"+id)
	}
	return append(out, argv...)
}

// from is where u asks for something done to a process homed on home:
// on node, except that root asks on home. A node's root is root only
// over the processes that node holds or is the home of (the trust
// model): another node's root acts on them as nobody.
func (u asUser) from(node, home string) string {
	if u.uid == 0 {
		return home
	}
	return node
}

// homeOf is u's own directory of /cluster/home (root's is the home's top).
func (m *migLab) homeOf(t *testing.T, u asUser) string {
	t.Helper()
	if u.uid == 0 {
		return "/cluster/home"
	}
	d := "/cluster/home/u" + strconv.Itoa(u.uid)
	m.must("exec", "node1", "--", "sh", "-c", "mkdir -p "+d+" && chown "+strconv.Itoa(u.uid)+":"+strconv.Itoa(u.uid)+" "+d)
	return d
}

// homeRel names file name of directory home relative to /cluster/home.
func homeRel(home, name string) string {
	return strings.TrimPrefix(strings.TrimPrefix(home, "/cluster/home")+"/"+name, "/")
}

func (m *migLab) runDetachedAs(t *testing.T, u asUser, node string, argv ...string) string {
	t.Helper()
	out := m.must(u.cmd(node, append([]string{ssiBin, "run", "-d", "--"}, argv...)...)...)
	cpid := strings.TrimSpace(out)
	if _, err := strconv.Atoi(cpid); err != nil {
		t.Fatalf("ssi run -d printed %q", out)
	}
	return cpid
}

// committedMoves reads node2's count of committed moves from its metrics.
func committedMoves(t *testing.T, c *clusterLab) int {
	t.Helper()
	hc := http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join("/var/lib/ssi-lab", c.name, "node2", "run", "agent.sock"))
	}}}
	resp, err := hc.Get("http://agent/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	const key = `ssi_migrations_total{outcome="committed"} `
	for _, l := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("metrics: %q", l)
			}
			return n
		}
	}
	return 0
}

// checkListedMoves fails the test unless `ssi migrations --json` on
// node3 lists three committed moves of cpid, each with the time it was
// frozen and the bytes it moved.
func checkListedMoves(t *testing.T, m *migLab, cpid string) {
	t.Helper()
	var moves []struct {
		CPID      int   `json:"cpid"`
		Committed bool  `json:"committed"`
		Frozen    int64 `json:"frozen"`
		Bytes     int64 `json:"bytes"`
	}
	if !m.on("node3", &moves, "migrations", "--json") {
		t.Fatal("ssi migrations --json failed")
	}
	done := 0
	for _, mv := range moves {
		if strconv.Itoa(mv.CPID) == cpid && mv.Committed && mv.Frozen > 0 && mv.Bytes > 0 {
			done++
		}
	}
	if done != 3 {
		t.Fatalf("ssi migrations lists %d committed moves of %s with times and bytes, want 3: %+v", done, cpid, moves)
	}
}

// hostCounts returns a reader of a counter's file on the host: its
// count, failing the test unless the lines are 1..n, each once, in order
// (a process that ran twice or restarted would break that).
func hostCounts(t *testing.T, path string) func() int {
	return func() int {
		b, _ := os.ReadFile(path)
		n, ok := countsInOrder(string(b))
		if !ok {
			t.Fatalf("%s is not 1..n in order:\n%s", filepath.Base(path), b)
		}
		return n
	}
}

// killAgent SIGKILLs node's agent alone (if it still runs): what runs
// in the node goes on.
func (m *migLab) killAgent(t *testing.T, node string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/var/lib/ssi-lab", m.name, node, "agent.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && err != syscall.ESRCH {
		t.Fatal(err)
	}
	// Dead means every thread gone (the leader is a zombie before the
	// others): until then it holds its socket and data directory, and a
	// new agent started meanwhile cannot run.
	eventually(t, node+"'s killed agent to exit", 20*time.Second, func() bool {
		tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
		return err != nil || len(tasks) == 1 && strings.Contains(readOr(fmt.Sprintf("/proc/%d/status", pid)), "State:\tZ")
	})
}

// cpidOf finds the cpid of the process whose command line mentions name.
func (m *migLab) cpidOf(t *testing.T, name string) string {
	t.Helper()
	var cpid string
	eventually(t, "the process to be listed", 10*time.Second, func() bool {
		var ps []struct {
			CPID int      `json:"cpid"`
			Argv []string `json:"argv"`
		}
		r := m.ssi("exec", "node1", "--", ssiBin, "ps", "--json")
		if r.code != 0 || json.Unmarshal([]byte(r.out), &ps) != nil {
			return false
		}
		for _, p := range ps {
			if strings.Contains(strings.Join(p.Argv, " "), name) {
				cpid = strconv.Itoa(p.CPID)
				return true
			}
		}
		return false
	})
	return cpid
}

func regexpQuote(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`\.+*?()|[]{}^$`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
