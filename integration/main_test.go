// Package integration runs the real ssi binary on real labs: network
// namespaces on a bridge, agents talking TCP. It needs root; as a normal
// user every test skips with the reason.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ssiBin is the binary under test, built once from this checkout.
var ssiBin string

// testBin is a copy of this test binary that cluster processes can run.
var testBin string

func copyExecutable(to string) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	b, err := os.ReadFile(self)
	if err != nil {
		return err
	}
	return os.WriteFile(to, b, 0o755)
}

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Geteuid() != 0 || testing.Short() {
		// Tests skip one by one with the reason (needRoot).
		os.Exit(m.Run())
	}
	// Not in /tmp: a cluster process has its own /tmp (see package
	// jobns), so the programs and files the tests give their processes
	// live where every node sees them, and so do the tests' temporary
	// directories.
	dir, err := os.MkdirTemp("/var/tmp", "ssi-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	os.Setenv("TMPDIR", dir)
	// Other users (the tests' uid 1000) run the binary too.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	ssiBin = filepath.Join(dir, "ssi")
	b, err := run(buildTimeout, nil, nil, "go", "build", "-o", ssiBin, "../cmd/ssi")
	if err != nil || b.code != 0 {
		fmt.Fprintf(os.Stderr, "building ssi: %v\n%s%s", err, b.out, b.err)
		os.Exit(2)
	}
	// The helper programs (SSI_ITEST_HELPER) are this test binary.
	testBin = filepath.Join(dir, "integration.test")
	if err := copyExecutable(testBin); err != nil {
		fmt.Fprintln(os.Stderr, "copying the test binary:", err)
		os.Exit(2)
	}
	// Commands run in a node with the test's working directory; a
	// cluster process starts there, and a checkout in /tmp would be
	// hidden by the process's own /tmp.
	if err := os.Chdir(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (namespaces, cgroups, mounts): run `sudo make test`")
	}
	if testing.Short() {
		t.Skip("-short: skipping lab test")
	}
}

// result is what a run of ssi printed and how it exited.
type result struct {
	out, err string
	code     int
}

// cmdTimeout is how long any external command a test runs may take
// unless its caller says otherwise (ssiWithin, clusterLab.within): a
// hung command fails its test with what it printed instead of hanging
// the suite.
const cmdTimeout = 3 * time.Minute

// buildTimeout bounds the one build of the binary under test.
const buildTimeout = 10 * time.Minute

// ssi runs the binary with env added to ours, for at most cmdTimeout.
func ssi(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return ssiWithin(t, cmdTimeout, env, args...)
}

// ssiWithin is ssi for a command that may legitimately take up to d.
func ssiWithin(t *testing.T, d time.Duration, env []string, args ...string) result {
	t.Helper()
	r, err := run(d, env, nil, ssiBin, args...)
	if err != nil {
		t.Fatalf("ssi %s: %v", strings.Join(args, " "), err)
	}
	return r
}

// mustSSI runs ssi and fails the test unless it exits 0.
func mustSSI(t *testing.T, env []string, args ...string) string {
	t.Helper()
	return mustSSIWithin(t, cmdTimeout, env, args...)
}

func mustSSIWithin(t *testing.T, d time.Duration, env []string, args ...string) string {
	t.Helper()
	r := ssiWithin(t, d, env, args...)
	if r.code != 0 {
		t.Fatalf("ssi %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.out, r.err)
	}
	return r.out
}

// run runs name with args, env added to ours and stdin (nil: none), in
// its own process group, for at most d. The error is for a command that
// could not start or did not end in time: then the whole group is
// killed and the error quotes the command line, what it printed so far
// and "timed out after d". A command that exits with non-zero status is
// no error: its code is in the result.
func run(d time.Duration, env []string, stdin []byte, name string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	// What it started may hold its output open after it exited.
	cmd.WaitDelay = 5 * time.Second
	line := name + " " + strings.Join(args, " ")
	if err := cmd.Start(); err != nil {
		return result{code: -1}, fmt.Errorf("%s: %w", line, err)
	}
	err := waitFor(cmd, d+15*time.Second)
	r := result{out: out.String(), err: errb.String()}
	if ctx.Err() == context.DeadlineExceeded || errors.Is(err, errTimedOut) {
		return r, fmt.Errorf("%s: timed out after %v\nstdout so far: %s\nstderr so far: %s", line, d, r.out, r.err)
	}
	var ee *exec.ExitError
	switch {
	case err == nil, errors.Is(err, exec.ErrWaitDelay):
		r.code = cmd.ProcessState.ExitCode()
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		return r, fmt.Errorf("%s: %w", line, err)
	}
	return r, nil
}

// errTimedOut is waitFor's error for a command that did not end in time.
var errTimedOut = errors.New("timed out")

// waitFor waits at most d for a started command to end; then it kills
// the command's process group (if it has its own) and waits a little
// more. It returns cmd.Wait's error, or errTimedOut.
func waitFor(cmd *exec.Cmd, d time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
	}
	killGroup(cmd)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		// Unkillable (stuck in the kernel): leave its Wait behind.
	}
	return fmt.Errorf("%s: %w after %v", strings.Join(cmd.Args, " "), errTimedOut, d)
}

// killGroup SIGKILLs cmd's process group if it leads one, else cmd.
func killGroup(cmd *exec.Cmd) {
	if cmd.SysProcAttr != nil && cmd.SysProcAttr.Setpgid {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	_ = cmd.Process.Kill()
}

// lineReader reads a started command's output line by line in the
// background, so that a test waits for each line with a deadline.
type lineReader struct {
	lines chan string
	err   error // the read's end (io.EOF or another error), set before lines closes
}

func newLineReader(r io.Reader) *lineReader {
	l := &lineReader{lines: make(chan string, 64)}
	go func() {
		br := bufio.NewReader(r)
		for {
			s, err := br.ReadString('\n')
			if s != "" {
				l.lines <- s
			}
			if err != nil {
				l.err = err
				close(l.lines)
				return
			}
		}
	}()
	return l
}

// next returns the next line (with its newline, if it had one), or an
// error at the end of the output or when d passed first.
func (l *lineReader) next(d time.Duration) (string, error) {
	select {
	case s, ok := <-l.lines:
		if !ok {
			return "", l.err
		}
		return s, nil
	case <-time.After(d):
		return "", fmt.Errorf("%w after %v waiting for a line", errTimedOut, d)
	}
}

// rest returns everything until the end of the output, or an error when
// d passed first.
func (l *lineReader) rest(d time.Duration) (string, error) {
	var b strings.Builder
	deadline := time.After(d)
	for {
		select {
		case s, ok := <-l.lines:
			if !ok {
				if l.err == io.EOF {
					return b.String(), nil
				}
				return b.String(), l.err
			}
			b.WriteString(s)
		case <-deadline:
			return b.String(), fmt.Errorf("%w after %v waiting for the output to end", errTimedOut, d)
		}
	}
}

// syncBuffer is a buffer a command writes to while the test reads it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// eventually polls cond until it holds or a deadline passes.
func eventually(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestCommandDeadline: a command that outlives its deadline is killed
// with everything it started, and the error says what and how long.
func TestCommandDeadline(t *testing.T) {
	start := time.Now()
	r, err := run(300*time.Millisecond, nil, nil, "sh", "-c", "echo started; sleep 30 & sleep 30")
	if err == nil || !strings.Contains(err.Error(), "timed out after 300ms") ||
		!strings.Contains(err.Error(), "sleep 30") || !strings.Contains(err.Error(), "started") {
		t.Fatalf("run past its deadline: %v (%+v)", err, r)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("run took %v past a 300ms deadline", d)
	}
	if r, err := run(time.Minute, nil, []byte("in"), "sh", "-c", "cat; exit 3"); err != nil || r.code != 3 || r.out != "in" {
		t.Fatalf("a command that ends: %+v %v", r, err)
	}
	l := newLineReader(strings.NewReader("one\n"))
	if s, err := l.next(time.Second); s != "one\n" || err != nil {
		t.Fatalf("first line: %q %v", s, err)
	}
	if _, err := l.next(time.Second); err != io.EOF {
		t.Fatalf("at the end: %v", err)
	}
	pr, pw := io.Pipe()
	defer pw.Close()
	if _, err := newLineReader(pr).next(100 * time.Millisecond); !errors.Is(err, errTimedOut) {
		t.Fatalf("no line: %v", err)
	}
}
