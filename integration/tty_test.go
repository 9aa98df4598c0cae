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

// tmuxPane is one tmux window on a server of the test's own (its own
// socket), driven as a user at a terminal would: keys in, the screen out.
type tmuxPane struct {
	t      *testing.T
	socket string
}

// tmuxTimeout bounds every tmux command.
const tmuxTimeout = 10 * time.Second

func newTmuxPane(t *testing.T, socket string, cols, rows int, command string) *tmuxPane {
	t.Helper()
	p := &tmuxPane{t: t, socket: socket}
	p.tmux("kill-server") // one left by an earlier run
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("the terminal at the end:\n%s", p.screen())
		}
		p.tmux("kill-server")
	})
	if r := p.tmux("-f", "/dev/null", "new-session", "-d", "-s", "tty", "-x", strconv.Itoa(cols), "-y", strconv.Itoa(rows), command); r.code != 0 {
		t.Fatalf("tmux new-session: %s", r.err)
	}
	return p
}

func (p *tmuxPane) tmux(args ...string) result {
	p.t.Helper()
	r, err := run(tmuxTimeout, nil, nil, "tmux", append([]string{"-L", p.socket}, args...)...)
	if err != nil {
		p.t.Fatal(err)
	}
	return r
}

// typeLine types s and Enter; keys sends tmux key names (C-c).
func (p *tmuxPane) typeLine(s string) {
	p.t.Helper()
	p.tmux("send-keys", "-t", "tty", "-l", s)
	p.keys("Enter")
}

func (p *tmuxPane) keys(k ...string) {
	p.t.Helper()
	if r := p.tmux(append([]string{"send-keys", "-t", "tty"}, k...)...); r.code != 0 {
		p.t.Fatalf("tmux send-keys %v: %s", k, r.err)
	}
}

// screen is the pane's text, its scrolled-off history too, wrapped lines
// joined.
func (p *tmuxPane) screen() string {
	return p.tmux("capture-pane", "-p", "-J", "-S", "-2000", "-t", "tty").out
}

// waitFor waits until the pane shows want (or any of also) and returns
// the screen.
func (p *tmuxPane) waitFor(want string, d time.Duration, also ...string) string {
	p.t.Helper()
	var s string
	eventually(p.t, fmt.Sprintf("the terminal to show %q", append([]string{want}, also...)), d, func() bool {
		s = p.screen()
		for _, w := range append([]string{want}, also...) {
			if strings.Contains(s, w) {
				return true
			}
		}
		return false
	})
	return s
}

// waitPrompt waits until the pane's last line is prompt (a shell waits
// for its next command there).
func (p *tmuxPane) waitPrompt(prompt string, d time.Duration) {
	p.t.Helper()
	eventually(p.t, fmt.Sprintf("the prompt %q", prompt), d, func() bool {
		lines := strings.Split(strings.TrimRight(p.screen(), "\n "), "\n")
		return strings.TrimRight(lines[len(lines)-1], " ") == strings.TrimRight(prompt, " ")
	})
}

// size is the pane's size as tmux gives it to the terminal: rows, cols.
func (p *tmuxPane) size() string {
	return strings.TrimSpace(p.tmux("display-message", "-p", "-t", "tty", "#{pane_height} #{pane_width}").out)
}

// TestTTY: `ssi run -t -- bash`, run by a normal user in a terminal
// (tmux), is an interactive shell whose terminal is its own pty: what is
// typed reaches it and what it prints comes back, in the same terminal,
// while the job moves node1 -> node2 (at the prompt) -> node3 (during a
// foreground sleep 100) -> home (during a Python REPL). After the moves
// ^C interrupts the sleep (raw mode: a byte for its pty, not a signal for
// ssi run) and a window resize reaches the job (its size, and SIGWINCH);
// the shell never sees its foreground job stop; the REPL keeps its
// state; ssi run exits with the shell's code and leaves the caller's
// terminal as it found it.
func TestTTY(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("needs tmux")
	}
	c := newClusterLab(t, "ittty", "10.213.71.0/24", "--nodes", "3")
	c.agree("node1", three, 10*time.Second)
	home := "/cluster/home/u1000"
	c.must("exec", "node1", "--", "sh", "-c", "mkdir -p "+home+" && chown 1000:1000 "+home)

	p := newTmuxPane(t, "ssi-"+c.name, 100, 30, "env -i PATH=/usr/bin:/bin TERM=xterm PS1='host$ ' bash --norc --noprofile -i")
	p.waitPrompt("host$ ", 10*time.Second)
	// The caller: uid 1000 in its own directory, in a terminal.
	p.typeLine(strings.Join([]string{"env", strings.Join(c.env, " "), ssiBin, "lab", "--name", c.name,
		"exec", "node1", "--", strings.Join(userExec, " "), "HOME=" + home, "'PS1=jo''b$ '",
		"sh", "-c", "'cd " + home + " && exec " + ssiBin + " run -t -- bash --norc --noprofile -i'"}, " "))
	p.waitPrompt("job$ ", 30*time.Second)
	cpid, _ := ttyJob(t, c, "node1")

	p.typeLine("echo one-$((6*7)); tty; id -u")
	p.waitFor("one-42\n/dev/pts/0\n1000\n", 10*time.Second)

	job := &ttySession{t: t, c: c, p: p, cpid: cpid}
	job.move("node3", "node2", "node2")
	p.typeLine("echo two-$((7*8)); tty")
	s := p.waitFor("two-56\n/dev/pts/0\n", 20*time.Second)
	if n := strings.Count(s, "one-42\n"); n != 1 {
		t.Fatalf("after the move the terminal shows the first output %d times:\n%s", n, s)
	}

	job.ctrlCAfterMove()
	ttyResize(t, p)
	job.replMoves()

	if got := strings.TrimSpace(c.must("exec", "node2", "--", "cat", "/cluster/proc/"+cpid+"/nmigs")); got != "3" {
		t.Fatalf("nmigs %q, want 3", got)
	}
	p.typeLine("exit 7")
	p.waitPrompt("host$ ", 30*time.Second)
	p.typeLine("echo ssi-rc=$?")
	p.waitFor("ssi-rc=7\n", 10*time.Second)
	// The caller's terminal is cooked again: echo, lines, signals.
	p.typeLine("stty -a | tr ' ;' '\\n\\n' | grep -xE 'icanon|echo|isig|opost|icrnl' | sort | tr '\\n' ,; echo")
	p.waitFor("echo,icanon,icrnl,isig,opost,\n", 10*time.Second)
}

// ttySession is TestTTY's terminal and the job it drives there.
type ttySession struct {
	t    *testing.T
	c    *clusterLab
	p    *tmuxPane
	cpid string
}

// move moves the job to to, asked as the user on asker, and checks that
// ssi ps on asker places it on want. Each move is asked on another node
// than the one it leaves from.
func (j *ttySession) move(asker, to, want string) {
	t, c, cpid := j.t, j.c, j.cpid
	t.Helper()
	r := c.ssi(append(append([]string{"exec", asker, "--"}, userExec...),
		"sh", "-c", "echo "+to+" > /cluster/proc/"+cpid+"/where")...)
	if r.code != 0 {
		why := c.ssi("exec", asker, "--", "cat", "/cluster/proc/"+cpid+"/cantmove").out
		t.Fatalf("moving %s to %s: exit %d: %s (cantmove: %s)", cpid, to, r.code, r.err, why)
	}
	if _, node := ttyJob(t, c, asker); node != want {
		t.Fatalf("after the move to %s, ssi ps places %s on %s", to, cpid, node)
	}
}

// ctrlCAfterMove is TestTTY's move node2 -> node3, during a sleep 100.
func (j *ttySession) ctrlCAfterMove() {
	t, c, p, cpid := j.t, j.c, j.p, j.cpid
	// A foreground command runs while the job moves; ^C ends it after
	// the move.
	p.typeLine("sleep 100")
	eventually(t, "sleep 100 to run in the job on node2", 20*time.Second, func() bool {
		return hasDescendant(jobInitPid(c, cpid, "node2"), "sleep")
	})
	j.move("node1", "node3", "node3")
	eventually(t, "sleep 100 to run in the job on node3", 20*time.Second, func() bool {
		return hasDescendant(jobInitPid(c, cpid, "node3"), "sleep")
	})
	start := time.Now()
	p.keys("C-c")
	p.typeLine("echo rc=$?")
	s := p.waitFor("\nrc=", 20*time.Second)
	if !strings.Contains(s, "\nrc=130\n") {
		t.Fatalf("^C after the move did not end sleep 100 (did the shell see it stop?):\n%s", s)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("^C took %v to end sleep 100", d)
	}
}

// ttyResize: a resized window reaches the job: its size, and SIGWINCH.
func ttyResize(t *testing.T, p *tmuxPane) {
	p.tmux("resize-window", "-t", "tty", "-x", "120", "-y", "40")
	if size := p.size(); size != "40 120" {
		t.Fatalf("tmux made the pane %q, not 40 120", size)
	}
	p.typeLine("stty size")
	p.waitFor("stty size\n40 120\n", 20*time.Second)
	// SIGWINCH reaches the foreground job, which sees the new size.
	p.typeLine(`bash -c 'trap "echo winch-\$(stty size | tr \" \" x); exit 0" WINCH; echo waiting; while :; do sleep 0.1; done'`)
	p.waitFor("waiting\n", 10*time.Second)
	p.tmux("resize-window", "-t", "tty", "-x", "90", "-y", "33")
	p.waitFor("winch-33x90\n", 20*time.Second)
}

// replMoves is TestTTY's move home, during a Python REPL.
func (j *ttySession) replMoves() {
	t, p := j.t, j.p
	// A REPL moves with its state; its line editor keeps the terminal's
	// mode across the move.
	p.typeLine("python3 -q")
	p.waitPrompt(">>> ", 20*time.Second)
	p.typeLine("x = 6*7")
	p.waitFor(">>> x = 6*7\n", 10*time.Second)
	p.waitPrompt(">>> ", 10*time.Second)
	j.move("node2", "home", "node1")
	p.typeLine("print('py', x*2)")
	s := p.waitFor("py 84\n", 20*time.Second, "Stopped")
	if strings.Contains(s, "Stopped") {
		t.Fatalf("the shell saw python stop during the move:\n%s", s)
	}
	p.typeLine("exit()")
	p.waitPrompt("job$ ", 10*time.Second)
}

// ttyJob finds the user's bash in `ssi ps --json` on node: its cpid and
// the node it runs on.
func ttyJob(t *testing.T, c *clusterLab, node string) (cpid, on string) {
	t.Helper()
	eventually(t, "ssi ps to list the user's bash", 20*time.Second, func() bool {
		for _, p := range psJSON(c, node) {
			if p.UID == 1000 && len(p.Argv) > 0 && p.Argv[0] == "bash" {
				cpid, on = strconv.Itoa(p.CPID), p.Node
				return true
			}
		}
		return false
	})
	return cpid, on
}

// ttyPs is what the test reads of `ssi ps --json`.
type ttyPs struct {
	CPID int      `json:"cpid"`
	Node string   `json:"node"`
	UID  int      `json:"uid"`
	Pid  int      `json:"pid"`
	Argv []string `json:"argv"`
}

func psJSON(c *clusterLab, node string) []ttyPs {
	var procs []ttyPs
	if !c.on(node, &procs, "ps", "--json") {
		return nil
	}
	return procs
}

// jobInitPid is the pid (the machine's: lab nodes share its PID
// namespace) of cpid's init, once ssi ps places it on node; 0 until then.
func jobInitPid(c *clusterLab, cpid, node string) int {
	for _, p := range psJSON(c, node) {
		if strconv.Itoa(p.CPID) == cpid && p.Node == node && p.Pid > 0 {
			return p.Pid
		}
	}
	return 0
}

// hasDescendant reports whether a process below pid is called comm.
func hasDescendant(pid int, comm string) bool {
	if pid <= 0 {
		return false
	}
	kids, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, k := range kids {
		b, _ := os.ReadFile(k)
		for _, f := range strings.Fields(string(b)) {
			child, _ := strconv.Atoi(f)
			name, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", child))
			if strings.TrimSpace(string(name)) == comm || hasDescendant(child, comm) {
				return true
			}
		}
	}
	return false
}
