package migrate

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// holdDeleted starts a process that holds file dir/name of size bytes
// open after it was unlinked, and returns its pid.
func holdDeleted(t *testing.T, dir string, size int64) int {
	t.Helper()
	p := filepath.Join(dir, "held")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `exec 3<"$1"; rm "$1"; echo ready; exec sleep 60`, "-", p)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	b := make([]byte, 6)
	done := make(chan error, 1)
	go func() { _, err := out.Read(b); done <- err }()
	select {
	case err := <-done:
		if err != nil || string(b) != "ready\n" {
			t.Fatalf("holder: %q %v", b, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the holder did not start")
	}
	return cmd.Process.Pid
}

// CRIU carries a deleted open file of a job's own /tmp in the images, up
// to GhostLimit; one anywhere else is named before anyone tries.
func TestCantMoveDeletedFiles(t *testing.T) {
	outside, err := os.MkdirTemp("/var/tmp", "ssi-inspect-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(outside) })
	if why := CantMove(holdDeleted(t, outside, 10)); !strings.Contains(why, "deleted file open outside its own /tmp") {
		t.Fatalf("a deleted file outside /tmp: cantmove %q", why)
	}
	tmp, err := os.MkdirTemp("/tmp", "ssi-inspect-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	if why := CantMove(holdDeleted(t, tmp, 10)); why != "" {
		t.Fatalf("a small deleted file in /tmp: cantmove %q, want none", why)
	}
	if why := CantMove(holdDeleted(t, tmp, GhostLimit+1)); !strings.Contains(why, "at most 64 MiB move") {
		t.Fatalf("a deleted file over the limit in /tmp: cantmove %q", why)
	}
}

// A file whose name the kernel marks deleted although the name still
// reaches it (FUSE unhashes the dentry of a file whose lookup failed
// once) is not deleted: a move carries it. Here the mark comes from an
// unlink undone by a link back: the descriptor reads "held (deleted)"
// and held is the file again.
func TestCantMoveAFileOnlyMarkedDeleted(t *testing.T) {
	dir, err := os.MkdirTemp("/var/tmp", "ssi-inspect-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := filepath.Join(dir, "held")
	if err := os.WriteFile(filepath.Join(dir, "keep"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "keep"), p); err != nil {
		t.Fatal(err)
	}
	pid := holdDeleted(t, dir, 0)
	fd := fmt.Sprintf("/proc/%d/fd/3", pid)
	if why := CantMove(pid); !strings.Contains(why, "deleted file open") {
		t.Fatalf("while held is gone: cantmove %q", why)
	}
	if err := os.Link(filepath.Join(dir, "keep"), p); err != nil {
		t.Fatal(err)
	}
	if l, _ := os.Readlink(fd); l != p+" (deleted)" {
		t.Fatalf("the descriptor reads %q, want %q: the test no longer makes the mark", l, p+" (deleted)")
	}
	if why := CantMove(pid); why != "" {
		t.Fatalf("a file only marked deleted: cantmove %q", why)
	}
	if name, deleted, err := fileName(fd); err != nil || deleted || name != p {
		t.Fatalf("fileName: %q deleted=%v %v, want %q", name, deleted, err, p)
	}
	// Another file at the name is not the one held.
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, deleted, _ := fileName(fd); !deleted {
		t.Fatal("a new file at the name passes for the held one")
	}
}
