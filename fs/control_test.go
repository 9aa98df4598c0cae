package fs

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// callerCtx is a request's context from uid, as the kernel sends it.
func callerCtx(uid uint32) context.Context {
	return fuse.NewContext(context.Background(), &fuse.Caller{Owner: fuse.Owner{Uid: uid, Gid: uid}})
}

// twoOwners is a view of two processes: 7, uid 1000's, and 8, root's.
func twoOwners() *fakeView {
	return &fakeView{admin: map[string]bool{}, procs: []ProcView{
		{CPID: 7, Node: "node1", UID: 1000, GID: 1000},
		{CPID: 8, Node: "node1", UID: 0, GID: 0},
	}}
}

func (v *fakeView) askedSoFar() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return slices.Clone(v.asked)
}

// Control files are their owner's, mode 0644; who may write is decided
// at open and the opener's uid is what every write through the handle
// carries, whoever writes.
func TestControlFilesCheckedAtOpen(t *testing.T) {
	v := twoOwners()
	where := procFile(v, 7, "where", cacheTimes{})
	var a fuse.AttrOut
	if e := where.Getattr(callerCtx(1001), nil, &a); e != 0 || a.Mode != 0o644 || a.Uid != 1000 || a.Gid != 1000 {
		t.Fatalf("where's attributes: %v mode %o owner %d:%d", e, a.Mode, a.Uid, a.Gid)
	}
	for _, flags := range []uint32{syscall.O_WRONLY, syscall.O_RDWR, syscall.O_WRONLY | syscall.O_TRUNC} {
		if _, _, e := where.Open(callerCtx(1001), flags); e != syscall.EACCES {
			t.Fatalf("another user's open for writing (%#x): %v, want EACCES", flags, e)
		}
	}
	if _, _, e := where.Open(callerCtx(1001), syscall.O_RDONLY); e != 0 {
		t.Fatalf("another user's open for reading: %v", e)
	}
	// The owner opens, root writes (a root program handed the owner's
	// descriptor): the request is the owner's.
	fh, _, e := where.Open(callerCtx(1000), syscall.O_WRONLY)
	if e != 0 {
		t.Fatalf("the owner's open: %v", e)
	}
	if n, e := where.Write(callerCtx(0), fh, []byte("node2\n"), 0); e != 0 || n != 6 {
		t.Fatalf("write through the owner's handle: %d, %v", n, e)
	}
	// Root opens: root's request, whoever writes through it.
	fh, _, e = where.Open(callerCtx(0), syscall.O_WRONLY)
	if e != 0 {
		t.Fatalf("root's open: %v", e)
	}
	if _, e := where.Write(callerCtx(1000), fh, []byte("home"), 0); e != 0 {
		t.Fatalf("write through root's handle: %v", e)
	}
	if got, want := v.askedSoFar(), []string{"migrate 7 node2 by 1000", "migrate 7 home by 0"}; !slices.Equal(got, want) {
		t.Fatalf("asked %q, want %q", got, want)
	}
}

// lock follows where's rule; read-only files are the owner's and
// nobody's to write; admin files are root's; bad values keep their
// errnos.
func TestOtherControlFilesCheckedAtOpen(t *testing.T) {
	v := twoOwners()
	var a fuse.AttrOut
	lock := procFile(v, 8, "lock", cacheTimes{})
	if _, _, e := lock.Open(callerCtx(1000), syscall.O_WRONLY); e != syscall.EACCES {
		t.Fatalf("uid 1000 opening root's lock: %v, want EACCES", e)
	}
	fh, _, _ := lock.Open(callerCtx(0), syscall.O_WRONLY)
	if _, e := lock.Write(callerCtx(0), fh, []byte("maybe"), 0); e != syscall.EINVAL {
		t.Fatalf("garbage to lock: %v, want EINVAL", e)
	}

	status := procFile(v, 7, "status", cacheTimes{})
	if e := status.Getattr(callerCtx(0), nil, &a); e != 0 || a.Mode != 0o444 || a.Uid != 1000 {
		t.Fatalf("status: %v mode %o uid %d", e, a.Mode, a.Uid)
	}
	if _, _, e := status.Open(callerCtx(0), syscall.O_WRONLY); e != syscall.EACCES {
		t.Fatalf("root opening status for writing: %v", e)
	}

	block := adminFile(v, "block", cacheTimes{}, nil)
	if e := block.Getattr(callerCtx(1000), nil, &a); e != 0 || a.Mode != 0o644 || a.Uid != 0 || a.Gid != 0 {
		t.Fatalf("admin/block: %v mode %o owner %d:%d", e, a.Mode, a.Uid, a.Gid)
	}
	if _, _, e := block.Open(callerCtx(1000), syscall.O_WRONLY); e != syscall.EACCES {
		t.Fatalf("a user's open of admin/block: %v, want EACCES", e)
	}
	fh, _, _ = block.Open(callerCtx(0), syscall.O_WRONLY)
	if _, e := block.Write(callerCtx(1000), fh, []byte("1\n"), 0); e != 0 || !v.Admin()["block"] {
		t.Fatalf("root's write to admin/block: %v, %v", e, v.Admin())
	}
	if _, e := block.Write(callerCtx(0), fh, []byte("yes"), 0); e != syscall.EINVAL {
		t.Fatalf("garbage to admin/block: %v, want EINVAL", e)
	}
}

// With other users' processes hidden, their files answer ENOENT to
// everyone but the owner and root.
func TestControlFilesHidden(t *testing.T) {
	v := twoOwners()
	v.hide = true
	var a fuse.AttrOut
	rootWhere := procFile(v, 8, "where", cacheTimes{})
	if e := rootWhere.Getattr(callerCtx(1000), nil, &a); e != syscall.ENOENT {
		t.Fatalf("root's where, as uid 1000: %v, want ENOENT", e)
	}
	if _, _, e := rootWhere.Open(callerCtx(1000), syscall.O_RDONLY); e != syscall.ENOENT {
		t.Fatalf("opening root's where as uid 1000: %v, want ENOENT", e)
	}
	if e := rootWhere.Getattr(callerCtx(0), nil, &a); e != 0 {
		t.Fatalf("root's where, as root: %v", e)
	}
	if e := procFile(v, 7, "cmdline", cacheTimes{}).Getattr(callerCtx(1000), nil, &a); e != 0 {
		t.Fatalf("the owner's own cmdline: %v", e)
	}
	if e := procFile(v, 7, "cmdline", cacheTimes{}).Getattr(callerCtx(1001), nil, &a); e != syscall.ENOENT {
		t.Fatalf("uid 1000's cmdline as uid 1001: %v, want ENOENT", e)
	}
}

// asUID runs a shell script as uid (root: as is), with a deadline.
func asUID(t *testing.T, uid int, script string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	argv := append([]string{"bash", "-c", script, "bash"}, args...)
	if uid != 0 {
		argv = append([]string{"setpriv", "--reuid", itoa(uid), "--regid", itoa(uid), "--clear-groups"}, argv...)
	}
	out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
	return string(out), err
}

// On a mount, control files show their owners and modes, as the kernel
// checks them (default_permissions).
func TestMountedControlFilesOwners(t *testing.T) {
	if os.Geteuid() != 0 || testing.Short() {
		t.Skip("needs root (FUSE mount): run `sudo make test`")
	}
	v := twoOwners()
	dir := mountAt(t, v, Options{})
	for _, c := range []struct {
		path      string
		mode      os.FileMode
		uid, gid  uint32
		directory bool
	}{
		{"proc/7", 0o555, 1000, 1000, true}, {"proc/7/where", 0o644, 1000, 1000, false},
		{"proc/7/lock", 0o644, 1000, 1000, false}, {"proc/7/status", 0o444, 1000, 1000, false},
		{"proc/8/where", 0o644, 0, 0, false}, {"admin/block", 0o644, 0, 0, false},
	} {
		st, err := os.Stat(filepath.Join(dir, c.path))
		if err != nil {
			t.Fatal(err)
		}
		sys := st.Sys().(*syscall.Stat_t)
		if st.Mode().Perm() != c.mode || st.IsDir() != c.directory || sys.Uid != c.uid || sys.Gid != c.gid {
			t.Errorf("%s: %v owned by %d:%d, want %o %d:%d", c.path, st.Mode(), sys.Uid, sys.Gid, c.mode, c.uid, c.gid)
		}
	}
}

// uid 1000 moves its own process; it cannot even open root's process's
// where (nor lock) for writing; a descriptor uid 1000 opened acts as uid
// 1000 in root's hands.
func TestMountedControlFilesOpenedAs(t *testing.T) {
	if os.Geteuid() != 0 || testing.Short() {
		t.Skip("needs root (FUSE mount): run `sudo make test`")
	}
	v := twoOwners()
	dir := mountAt(t, v, Options{})
	if out, err := asUID(t, 1000, `printf node2 > "$1"`, filepath.Join(dir, "proc/7/where")); err != nil {
		t.Fatalf("the owner's move: %v: %s", err, out)
	}
	for _, f := range []string{"proc/8/where", "proc/8/lock"} {
		out, err := asUID(t, 1000, `exec 3>"$1" && echo opened`, filepath.Join(dir, f))
		if err == nil || strings.Contains(out, "opened") || !strings.Contains(out, "Permission denied") {
			t.Fatalf("uid 1000 opening %s for writing: %v: %q", f, err, out)
		}
	}
	// A descriptor uid 1000 opened, taken by root (pidfd_getfd): root's
	// write through it is uid 1000's request.
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	holder := exec.CommandContext(ctx, "setpriv", "--reuid", "1000", "--regid", "1000", "--clear-groups",
		"bash", "-c", `exec 3>"$1" && echo opened && exec sleep 60`, "bash", filepath.Join(dir, "proc/7/where"))
	stdout, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = holder.Process.Kill(); _ = holder.Wait() })
	if line, err := bufio.NewReader(stdout).ReadString('\n'); err != nil || line != "opened\n" {
		t.Fatalf("the holder: %q, %v", line, err)
	}
	pidfd, err := unix.PidfdOpen(holder.Process.Pid, 0)
	if err != nil {
		t.Skipf("pidfd_open: %v", err)
	}
	defer unix.Close(pidfd)
	fd, err := unix.PidfdGetfd(pidfd, 3, 0)
	if err != nil {
		t.Skipf("pidfd_getfd: %v", err)
	}
	f := os.NewFile(uintptr(fd), "where")
	defer f.Close()
	if _, err := f.WriteString("home\n"); err != nil {
		t.Fatalf("root's write through uid 1000's descriptor: %v", err)
	}
	if got, want := v.askedSoFar(), []string{"migrate 7 node2 by 1000", "migrate 7 home by 1000"}; !slices.Equal(got, want) {
		t.Fatalf("asked %q, want %q", got, want)
	}
}

// fs.hide_other_users on a mount: a user lists and reaches only their
// own processes, even right after root looked the others up with names
// cached; root sees all; off, everyone sees all.
func TestMountedHideOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 || testing.Short() {
		t.Skip("needs root (FUSE mount): run `sudo make test`")
	}
	v := twoOwners()
	v.hide = true
	dir := mountAt(t, v, Options{AttrTimeout: time.Minute, EntryTimeout: time.Minute})
	proc := filepath.Join(dir, "proc")
	if got := names(t, proc); got != "7 8" {
		t.Fatalf("root lists %q", got)
	}
	if got := readFile(t, filepath.Join(proc, "8/where")); got != "node1\n" {
		t.Fatalf("root reads %q", got)
	}
	out, err := asUID(t, 1000, `ls "$1"`, proc)
	if err != nil || strings.Fields(out)[0] != "7" || len(strings.Fields(out)) != 1 {
		t.Fatalf("uid 1000 lists %q, %v", out, err)
	}
	for _, script := range []string{`stat "$1/8"`, `cat "$1/8/status"`, `ls "$1/8"`, `echo node2 > "$1/8/where"`} {
		out, err := asUID(t, 1000, script, proc)
		if err == nil || !strings.Contains(out, "No such file or directory") {
			t.Fatalf("uid 1000: %s: %v: %q", script, err, out)
		}
	}
	if out, err := asUID(t, 1000, `cat "$1/7/where"`, proc); err != nil || out != "node1\n" {
		t.Fatalf("uid 1000 reads its own where: %q, %v", out, err)
	}
	v.mu.Lock()
	v.hide = false
	v.mu.Unlock()
	if out, err := asUID(t, 1000, `ls "$1"`, proc); err != nil || strings.Join(strings.Fields(out), " ") != "7 8" {
		t.Fatalf("hiding off, uid 1000 lists %q, %v", out, err)
	}
}
