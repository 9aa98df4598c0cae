package migrate_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"ssi/cluster/lab"
	"ssi/migrate"
)

// The test binary doubles as the programs the test runs inside lab nodes,
// chosen by SSI_MIGRATE_HELPER: a counter, its starter, a dumper and a
// restorer. Each runs in a node's namespaces, as an agent would.
func TestMain(m *testing.M) {
	if err := migrate.SealInheritedFDs(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	switch os.Getenv("SSI_MIGRATE_HELPER") {
	case "":
		os.Exit(m.Run())
	case "counter":
		helperCounter(os.Getenv("SSI_COUNTER_FILE"))
	case "start":
		helperStart()
	case "dump":
		helperDump()
	case "restore":
		helperRestore()
	}
	os.Exit(3)
}

func criuConfig() migrate.Config {
	path := os.Getenv("SSI_CRIU_PATH")
	if path == "" {
		path = "/opt/ssi/criu/bin/criu"
	}
	return migrate.Config{Path: path, NoBreakpoints: os.Getenv("SSI_CRIU_NO_BREAKPOINTS") != "false"}
}

func die(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "helper: "+format+"\n", args...)
	os.Exit(2)
}

// helperCounter counts in memory and appends each value to file: after a
// restore the count goes on from where it was only if memory moved.
func helperCounter(file string) {
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		die("%v", err)
	}
	for n := 1; ; n++ {
		fmt.Fprintf(f, "%d\n", n)
		time.Sleep(20 * time.Millisecond)
	}
}

// helperStart starts the counter as a cluster process would be: PID 1 of
// its own PID namespace, in its own session. It prints the counter's pid
// and reaps it.
func helperStart() {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "SSI_MIGRATE_HELPER=counter")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID, Setsid: true}
	if err := cmd.Start(); err != nil {
		die("start counter: %v", err)
	}
	fmt.Println(cmd.Process.Pid)
	_ = cmd.Wait()
	os.Exit(0)
}

func helperDump() {
	pid, _ := strconv.Atoi(os.Getenv("SSI_PID"))
	dir, err := os.MkdirTemp("", "ssi-test-dump-")
	if err != nil {
		die("%v", err)
	}
	defer os.RemoveAll(dir)
	st, err := migrate.New(criuConfig(), nil).Dump(context.Background(), migrate.DumpOptions{Pid: pid, Dir: dir})
	if err != nil {
		die("dump: %v", err)
	}
	fmt.Fprintf(os.Stderr, "dumped: frozen %v, %d pages\n", st.Frozen, st.PagesWritten)
	if err := migrate.Pack(dir, os.Stdout); err != nil {
		die("pack: %v", err)
	}
	os.RemoveAll(dir)
	os.Exit(0)
}

func helperRestore() {
	dir, err := os.MkdirTemp("", "ssi-test-restore-")
	if err != nil {
		die("%v", err)
	}
	if _, err := migrate.Unpack(os.Stdin, dir); err != nil {
		die("unpack: %v", err)
	}
	r, err := migrate.New(criuConfig(), nil).Restore(context.Background(), migrate.RestoreOptions{Dir: dir})
	os.RemoveAll(dir)
	if err != nil {
		die("restore: %v", err)
	}
	fmt.Println(r.Pid)
	var ws syscall.WaitStatus
	for {
		if _, err := syscall.Wait4(r.Pid, &ws, 0, nil); err != syscall.EINTR {
			break
		}
	}
	os.Exit(0)
}

// needCRIU skips for a normal user and fails for root without CRIU: under
// `make test` (root, after make setup) this test must run.
func needCRIU(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (CRIU, namespaces, cgroups): run `sudo make test`")
	}
	if testing.Short() {
		t.Skip("-short: skipping CRIU test")
	}
	if _, err := migrate.New(criuConfig(), nil).Gate(context.Background()); err != nil {
		t.Fatalf("CRIU is not usable (%v): run make setup", err)
	}
}

// readCounts returns the values in the counter's file.
func readCounts(t *testing.T, file string) []int {
	t.Helper()
	b, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var out []int
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" {
			continue
		}
		n, err := strconv.Atoi(line)
		if err != nil {
			// A line is written by one write(2): a partial one is a bug.
			t.Fatalf("bad line %q in counter file", line)
		}
		out = append(out, n)
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func nsInode(t *testing.T, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

func readLine(t *testing.T, r io.Reader) int {
	t.Helper()
	line, err := bufio.NewReader(r).ReadString('\n')
	if err != nil {
		t.Fatalf("helper said nothing: %v", err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("helper said %q", line)
	}
	return n
}

// TestMoveBetweenLabNodes dumps a counting process in node1 of a lab,
// streams its images to node2, restores it there, and checks that it goes
// on counting from where it was, in node2's network and mount namespaces
// and cgroup.
func TestMoveBetweenLabNodes(t *testing.T) {
	needCRIU(t)
	l := openMigrateLab(t)
	file := filepath.Join(t.TempDir(), "counter.txt")
	helper := func(node, role string, env ...string) *exec.Cmd {
		cmd, err := l.Command(node, os.Args[0])
		if err != nil {
			t.Fatal(err)
		}
		cmd.Env = append(cmd.Env, append(env, "SSI_MIGRATE_HELPER="+role, "SSI_COUNTER_FILE="+file)...)
		cmd.Stderr = os.Stderr
		return cmd
	}

	start, pid := startCounter(t, helper, file)
	restore, rout := moveCounter(t, helper, start, pid)
	atDump := readCounts(t, file)
	last := atDump[len(atDump)-1]

	newPid := readLine(t, rout)
	t.Cleanup(func() { _ = syscall.Kill(newPid, syscall.SIGKILL) })

	checkInNode2(t, l, newPid)
	checkCountContinued(t, file, last)

	_ = syscall.Kill(newPid, syscall.SIGKILL)
	if err := restore.Wait(); err != nil {
		t.Fatalf("restorer: %v", err)
	}
}

// labHelper is a command running the test binary in a node of the lab,
// as the helper role, with env added to its environment.
type labHelper func(node, role string, env ...string) *exec.Cmd

// openMigrateLab brings up a lab of two nodes for the test, removing a
// previous run's first; it is taken down when the test ends.
func openMigrateLab(t *testing.T) *lab.Lab {
	t.Helper()
	// The lab lives where labs do, not in a TempDir: if a run is killed,
	// the next one finds its leftovers by name and removes them.
	l, err := lab.Open(lab.Options{Name: "tmig", Dir: "/var/lib/ssi-lab", Subnet: "10.213.7.0/24", Nodes: 2, Out: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Down(context.Background()); err != nil {
		t.Fatalf("removing a previous run's lab: %v", err)
	}
	t.Cleanup(func() {
		if err := l.Down(context.Background()); err != nil {
			t.Errorf("lab down: %v", err)
		}
	})
	if err := l.Up(context.Background()); err != nil {
		t.Fatal(err)
	}
	return l
}

// startCounter starts the counter in node1 and waits until it has
// counted to 10 in file: its starter, and its pid.
func startCounter(t *testing.T, helper labHelper, file string) (*exec.Cmd, int) {
	t.Helper()
	start := helper("node1", "start")
	out, err := start.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := start.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = start.Process.Kill(); _, _ = start.Process.Wait() })
	pid := readLine(t, out)
	waitFor(t, "the counter to reach 10", func() bool { return len(readCounts(t, file)) >= 10 })
	return start, pid
}

// moveCounter dumps the counter (pid, started by start) in node1 and
// streams its images to a restorer in node2, which it returns with its
// stdout, where the restored pid comes.
func moveCounter(t *testing.T, helper labHelper, start *exec.Cmd, pid int) (*exec.Cmd, io.Reader) {
	t.Helper()
	// Dump in node1, stream to node2, restore there.
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	dump := helper("node1", "dump", "SSI_PID="+strconv.Itoa(pid))
	dump.Stdout = pw
	restore := helper("node2", "restore")
	restore.Stdin = pr
	rout, err := restore.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := restore.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = restore.Process.Kill(); _ = restore.Wait() })
	if err := dump.Start(); err != nil {
		t.Fatal(err)
	}
	// Only the helpers hold the pipe now: if one fails the other sees EOF.
	pw.Close()
	pr.Close()
	if err := dump.Wait(); err != nil {
		t.Fatalf("dump in node1: %v", err)
	}
	if err := start.Wait(); err != nil {
		t.Fatalf("starter: %v", err)
	}
	return restore, rout
}

// checkInNode2 checks that the restored process runs in node2: its
// network and mount namespaces and cgroup.
func checkInNode2(t *testing.T, l *lab.Lab, newPid int) {
	t.Helper()
	if got, want := nsInode(t, fmt.Sprintf("/proc/%d/ns/net", newPid)), nsInode(t, "/run/netns/tmig-node2"); got != want {
		t.Errorf("restored process in netns %d, want node2's %d", got, want)
	}
	if got, node1 := nsInode(t, fmt.Sprintf("/proc/%d/ns/net", newPid)), nsInode(t, "/run/netns/tmig-node1"); got == node1 {
		t.Errorf("restored process still in node1's netns")
	}
	if got, want := nsInode(t, fmt.Sprintf("/proc/%d/ns/mnt", newPid)), nsInode(t, filepath.Join(l.Root(), "ns", "node2.mnt")); got != want {
		t.Errorf("restored process in mount ns %d, want node2's %d", got, want)
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", newPid))
	if !strings.Contains(string(cg), "ssi-lab/tmig/node2") {
		t.Errorf("restored process not in node2's cgroup:\n%s", cg)
	}
}

// checkCountContinued waits for the restored counter to count 10 more
// than last, the count at the dump, and checks that it never restarted.
func checkCountContinued(t *testing.T, file string, last int) {
	t.Helper()
	// Memory moved: the count continues from last+1, never restarts.
	waitFor(t, "the restored counter to count 10 more", func() bool {
		c := readCounts(t, file)
		return c[len(c)-1] >= last+10
	})
	counts := readCounts(t, file)
	for i, n := range counts {
		if n != i+1 {
			t.Fatalf("line %d is %d: the count did not continue (dumped at %d)", i+1, n, last)
		}
	}
	t.Logf("counted to %d in node1, then to %d in node2", last, counts[len(counts)-1])
}
