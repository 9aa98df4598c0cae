package fs

import (
	"context"
	"errors"
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

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The path backend over a directory that "other nodes" (the test, behind
// the mount's back) change. The mount has no default_permissions, so
// that nothing but the backend's own identity stands between a caller
// and the directory, and the kernel keeps names, attributes and failed
// lookups for an hour: a name replaced behind its back is then used as
// the kernel last saw it, and the races of a shared directory happen
// every time instead of once in many tries.

// pathUID is the unprivileged caller of these tests.
const pathUID = 1000

// pathMount serves dir through the path backend at a new mount point.
func pathMount(t *testing.T, dir string) string {
	t.Helper()
	if os.Geteuid() != 0 || testing.Short() {
		t.Skip("needs root (FUSE mount, another user's identity): run `sudo make test`")
	}
	root, err := newPathHome(dir)
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(userDir(t), "home")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	hour := time.Hour
	srv, err := gofs.Mount(mnt, root, &gofs.Options{
		EntryTimeout: &hour, AttrTimeout: &hour, NegativeTimeout: &hour,
		MountOptions: fuse.MountOptions{FsName: "ssi-path-test", AllowOther: true, DirectMount: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Unmount(); err != nil {
			t.Errorf("unmount: %v", err)
		}
	})
	return mnt
}

// pathCanary is a root-owned file outside the served directory, and what
// it must still be at the end.
type pathCanary struct {
	dir, path string
	st        unix.Stat_t
}

const pathCanaryText = "root's own, untouched\n"

func newPathCanary(t *testing.T) *pathCanary {
	t.Helper()
	c := &pathCanary{dir: userDir(t)}
	c.path = filepath.Join(c.dir, "canary")
	if err := os.WriteFile(c.path, []byte(pathCanaryText), 0o644); err != nil {
		t.Fatal(err)
	}
	old := time.Unix(1e9, 0)
	if err := os.Chtimes(c.path, old, old); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(c.path, &c.st); err != nil {
		t.Fatal(err)
	}
	return c
}

// check fails t if the canary's bytes, mode, owner or times changed, or
// if anything was made next to it.
func (c *pathCanary) check(t *testing.T) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(c.path, &st); err != nil {
		t.Fatalf("canary: %v", err)
	}
	// Not the access time: reading the canary here changes it.
	if st.Mode != c.st.Mode || st.Uid != c.st.Uid || st.Gid != c.st.Gid || st.Mtim != c.st.Mtim || st.Ctim != c.st.Ctim {
		t.Errorf("canary changed: mode %o uid %d gid %d mtime %v ctime %v, was %o %d %d %v %v",
			st.Mode, st.Uid, st.Gid, st.Mtim, st.Ctim, c.st.Mode, c.st.Uid, c.st.Gid, c.st.Mtim, c.st.Ctim)
	}
	if b, err := os.ReadFile(c.path); err != nil || string(b) != pathCanaryText {
		t.Errorf("canary holds %q, %v", b, err)
	}
	if got := pathDirNames(t, c.dir); got != "canary" {
		t.Errorf("the canary's directory holds %q", got)
	}
}

func pathDirNames(t *testing.T, dir string) string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		out = append(out, e.Name())
	}
	return strings.Join(out, " ")
}

// pathUserBin is this test binary where the user may run it.
func pathUserBin(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(userDir(t), "fs.test")
	src, err := os.Open(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

const (
	pathCallEnv = "SSI_FS_PATH_CALL"
	pathArgEnv  = "SSI_FS_PATH_ARG"
)

// asPathUser makes call on path as the user with groups, through TestPathHelper
// in bin, and returns its errno.
func asPathUser(t *testing.T, bin string, groups []uint32, call, path string) syscall.Errno {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitFor)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-test.run=^TestPathHelper$")
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), pathCallEnv+"="+call, pathArgEnv+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: pathUID, Gid: pathUID, Groups: groups}}
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee) && ee.ExitCode() > 0 && ee.ExitCode() < 255:
		return syscall.Errno(ee.ExitCode())
	}
	t.Fatalf("%s %s as uid %d: %v\n%s", call, path, pathUID, err, out)
	return 0
}

// TestPathHelper is the user's process for asPathUser: it makes one call and
// exits with its errno.
func TestPathHelper(t *testing.T) {
	call := os.Getenv(pathCallEnv)
	if call == "" {
		t.Skip("the helper process of the path backend's tests")
	}
	err := pathCall(call, os.Getenv(pathArgEnv))
	var e syscall.Errno
	switch {
	case errors.As(err, &e):
		os.Exit(int(e))
	case err != nil:
		fmt.Fprintln(os.Stderr, err)
		os.Exit(255)
	}
	os.Exit(0)
}

// pathCall makes call on p with raw system calls, with umask 002: what is
// made is then 0664 or 0775, whatever the agent's umask.
func pathCall(call, p string) error {
	defer unix.Umask(unix.Umask(0o002))
	switch call {
	case "create", "open-write":
		flags := unix.O_WRONLY | unix.O_TRUNC | unix.O_CLOEXEC
		if call == "create" {
			flags |= unix.O_CREAT
		}
		fd, err := unix.Open(p, flags, 0o666)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		_, err = unix.Write(fd, []byte("the user's\n"))
		return err
	case "truncate":
		return unix.Truncate(p, 0)
	case "chmod":
		return unix.Chmod(p, 0o666)
	case "utimes":
		return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{{Sec: 7}, {Sec: 7}}, 0)
	case "mkdir":
		return unix.Mkdir(p, 0o777)
	case "mkfifo":
		return unix.Mkfifo(p, 0o666)
	case "symlink":
		return unix.Symlink("anywhere", p)
	case "unlink":
		return unix.Unlink(p)
	case "trusted":
		return unix.Setxattr(p, "trusted.ssi", []byte("x"), 0)
	}
	return fmt.Errorf("unknown call %q", call)
}

// pathUserDir makes dir/u, the user's own directory.
func pathUserDir(t *testing.T, dir string) string {
	t.Helper()
	u := filepath.Join(dir, "u")
	if err := os.Mkdir(u, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(u, pathUID, pathUID); err != nil {
		t.Fatal(err)
	}
	return u
}

// pathPlant replaces name with a symlink to target, owned by the user (who
// planted it, from another node).
func pathPlant(t *testing.T, target, name string) {
	t.Helper()
	tmp := name + ".planted"
	if err := os.Symlink(target, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(tmp, pathUID, pathUID); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, name); err != nil {
		t.Fatal(err)
	}
}

// TestPathHomeNeverFollows: a name that the kernel saw absent, or saw as
// a file or a directory, and that became a symlink to a root-owned file
// elsewhere meanwhile, is never followed by the backend: not for the
// user and not for root, not to create, open, truncate, chmod or touch.
func TestPathHomeNeverFollows(t *testing.T) {
	dir := userDir(t)
	mnt := pathMount(t, dir)
	bin := pathUserBin(t)
	c := newPathCanary(t)
	u := pathUserDir(t, dir)
	absent := func(t *testing.T, name string) string {
		if _, err := os.Lstat(filepath.Join(mnt, "u", name)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s: %v", name, err)
		}
		pathPlant(t, c.path, filepath.Join(u, name))
		return filepath.Join(mnt, "u", name)
	}
	seenFile := func(t *testing.T, name string) string {
		if err := os.WriteFile(filepath.Join(u, name), nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(filepath.Join(u, name), pathUID, pathUID); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Lstat(filepath.Join(mnt, "u", name)); err != nil || !fi.Mode().IsRegular() {
			t.Fatalf("%s: %v %v", name, fi, err)
		}
		pathPlant(t, c.path, filepath.Join(u, name))
		return filepath.Join(mnt, "u", name)
	}
	for i, k := range []struct {
		call string
		name func(*testing.T, string) string
		want syscall.Errno
	}{
		{"create", absent, syscall.ELOOP},
		{"create", seenFile, syscall.ELOOP},
		{"open-write", seenFile, syscall.ELOOP},
		{"truncate", seenFile, syscall.EINVAL},
		{"chmod", seenFile, syscall.EOPNOTSUPP},
		// Explicit times are set on the symlink itself, as lutimes does.
		{"utimes", seenFile, 0},
	} {
		t.Run(k.call, func(t *testing.T) {
			if got := asPathUser(t, bin, nil, k.call, k.name(t, "user-"+k.call+strconv.Itoa(i))); got != k.want {
				t.Errorf("as the user: %v, want %v", got, k.want)
			}
			if got := pathErrno(pathCall(k.call, k.name(t, "root-"+k.call+strconv.Itoa(i)))); got != k.want {
				t.Errorf("as root: %v, want %v", got, k.want)
			}
			c.check(t)
		})
	}
	t.Run("through a directory", func(t *testing.T) { pathThroughDir(t, c, u, mnt, bin) })
}

// pathThroughDir: a directory the kernel saw, which became a symlink to
// the canary's directory, is not followed to create in it.
func pathThroughDir(t *testing.T, c *pathCanary, u, mnt, bin string) {
	if err := os.Mkdir(filepath.Join(u, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, who := range []string{"user", "root"} {
		if _, err := os.Lstat(filepath.Join(mnt, "u/d", who)); !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	if err := os.Rename(filepath.Join(u, "d"), filepath.Join(u, "d.moved")); err != nil {
		t.Fatal(err)
	}
	pathPlant(t, c.dir, filepath.Join(u, "d"))
	if got := asPathUser(t, bin, nil, "create", filepath.Join(mnt, "u/d/user")); got != syscall.ELOOP {
		t.Errorf("as the user: %v", got)
	}
	if got := pathErrno(pathCall("create", filepath.Join(mnt, "u/d/root"))); got != syscall.ELOOP {
		t.Errorf("as root: %v", got)
	}
	c.check(t)
}

func pathErrno(err error) syscall.Errno {
	var e syscall.Errno
	if err == nil || !errors.As(err, &e) {
		return 0
	}
	return e
}
