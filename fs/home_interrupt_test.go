package fs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A move freezes the process the way CRIU does (PTRACE_SEIZE, then
// PTRACE_INTERRUPT) and a failed dump lets it go again. A thread blocked
// in a home request then has a signal pending, so the kernel sends
// FUSE_INTERRUPT and go-fuse ends the request's context. The home must go
// on all the same: the program sees its call succeed, as if it had never
// been stopped. (A sqlite writer died of an EINTR from fdatasync, and a
// plain writer saw one from unlink, after a move that worked.) Each call
// is made by a helper process that, unlike dd or a shell, does not retry
// on EINTR nor ignore a failed close.
func TestMountedHomeInterrupt(t *testing.T) {
	h := newMemHome(t)
	_, dir := mountHome(t, h)
	home := filepath.Join(dir, "home")
	db := filepath.Join(home, "db")
	if err := os.WriteFile(db, []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"journal", "old"} {
		if err := os.WriteFile(filepath.Join(home, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		call string // what the helper does, see interruptHelper
		op   string // the Home method its request waits in
	}{
		{"fdatasync", "Write"}, // a flight the fsync waits for
		{"close", "Write"},
		{"create", "Create"},
		{"truncate", "SetAttr"},
		{"rename", "Rename"},
		{"unlink", "Unlink"},
		{"stat", "Fresh"},
	} {
		t.Run(c.call, func(t *testing.T) {
			g := h.holdNext(c.op)
			defer h.gate.Store(nil)
			cmd := helperCommand(c.call, home)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { _ = cmd.Process.Kill() }()
			select {
			case <-g.entered:
			case <-time.After(waitFor):
				t.Fatalf("%s never reached %s: %s", c.call, c.op, out.Bytes())
			}
			cut := freeze(t, g)
			if err := cmd.Wait(); err != nil {
				e := "?"
				if ee, ok := err.(*exec.ExitError); ok {
					e = syscall.Errno(ee.ExitCode()).Error()
				}
				t.Errorf("%s after a freeze: %v (%s): %s", c.call, err, e, out.Bytes())
			}
			if cut != nil {
				t.Errorf("the interrupt cut %s short: %v", c.op, cut)
			}
		})
	}
	if got := h.content(mustLookup(t, h, "db")); got != "ab" {
		t.Errorf("db holds %q, want ab", got)
	}
}

// freeze seizes and interrupts the thread whose request waits at g, as
// CRIU does; then opens g, waits for the thread to stop and lets it go,
// as CRIU does when the dump fails. It returns the error the held call
// gave up with if the interrupt ended it before g opened.
func freeze(t *testing.T, g *gate) (cut error) {
	t.Helper()
	// The tracer is a thread: every ptrace call must come from this one.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	tid := g.caller
	if err := unix.PtraceSeize(tid); err != nil {
		t.Fatalf("seize %d: %v", tid, err)
	}
	if err := unix.PtraceInterrupt(tid); err != nil {
		t.Fatalf("interrupt: %v", err)
	}
	// The kernel queues FUSE_INTERRUPT at once: a held call that heeds it
	// ends within a millisecond.
	select {
	case cut = <-g.left:
	case <-time.After(200 * time.Millisecond):
	}
	close(g.open)
	var ws unix.WaitStatus
	if _, err := unix.Wait4(tid, &ws, unix.WALL, nil); err != nil {
		t.Fatalf("wait for the stop: %v", err)
	}
	if !ws.Stopped() {
		t.Fatalf("not stopped: %#x", ws)
	}
	if err := unix.PtraceDetach(tid); err != nil {
		t.Fatalf("detach: %v", err)
	}
	return cut
}

// A caller that is being killed does not wait for its request: the
// kernel keeps it in uninterruptible sleep until the answer comes, so a
// killed program would stay for as long as the home call lasts (up to
// the backend's bound: 15 s without a quorum). Killed while it waits, or
// frozen (interrupted) first and killed afterwards, when the kernel sends
// no second interrupt. (A killed writer's exit still commits what it
// wrote: its close is not interrupted, so it is an ordinary close.)
func TestMountedHomeKilled(t *testing.T) {
	h := newMemHome(t)
	_, dir := mountHome(t, h)
	home := filepath.Join(dir, "home")
	if err := os.WriteFile(filepath.Join(home, "db"), []byte("abc"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []killedCase{
		{"truncate", "truncate", "SetAttr", false},
		{"frozen truncate", "truncate", "SetAttr", true},
	} {
		t.Run(c.name, func(t *testing.T) { c.run(t, h, home) })
	}
}

// killedCase is one caller of TestMountedHomeKilled: it makes call, held
// in op, and is killed there, frozen first or not.
type killedCase struct {
	name, call, op string
	frozen         bool
}

func (c killedCase) run(t *testing.T, h *memHome, home string) {
	g := h.holdNext(c.op)
	defer h.gate.Store(nil)
	defer func() {
		select {
		case <-g.open:
		default:
			close(g.open)
		}
	}()
	cmd := helperCommand(c.call, home)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }()
	select {
	case <-g.entered:
	case <-time.After(waitFor):
		t.Fatalf("%s never reached %s", c.call, c.op)
	}
	if c.frozen {
		// The tracer is a thread: seizing, and collecting the traced
		// thread's end, must come from this one.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		seizeHeld(t, g, c.op)
	}
	if err := cmd.Process.Signal(os.Kill); err != nil {
		t.Fatal(err)
	}
	if c.frozen {
		reapTraced(t, g, c.call)
	}
	ended := make(chan error, 1)
	go func() { ended <- cmd.Wait() }()
	select {
	case <-ended:
	case <-time.After(time.Second):
		t.Fatalf("a killed %s waited for its answer", c.call)
	}
}

// seizeHeld seizes and interrupts the thread whose request waits at g,
// as CRIU does, and fails if the interrupt ends the held op. The caller
// locks its OS thread first.
func seizeHeld(t *testing.T, g *gate, op string) {
	t.Helper()
	if err := unix.PtraceSeize(g.caller); err != nil {
		t.Fatal(err)
	}
	if err := unix.PtraceInterrupt(g.caller); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-g.left:
		t.Fatalf("the freeze cut %s short: %v", op, err)
	case <-time.After(100 * time.Millisecond):
	}
}

// reapTraced waits for the killed, traced thread at g to end: a traced
// thread's end is its tracer's to collect first.
func reapTraced(t *testing.T, g *gate, call string) {
	t.Helper()
	deadline := time.Now().Add(time.Second)
	for {
		var ws unix.WaitStatus
		if pid, err := unix.Wait4(g.caller, &ws, unix.WALL|unix.WNOHANG, nil); err != nil || pid == g.caller && (ws.Exited() || ws.Signaled()) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a killed %s waited for its answer", call)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// helperCommand runs TestHomeInterruptHelper, making call in home.
func helperCommand(call, home string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestHomeInterruptHelper$")
	cmd.Env = append(os.Environ(), helperEnv+"="+call, helperDirEnv+"="+home)
	return cmd
}

const (
	helperEnv    = "SSI_FS_INTERRUPT_CALL"
	helperDirEnv = "SSI_FS_INTERRUPT_DIR"
)

// TestHomeInterruptHelper is the process TestMountedHomeInterrupt
// freezes: it makes one call in the home and exits with its errno.
func TestHomeInterruptHelper(t *testing.T) {
	call := os.Getenv(helperEnv)
	if call == "" {
		t.Skip("the helper process of TestMountedHomeInterrupt")
	}
	err := interruptHelper(call, os.Getenv(helperDirEnv))
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", call, err)
	}
	var e syscall.Errno
	switch {
	case errors.As(err, &e):
		os.Exit(int(e))
	case err != nil:
		os.Exit(255)
	}
	os.Exit(0)
}

// interruptHelper makes call in home with raw system calls: no retry on
// EINTR, as in sqlite.
func interruptHelper(call, home string) error {
	db := filepath.Join(home, "db")
	switch call {
	case "fdatasync", "close":
		fd, err := unix.Open(db, unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
		if err != nil {
			return fmt.Errorf("open: %w", err)
		}
		if _, err := unix.Write(fd, []byte(map[string]string{"fdatasync": "d", "close": "e"}[call])); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if call == "close" {
			return unix.Close(fd)
		}
		return unix.Fdatasync(fd)
	case "create":
		fd, err := unix.Open(filepath.Join(home, "new"), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err == nil {
			err = unix.Close(fd)
		}
		return err
	case "truncate":
		return unix.Truncate(db, 2)
	case "rename":
		return unix.Rename(filepath.Join(home, "journal"), filepath.Join(home, "journal2"))
	case "unlink":
		return unix.Unlink(filepath.Join(home, "old"))
	case "stat":
		var st unix.Stat_t
		return unix.Stat(db, &st)
	}
	return fmt.Errorf("unknown call %q", call)
}

func mustLookup(t *testing.T, h *memHome, name string) uint64 {
	t.Helper()
	a, err := h.Lookup(1, name)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return a.Ino
}
