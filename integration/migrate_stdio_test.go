package integration

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// testMigrationStdio: an attached `ssi run`, started as u, keeps
// talking to its process while the process moves twice.
func testMigrationStdio(t *testing.T, lab *migLab, u asUser) {
	m := &migLab{clusterLab: lab.with(t), dir: lab.dir}
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
	m.must(u.cmd(u.from("node3", "node1"), ssiBin, "migrate", cpid, "node3")...)
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
}

// testMigrationCtrlC: ^C to an attached `ssi run` reaches its process
// after a move.
func testMigrationCtrlC(t *testing.T, lab *migLab) {
	m := &migLab{clusterLab: lab.with(t), dir: lab.dir}
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
	m.must("exec", "node2", "--", ssiBin, "migrate", cpid, "node3")
	// The caller's ssi run (inside node2) gets the ^C.
	interruptRun(t, regexpQuote(ssiBin)+" run -- "+regexpQuote(script), lines, cmd)
}
