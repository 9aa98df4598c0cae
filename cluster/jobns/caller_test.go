package jobns

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestMain lets this test binary apply a Caller in a process of its own
// (SSI_JOBNS_TEST_APPLY, the Caller as JSON), as a job's init does, and
// then show what a child of it gets.
func TestMain(m *testing.M) {
	if spec := os.Getenv("SSI_JOBNS_TEST_APPLY"); spec != "" {
		os.Exit(applyAndShow(spec))
	}
	os.Exit(m.Run())
}

func applyAndShow(spec string) int {
	var c Caller
	if err := json.Unmarshal([]byte(spec), &c); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := c.Apply(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// A child: the job's command is one.
	cmd := exec.Command("sh", "-c", "ulimit -Sn; ulimit -Hn; ulimit -Sc; umask; cat /proc/self/oom_score_adj")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return 1
	}
	return 0
}

// A Go process (the job's init) that applies a Caller passes exactly its
// limits, umask and oom_score_adj on to its children, though the Go
// runtime raised its own soft file limit at start.
func TestCallerApplyReachesChildren(t *testing.T) {
	var nofile, core syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &nofile); err != nil || nofile.Max < 100 {
		t.Skipf("RLIMIT_NOFILE %+v: want a hard limit of 100 or more", nofile)
	}
	if err := syscall.Getrlimit(syscall.RLIMIT_CORE, &core); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("/proc/self/oom_score_adj")
	if err != nil {
		t.Skipf("no oom_score_adj: %v", err)
	}
	own, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	oom := own + 1 // raising it needs no privilege
	if oom > 1000 {
		t.Skip("oom_score_adj is at its top already")
	}
	c := Caller{Umask: 0o027, OOMScoreAdj: oom, Rlimits: []Rlimit{
		{Resource: syscall.RLIMIT_NOFILE, Cur: 64, Max: 100},
		{Resource: 4 /* RLIMIT_CORE */, Cur: 0, Max: core.Max},
		{Resource: 99, Cur: 1, Max: 1}, // unknown to this kernel: skipped
	}}
	spec, _ := json.Marshal(c)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), "SSI_JOBNS_TEST_APPLY="+string(spec))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("applying %s: %v\n%s", spec, err, out)
	}
	want := fmt.Sprintf("64\n100\n0\n0027\n%d\n", oom)
	if string(out) != want {
		t.Fatalf("the child got\n%s\nwant\n%s", out, want)
	}
}

// A value out of range fails rather than leaving the job's own.
func TestCallerApplyRefusesABadOOMScoreAdj(t *testing.T) {
	if err := setOOMScoreAdj(1001); err == nil {
		t.Fatal("oom_score_adj 1001 was taken")
	}
}
