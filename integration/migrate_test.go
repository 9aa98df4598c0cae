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
		// mem MiB FILE: fill MiB of memory with a pattern, then append
		// "N ok" (or "N bad") to FILE every 100 ms after checking it.
		mib, _ := strconv.Atoi(args[0])
		buf := make([]byte, mib<<20)
		for i := range buf {
			buf[i] = byte(i*7 + i>>12)
		}
		f, err := os.OpenFile(args[1], os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
		if err != nil {
			return 1
		}
		for n := 1; ; n++ {
			state := "ok"
			for i := 0; i < len(buf); i += 4093 {
				if buf[i] != byte(i*7+i>>12) {
					state = "bad"
				}
			}
			fmt.Fprintf(f, "%d %s\n", n, state)
			time.Sleep(100 * time.Millisecond)
		}
	}
	return 2
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

// TestMigration: real CRIU moves of real processes between the nodes of
// a 3-node lab.
func TestMigration(t *testing.T) {
	c := newClusterLab(t, "itmig", "10.213.23.0/24", "--nodes", "3")
	c.agree("node1", three, 10*time.Second)
	m := &migLab{clusterLab: c, dir: t.TempDir()}
	// The tests' normal user runs the scripts there too.
	for p := m.dir; p != os.TempDir() && p != "/"; p = filepath.Dir(p) {
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}

	for _, u := range asWhom {
		t.Run("counter hops node1 node2 node3 home"+u.suffix, func(t *testing.T) {
			m := &migLab{clusterLab: c.with(t), dir: m.dir}
			home := m.homeOf(t, u)
			counter := m.counter(t, "counter"+u.suffix+".sh", home+"/hops.txt")
			before := committedMoves(t, c)
			cpid := m.runDetachedAs(t, u, "node1", counter)
			n := m.waitGrows(t, "node1", homeRel(home, "hops.txt"), 3)
			for _, hop := range []struct{ from, target, want string }{
				{"node3", "node2", "node2"}, {"node1", "node3", "node3"}, {"node2", "home", "node1"},
			} {
				m.must(u.cmd(hop.from, "sh", "-c", "echo "+hop.target+" > /cluster/proc/"+cpid+"/where")...)
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
			// Each node was the source of one move: its metrics say so.
			if got := committedMoves(t, c); got != before+1 {
				t.Fatalf("node2's metrics count %d committed moves, want %d", got, before+1)
			}
			m.must(u.cmd("node3", ssiBin, "kill", "-s", "KILL", cpid)...)
			r := m.ssi(u.cmd("node2", ssiBin, "wait", cpid)...)
			if r.code != 128+9 {
				t.Fatalf("ssi wait after kill -9: exit %d (%s)", r.code, r.err)
			}
			final := m.must("exec", "node2", "--", "cat", home+"/hops.txt")
			if _, ok := countsInOrder(final); !ok {
				t.Fatalf("hops.txt is not 1..n in order:\n%s", final)
			}
		})
	}

	for _, u := range asWhom {
		t.Run("attached stdio follows the process"+u.suffix, func(t *testing.T) {
			m := &migLab{clusterLab: c.with(t), dir: m.dir}
			name := "echo" + u.suffix + ".sh"
			echo := m.script(t, name, "while read -r l; do echo \"got $l\"; done\nexit 7\n")
			cmd := exec.Command(ssiBin, m.args(u.cmd("node1", ssiBin, "run", "--", echo)...)...)
			cmd.Env = append(os.Environ(), m.env...)
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			stdin, err := cmd.StdinPipe()
			if err != nil {
				t.Fatal(err)
			}
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			var stderr syncBuffer
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer stop(t, cmd)
			lines := newLineReader(stdout)
			next := 0
			exchange := func(k int) {
				for i := 0; i < k; i++ {
					next++
					fmt.Fprintf(stdin, "line %d\n", next)
					got, err := lines.next(time.Minute)
					if err != nil || got != fmt.Sprintf("got line %d\n", next) {
						t.Fatalf("reply to line %d: %q %v (stderr %s)", next, got, err, stderr.String())
					}
				}
			}
			exchange(3)
			cpid := m.cpidOf(t, name)
			m.must(u.cmd("node1", ssiBin, "migrate", cpid, "node2")...)
			// Lines sent while it is away are not lost either.
			fmt.Fprintf(stdin, "line %d\n", next+1)
			m.must(u.cmd("node3", ssiBin, "migrate", cpid, "node3")...)
			got, err := lines.next(time.Minute)
			next++
			if err != nil || got != fmt.Sprintf("got line %d\n", next) {
				t.Fatalf("reply to line %d sent during the moves: %q %v", next, got, err)
			}
			exchange(3)
			stdin.Close()
			rest, err := lines.rest(time.Minute)
			if err != nil {
				t.Fatalf("after stdin closed: %v (output %q, stderr %s)", err, rest, stderr.String())
			}
			if len(rest) != 0 {
				t.Fatalf("extra output: %q", rest)
			}
			err = waitFor(cmd, time.Minute)
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 7 {
				t.Fatalf("ssi run exit: %v, want 7 (stderr %s)", err, stderr.String())
			}
		})
	}

	t.Run("ctrl-c reaches an attached process after a move", func(t *testing.T) {
		m := &migLab{clusterLab: c.with(t), dir: m.dir}
		script := m.script(t, "trapint.sh", "trap 'echo caught INT; exit 42' INT\necho ready\nwhile :; do sleep 0.1; done\n")
		cmd := exec.Command(ssiBin, m.args("exec", "node2", "--", ssiBin, "run", "--", script)...)
		cmd.Env = append(os.Environ(), m.env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer stop(t, cmd)
		lines := newLineReader(stdout)
		if l, err := lines.next(time.Minute); err != nil || l != "ready\n" {
			t.Fatalf("first line: %q %v", l, err)
		}
		cpid := m.cpidOf(t, "trapint.sh")
		m.must("exec", "node1", "--", ssiBin, "migrate", cpid, "node3")
		// The caller's ssi run (inside node2) gets the ^C.
		pg, err := run(cmdTimeout, nil, nil, "pgrep", "-f", "^"+regexpQuote(ssiBin)+" run -- "+regexpQuote(script))
		out := pg.out
		if err == nil && pg.code != 0 {
			err = fmt.Errorf("pgrep: exit %d", pg.code)
		}
		pids := strings.Fields(out)
		if err != nil || len(pids) != 1 {
			t.Fatalf("finding ssi run: %q %v", out, err)
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
	})

	for _, u := range asWhom {
		t.Run("a tree with a pipe and a daemon move"+u.suffix, func(t *testing.T) {
			m := &migLab{clusterLab: c.with(t), dir: m.dir}
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
			m.must(u.cmd("node1", "sh", "-c", "echo node2 > /cluster/proc/"+dcpid+"/where")...)
			m.waitGrows(t, "node2", homeRel(home, "daemon.txt"), n+3)
			m.must(u.cmd("node1", ssiBin, "kill", "--all", cpid)...)
			m.must(u.cmd("node1", ssiBin, "kill", dcpid)...)
			// The tree's leader dies of the TERM; the daemon's leader had
			// exited 0 long before its child got the TERM.
			for p, want := range map[string]int{cpid: 128 + 15, dcpid: 0} {
				if r := m.ssi(u.cmd("node3", ssiBin, "wait", p)...); r.code != want {
					t.Fatalf("ssi wait %s: exit %d, want %d (%s)", p, r.code, want, r.err)
				}
			}
		})
	}

	t.Run("bad requests harm nothing", func(t *testing.T) {
		m := &migLab{clusterLab: c.with(t), dir: m.dir}
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
			_, msg, _ := strings.Cut(strings.TrimSpace(r.err), "write error: ")
			return msg
		}
		for _, tc := range []struct {
			value, want string
			user        bool
		}{
			{"\x01garbage\n", "Invalid argument", false},
			{"node9\n", "Invalid argument", false},
			{"node1\n", "Invalid argument", false},
			{"node2\n", "Operation not permitted", true},
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
	})

	t.Run("admin switches", func(t *testing.T) {
		m := &migLab{clusterLab: c.with(t), dir: m.dir}
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
	})

	t.Run("a restarted agent adopts its processes", func(t *testing.T) {
		m := &migLab{clusterLab: c.with(t), dir: m.dir}
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
		m.must("exec", "node3", "--", ssiBin, "kill", cpid)
		if r := m.ssi("exec", "node3", "--", ssiBin, "wait", cpid); r.code != 128+15 {
			t.Fatalf("ssi wait: %d %s", r.code, r.err)
		}
	})

	t.Run("a destination agent crashes mid-arrival", func(t *testing.T) {
		m := &migLab{clusterLab: c.with(t), dir: m.dir}
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
		m.must("exec", "node3", "--", ssiBin, "kill", "-s", "KILL", cpid)
		eventually(t, "the process to end", 20*time.Second, func() bool { return copies() == 0 })
	})

	t.Run("destination dies mid-move", func(t *testing.T) {
		m := &migLab{clusterLab: c.with(t), dir: m.dir}
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
	})
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
