package integration

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// progLab runs the test user's programs on a lab.
type progLab struct {
	*migLab
	addrs map[string]string // node name -> IP address
}

// progArgv is argv run as the test user in dir, with a plain environment.
func progArgv(dir string, argv ...string) []string {
	return append([]string{"setpriv", "--reuid", progUID, "--regid", progUID, "--clear-groups",
		"env", "PATH=/usr/bin:/bin", "HOME=" + progHome, "sh", "-c", `cd "$0" && exec "$@"`, dir}, argv...)
}

// user runs argv in node as the test user, in dir.
func (p *progLab) user(node, dir string, argv ...string) result {
	p.t.Helper()
	return p.ssi(append([]string{"exec", node, "--"}, progArgv(dir, argv...)...)...)
}

// mustUser is user, failing the test unless argv exits 0.
func (p *progLab) mustUser(node, dir string, argv ...string) string {
	p.t.Helper()
	r := p.user(node, dir, argv...)
	if r.code != 0 {
		p.t.Fatalf("as uid %s on %s: %s: exit %d\nstdout: %s\nstderr: %s", progUID, node, strings.Join(argv, " "), r.code, r.out, r.err)
	}
	return r.out
}

// writeWhere writes to (a node's name) to cpid's where file, as the test
// user on node, and returns the errno the write got: 0 if it moved.
func (p *progLab) writeWhere(node, cpid, to string) int {
	p.t.Helper()
	out := p.mustUser(node, progHome, "python3", "-c", whereWritePy, "/cluster/proc/"+cpid+"/where", to)
	n, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		p.t.Fatalf("writing where: %q", out)
	}
	return n
}

// move moves cpid to to as the test user, from node, by writing to where
// or with ssi migrate, and checks that another node agrees where it is.
func (p *progLab) move(how, node, cpid, to string) {
	p.t.Helper()
	start := time.Now()
	switch how {
	case "where":
		if e := p.writeWhere(node, cpid, to); e != 0 {
			p.t.Fatalf("moving %s to %s by its where file from %s: errno %d (%v); cantmove: %q", cpid, to, node, e,
				errnoName(e), p.reason(node, cpid))
		}
	default:
		if r := p.user(node, progHome, ssiBin, "migrate", cpid, to); r.code != 0 {
			p.t.Fatalf("ssi migrate %s %s from %s: exit %d: %s; cantmove: %q", cpid, to, node, r.code,
				strings.TrimSpace(r.err), p.reason(node, cpid))
		}
	}
	p.t.Logf("moved %s to %s (%s from %s) in %v", cpid, to, how, node, time.Since(start).Round(time.Millisecond))
	other := "node1"
	if to == "node1" {
		other = "node2"
	}
	if got := p.where(other, cpid); got != to {
		p.t.Fatalf("after its move to %s, where on %s reads %q", to, other, got)
	}
}

func errnoName(e int) string {
	return syscall.Errno(e).Error()
}

func (p *progLab) cantmove(node, cpid string) string {
	return strings.TrimSpace(p.ssi("exec", node, "--", "cat", "/cluster/proc/"+cpid+"/cantmove").out)
}

// reason is cantmove for a failure message: given a few seconds to say
// why, since it may lag behind a failed move (the check after such a
// move is the fail-dump test's).
func (p *progLab) reason(node, cpid string) string {
	deadline := time.Now().Add(3 * time.Second)
	for {
		cm := p.cantmove(node, cpid)
		if cm != "" || time.Now().After(deadline) {
			return cm
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// program is one attached `ssi run` of the test user's: its stdin, its
// output line by line, and its end.
type program struct {
	t     *testing.T
	cmd   *exec.Cmd
	in    io.WriteCloser
	out   *lineReader
	name  string
	cpid  string
	ended bool
}

// start runs argv attached with ssi run, as the test user, in dir on
// node1; name (a word of argv no other program has) finds its cpid.
func (p *progLab) start(t *testing.T, dir, name string, argv ...string) *program {
	t.Helper()
	a := append([]string{"exec", "node1", "--"}, progArgv(dir, append([]string{ssiBin, "run", "--"}, argv...)...)...)
	cmd, in, out := p.attached(t, a...)
	pr := &program{t: t, cmd: cmd, in: in, out: out, name: name}
	t.Cleanup(func() {
		if !pr.ended {
			stop(t, cmd)
		}
	})
	pr.cpid = p.cpidOf(t, name)
	return pr
}

// line waits for the program's next line of output.
func (pr *program) line(d time.Duration) string {
	pr.t.Helper()
	l, err := pr.out.next(d)
	if err != nil {
		pr.t.Fatalf("%s (cpid %s): no line of output: %v", pr.name, pr.cpid, err)
	}
	return strings.TrimSuffix(l, "\n")
}

// ask sends a line to the program and returns its answer.
func (pr *program) ask(s string) string {
	pr.t.Helper()
	if _, err := io.WriteString(pr.in, s+"\n"); err != nil {
		pr.t.Fatalf("%s: writing to its stdin: %v", pr.name, err)
	}
	return pr.line(time.Minute)
}

// end closes its stdin and returns the rest of its output and its exit
// code, as ssi run reports it.
func (pr *program) end(d time.Duration) (string, int) {
	pr.t.Helper()
	pr.in.Close()
	rest, err := pr.out.rest(d)
	if err != nil {
		pr.t.Fatalf("%s: waiting for its output to end: %v (so far %q)", pr.name, err, rest)
	}
	err = waitFor(pr.cmd, d)
	pr.ended = true
	var ee *exec.ExitError
	switch {
	case err == nil:
		return rest, 0
	case errors.As(err, &ee):
		return rest, ee.ExitCode()
	}
	pr.t.Fatalf("%s: ssi run did not end: %v", pr.name, err)
	return rest, -1
}

// restartAgent restarts node's agent alone with env added (what runs in
// the node goes on) and waits until the cluster agrees again.
func (p *progLab) restartAgent(t *testing.T, node string, env ...string) {
	t.Helper()
	// killAgent returns once the agent's last thread is gone.
	p.killAgent(t, node)
	if r := ssi(t, append(append([]string{}, p.env...), env...), p.args("start", node)...); r.code != 0 {
		t.Fatalf("lab start %s %v: %s", node, env, r.err)
	}
	p.clusterLab.with(t).agree("node2", three, 30*time.Second)
}

// readOr is the file's content, or "" if it cannot be read.
func readOr(path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

// homeFile reads a file of the test user's directory on node.
func (p *progLab) homeFile(node, rel string) string {
	return p.ssi("exec", node, "--", "cat", filepath.Join(progHome, rel)).out
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}
