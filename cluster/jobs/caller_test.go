package jobs

import (
	"bufio"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ssi/cluster/jobns"
)

// TestMain lets this test binary be a caller of the tests: with
// SSI_JOBS_TEST_DIAL set it connects to that socket instead of testing.
func TestMain(m *testing.M) {
	if sock := os.Getenv("SSI_JOBS_TEST_DIAL"); sock != "" {
		os.Exit(dialAndHold(sock, os.Getenv("SSI_JOBS_TEST_LEAVE") != ""))
	}
	os.Exit(m.Run())
}

// dialAndHold connects to sock and says so with a line. Then it holds
// the connection until the test closes it; or, leave, it hands the
// connection to a `sleep` (whose pid is the line) and exits: the
// connection's caller is then gone while its socket lives on.
func dialAndHold(sock string, leave bool) int {
	c, err := net.Dial("unix", sock)
	if err != nil {
		return 1
	}
	if !leave {
		_, _ = c.Write([]byte("here\n"))
		_, _ = c.Read(make([]byte, 1))
		return 0
	}
	f, err := c.(*net.UnixConn).File()
	if err != nil {
		return 1
	}
	heir := exec.Command("sleep", "60")
	heir.ExtraFiles = []*os.File{f}
	if err := heir.Start(); err != nil {
		return 1
	}
	_, _ = c.Write([]byte(strconv.Itoa(heir.Process.Pid) + "\n"))
	return 0
}

// callerConn starts this binary as a caller, through sh running script
// first, and returns the agent's end of its connection, the line the
// caller sent, and the caller's process.
func callerConn(t *testing.T, script string, leave bool) (net.Conn, string, *exec.Cmd) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", script+` && exec "$0"`, self)
	cmd.Env = append(os.Environ(), "SSI_JOBS_TEST_DIAL="+sock)
	if leave {
		cmd.Env = append(cmd.Env, "SSI_JOBS_TEST_LEAVE=1")
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	_ = ln.(*net.UnixListener).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := ln.Accept()
	if err != nil {
		t.Fatalf("the caller never connected: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("the caller said nothing: %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	return c, strings.TrimSpace(line), cmd
}

// ownOOMScoreAdj is this process's oom_score_adj.
func ownOOMScoreAdj(t *testing.T) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		t.Skipf("no oom_score_adj here: %v", err)
	}
	v, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return v
}

func nofileOf(t *testing.T, cl caller) jobns.Rlimit {
	t.Helper()
	for _, l := range cl.Rlimits {
		if l.Resource == unix.RLIMIT_NOFILE {
			return l
		}
	}
	t.Fatalf("no RLIMIT_NOFILE in %+v", cl.Rlimits)
	return jobns.Rlimit{}
}

// The caller's limits, umask and oom_score_adj are read of the calling
// process itself: a Go caller (as ssi run is) has its soft file limit
// raised by its runtime, and a lower one it says it had is taken, a
// higher one is not.
func TestCallerOfReadsTheCallingProcess(t *testing.T) {
	oom := max(ownOOMScoreAdj(t)+1, 123)
	if oom > 1000 {
		t.Skip("oom_score_adj is at its top already")
	}
	var ownNofile unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &ownNofile); err != nil || ownNofile.Max < 200 {
		t.Skipf("RLIMIT_NOFILE %+v: want a hard limit of 200 or more", ownNofile)
	}
	conn, _, _ := callerConn(t, "ulimit -n 200 && ulimit -Sn 77 && umask 027 && echo "+strconv.Itoa(oom)+" > /proc/self/oom_score_adj", false)
	cl, err := callerOf(conn, 0)
	if err != nil {
		t.Fatal(err)
	}
	if cl.uid != uint32(os.Getuid()) || cl.gid != uint32(os.Getgid()) {
		t.Errorf("uid/gid %d/%d, want %d/%d", cl.uid, cl.gid, os.Getuid(), os.Getgid())
	}
	if cl.Umask != 0o027 || cl.OOMScoreAdj != oom {
		t.Errorf("umask %#o, oom_score_adj %d; want 027 and %d", cl.Umask, cl.OOMScoreAdj, oom)
	}
	groups, _ := os.Getgroups()
	var want []uint32
	for _, g := range groups {
		want = append(want, uint32(g))
	}
	if len(want) > 0 && !reflect.DeepEqual(cl.Groups, want) {
		t.Errorf("groups %v, want %v", cl.Groups, want)
	}
	if len(cl.Rlimits) != jobns.NumRlimits {
		t.Errorf("%d resource limits, want all %d", len(cl.Rlimits), jobns.NumRlimits)
	}
	// The Go runtime of the caller raised 77 to the hard limit less one.
	if got := nofileOf(t, cl); got.Cur != 199 || got.Max != 200 {
		t.Errorf("RLIMIT_NOFILE read %d/%d, want 199/200", got.Cur, got.Max)
	}
	for hint, want := range map[uint64]uint64{77: 77, 500: 199} {
		cl, err := callerOf(conn, hint)
		if err != nil {
			t.Fatal(err)
		}
		if got := nofileOf(t, cl); got.Cur != want || got.Max != 200 {
			t.Errorf("said %d: RLIMIT_NOFILE %d/%d, want %d/200", hint, got.Cur, got.Max, want)
		}
	}
}

// A caller that has gone, its connection held by another process, is
// nobody this agent can start a job for: its pid may be another's now.
func TestCallerOfRefusesAGoneCaller(t *testing.T) {
	conn, line, cmd := callerConn(t, "true", true)
	heir, err := strconv.Atoi(line)
	if err != nil {
		t.Fatalf("the caller said %q", line)
	}
	t.Cleanup(func() { _ = unix.Kill(heir, unix.SIGKILL) })
	if err := cmd.Wait(); err != nil {
		t.Fatalf("the caller: %v", err)
	}
	if _, err := callerOf(conn, 0); !errors.Is(err, errCaller) {
		t.Fatalf("callerOf a gone caller: %v, want errCaller", err)
	}
}

func TestParseStatus(t *testing.T) {
	for _, c := range []struct {
		text        string
		euid, umask uint32
		ok          bool
	}{
		{"Name:\tsh\nUmask:\t0077\nState:\tS\nUid:\t1000\t1001\t1000\t1000\n", 1001, 0o077, true},
		{"Name:\tsh\nUid:\t0\t0\t0\t0\n", 0, 0, false}, // exited: no umask
		{"Umask:\t0022\n", 0, 0, false},
		{"Umask:\tx\nUid:\t1\t1\t1\t1\n", 0, 0, false},
	} {
		euid, umask, err := parseStatus([]byte(c.text))
		if (err == nil) != c.ok || (c.ok && (euid != c.euid || umask != c.umask)) {
			t.Errorf("parseStatus(%q) = %d, %#o, %v; want %d, %#o, ok=%v", c.text, euid, umask, err, c.euid, c.umask, c.ok)
		}
	}
}

// /proc/PID/limits gives every limit getrlimit(2) gives.
func TestParseLimitsIsGetrlimit(t *testing.T) {
	b, err := os.ReadFile("/proc/self/limits")
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	ls, err := parseLimits(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range ls {
		var want unix.Rlimit
		if err := unix.Getrlimit(l.Resource, &want); err != nil {
			t.Fatal(err)
		}
		if l.Cur != want.Cur || l.Max != want.Max {
			t.Errorf("resource %d: read %d/%d, getrlimit says %d/%d", l.Resource, l.Cur, l.Max, want.Cur, want.Max)
		}
	}
	if _, err := parseLimits(b[:len(b)/2]); err == nil {
		t.Error("half a limits file was taken")
	}
	bad := strings.Replace(string(b), "Max open files            ", "Max open files            x", 1)
	if _, err := parseLimits([]byte(bad)); err == nil {
		t.Error("a limit that is no number was taken")
	}
}
