package migrate

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// A process on a terminal of the node (a pty of the machine's devpts,
// as a job could only get from outside) cannot move: CRIU would have to
// take the node's terminal with it.
func TestCantMoveANodeTerminal(t *testing.T) {
	mfd, err := unix.Open("/dev/ptmx", unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no pty here: %v", err)
	}
	defer unix.Close(mfd)
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	sfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(mfd), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		t.Fatal(errno)
	}
	slave := os.NewFile(sfd, "pty-slave")
	defer slave.Close()
	cmd := exec.Command("sleep", "30")
	cmd.Stdin = slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	if why := CantMove(cmd.Process.Pid); !strings.Contains(why, "uses a terminal of the node (/dev/pts/") {
		t.Fatalf("CantMove of a process on the node's pty: %q", why)
	}
}

// A process on a pty of its own devpts, in a mount namespace of its own
// (a job's terminal): nothing stops its move, whether it opened the pty
// through /dev/ptmx (as script does) or holds its slave. The same
// program on the node's devpts is refused.
func TestCantMoveAllowsTheJobsOwnTerminal(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: a mount namespace with its own devpts")
	}
	if _, err := exec.LookPath("script"); err != nil {
		t.Skip("no script(1)")
	}
	for _, own := range []bool{true, false} {
		mount := ""
		if own {
			mount = "mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts /dev/pts && "
		}
		cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c",
			mount+`exec script -qfc "exec sleep 30" /dev/null`)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		pid := cmd.Process.Pid
		// script has opened its pty and started sleep on it.
		deadline := time.Now().Add(10 * time.Second)
		for len(Tree(pid)) < 2 || !holdsTerminal(Tree(pid)[len(Tree(pid))-1]) {
			if time.Now().After(deadline) {
				_ = cmd.Process.Kill()
				t.Fatalf("script and sleep did not start on a pty: tree %v", Tree(pid))
			}
			time.Sleep(20 * time.Millisecond)
		}
		why := CantMove(pid)
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		switch {
		case own && why != "":
			t.Fatalf("CantMove of a process on its own devpts's pty: %q", why)
		case !own && !strings.Contains(why, "terminal of the node"):
			t.Fatalf("CantMove of a process on the node's pty: %q", why)
		}
	}
}

// holdsTerminal reports whether pid has a pty slave as its stdin.
func holdsTerminal(pid int) bool {
	t, err := os.Readlink("/proc/" + itoa(pid) + "/fd/0")
	return err == nil && strings.HasPrefix(t, "/dev/pts/")
}
