package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"ssi/cluster/jobns"
)

// TestMain lets this test binary become a user in a process of its own,
// as a job's init does (SSI_JOBINIT_TEST_BECOME), and show who it is.
func TestMain(m *testing.M) {
	if os.Getenv("SSI_JOBINIT_TEST_BECOME") != "" {
		if err := becomeUser(1000, 1000, []uint32{1000, 27, 4}); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		status, _ := os.ReadFile("/proc/self/status")
		for _, l := range strings.Split(string(status), "\n") {
			if k, _, _ := strings.Cut(l, ":"); k == "Uid" || k == "Gid" || k == "Groups" {
				fmt.Println(strings.Join(strings.Fields(l), " "))
			}
		}
		dumpable, _ := unix.PrctlRetInt(unix.PR_GET_DUMPABLE, 0, 0, 0, 0)
		fmt.Println("dumpable", dumpable)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The job's init becomes its caller with the caller's supplementary
// groups (not none), and stays dumpable for CRIU.
func TestBecomeUserTakesTheCallersGroups(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("becoming another user takes root")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), "SSI_JOBINIT_TEST_BECOME=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := "Uid: 1000 1000 1000 1000\nGid: 1000 1000 1000 1000\nGroups: 4 27 1000\ndumpable 1\n"
	if string(out) != want {
		t.Fatalf("the job's init became\n%s\nwant\n%s", out, want)
	}
}

// These tests run job-init's terminal relay on a pty of the machine's
// /dev/ptmx (job-init opens its job's own, which takes root to mount):
// the same code between pipes and a real pty, with a real program on its
// slave. Every wait has a deadline.

// ptyJob is a command on a pty relayed by a ptyRelay, as job-init runs
// it: in and sizes are the agent's ends of the stdin and window size
// pipes, out collects what the relay wrote to stdout.
type ptyJob struct {
	cmd    *exec.Cmd
	in     *os.File
	sizes  *os.File
	out    lockedBuf
	output <-chan struct{}
	outW   *os.File      // the relay's stdout
	copied chan struct{} // closed once out has all the relay wrote to outW
	exited chan error
}

func startPTYJob(t *testing.T, size jobns.Winsize, argv ...string) *ptyJob {
	t.Helper()
	master, slave, err := openPTY("/dev/ptmx", size)
	if err != nil {
		t.Skipf("no pty here: %v", err)
	}
	t.Cleanup(func() { master.Close() })
	inR, inW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	sizeR, sizeW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for _, f := range []*os.File{inR, inW, sizeR, sizeW, outR, outW} {
			f.Close()
		}
	})
	j := &ptyJob{cmd: exec.Command(argv[0], argv[1:]...), in: inW, sizes: sizeW, outW: outW,
		copied: make(chan struct{}), exited: make(chan error, 1)}
	onTerminal(j.cmd, slave)
	err = j.cmd.Start()
	slave.Close()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = j.cmd.Process.Kill()
		j.wait(t, 5*time.Second)
	})
	go func() { j.exited <- j.cmd.Wait() }()
	go func() {
		defer close(j.copied)
		_ = copyAll(&j.out, outR)
	}()
	j.output = (&ptyRelay{master: master, in: inR, out: outW, sizes: sizeR}).start()
	return j
}

// outputEnds waits for the relay's output to end and returns all of it.
func (j *ptyJob) outputEnds(t *testing.T) string {
	t.Helper()
	select {
	case <-j.output:
	case <-time.After(5 * time.Second):
		t.Fatal("the relay's output does not end after the program's exit")
	}
	j.outW.Close()
	<-j.copied
	return j.out.String()
}

// waitOut waits until the output holds want and returns it.
func (j *ptyJob) waitOut(t *testing.T, want string, d time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := j.out.String()
		if strings.Contains(got, want) {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v the output is %q, without %q", d, got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wait waits for the command's end; nil if it has not ended within d.
func (j *ptyJob) wait(t *testing.T, d time.Duration) *exec.ExitError {
	t.Helper()
	select {
	case err := <-j.exited:
		j.exited <- err // a second wait sees it too
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		if ee == nil {
			return &exec.ExitError{ProcessState: j.cmd.ProcessState}
		}
		return ee
	case <-time.After(d):
		return nil
	}
}

// The terminal has the size it was opened with, input reaches the
// program, a size record resizes it (the program hears SIGWINCH and sees
// the new size), and output written just before the exit is all
// relayed before the relay says the output has ended.
func TestPTYRelaySizeInputAndOutput(t *testing.T) {
	j := startPTYJob(t, jobns.Winsize{Rows: 24, Cols: 80}, "sh", "-c",
		`stty size; read l; echo "got $l"; trap 'stty size; echo bye; exit 7' WINCH; echo ready; while :; do sleep 0.05; done`)
	j.waitOut(t, "24 80\r\n", 5*time.Second)
	if _, err := j.in.WriteString("hello\n"); err != nil {
		t.Fatal(err)
	}
	j.waitOut(t, "got hello\r\nready\r\n", 5*time.Second)
	if _, err := j.sizes.Write(jobns.Winsize{Rows: 33, Cols: 90}.Bytes()); err != nil {
		t.Fatal(err)
	}
	ee := j.wait(t, 5*time.Second)
	if ee == nil || ee.ExitCode() != 7 {
		t.Fatalf("after a resize: %v, want exit 7 from the WINCH trap; output %q", ee, j.out.String())
	}
	if got := j.outputEnds(t); !strings.HasSuffix(got, "33 90\r\nbye\r\n") {
		t.Fatalf("output %q does not end with the new size and bye", got)
	}
}

// ^C from the caller is a byte on the terminal: its line discipline
// makes it SIGINT for the foreground job.
func TestPTYRelayCtrlCInterrupts(t *testing.T) {
	j := startPTYJob(t, jobns.DefaultWinsize, "sh", "-c", `echo ready; exec sleep 30`)
	j.waitOut(t, "ready", 5*time.Second)
	if _, err := j.in.Write([]byte{3}); err != nil {
		t.Fatal(err)
	}
	ee := j.wait(t, 5*time.Second)
	if ee == nil {
		t.Fatal("sleep 30 goes on after ^C")
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Fatalf("after ^C: %v, want killed by SIGINT", ee)
	}
}

// The end of a piped stdin is the terminal's end of file, once the
// program has read what came before it: cat ends by itself, with
// everything echoed and copied.
func TestPTYRelayEndOfInputIsEOF(t *testing.T) {
	j := startPTYJob(t, jobns.DefaultWinsize, "cat")
	if _, err := j.in.WriteString("abc\n"); err != nil {
		t.Fatal(err)
	}
	j.in.Close()
	ee := j.wait(t, 5*time.Second)
	if ee == nil || ee.ExitCode() != 0 {
		t.Fatalf("cat after the end of its input: %v, want exit 0; output %q", ee, j.out.String())
	}
	if got := j.outputEnds(t); got != "abc\r\nabc\r\n" {
		t.Fatalf("output %q, want the echo and cat's copy", got)
	}
}

// -t needs a caller to relay the terminal to.
func TestRunTTYWithDetachFails(t *testing.T) {
	out, err := run("run", "-t", "-d", "--", "true")
	if err == nil || !strings.Contains(err.Error(), "-t needs an attached caller") {
		t.Fatalf("ssi run -t -d: %v (%s)", err, out)
	}
}

// lockedBuf is a buffer written by one goroutine and read by another.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
