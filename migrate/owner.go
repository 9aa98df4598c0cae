package migrate

import (
	"errors"
	"fmt"
	"os"
	osuser "os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Cred is whose rights a file is opened with: the owner of an arriving
// process, as its images say it ran.
type Cred struct {
	UID, GID uint32
	Groups   []uint32
}

// ErrUnsafeFile means a file an arriving process holds cannot be given
// back to it as it was: its path goes through a symbolic link, its owner
// may not open it, or it is another file than the one it had. The move
// is refused (EOPNOTSUPP).
var ErrUnsafeFile = errors.New("refused")

// asCred runs fn on an OS thread of its own whose file system identity
// (fsuid, fsgid, supplementary groups) is c: the kernel checks every
// open fn makes against c's rights, and setfsuid to a non-zero uid drops
// root's file capabilities (CAP_DAC_OVERRIDE and the like) on that
// thread. The thread is never handed back to the Go scheduler: its
// goroutine ends locked, so the runtime ends the thread with it, and the
// identity cannot leak into unrelated goroutines. (Threads the runtime
// creates meanwhile come from its template thread, not a locked one.)
func asCred(c Cred, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: see above.
		if err := setThreadCred(c); err != nil {
			errc <- err
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// setThreadCred gives the calling (locked) thread c's file system
// identity. unix.Setgroups, unlike syscall.Setgroups, is a raw system
// call: it changes this thread alone.
func setThreadCred(c Cred) error {
	gs := make([]int, len(c.Groups))
	for i, g := range c.Groups {
		gs[i] = int(g)
	}
	if err := unix.Setgroups(gs); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	// setfsuid and setfsgid report failure only through the previous
	// value: read the new one back (an invalid id changes nothing).
	_, _ = unix.SetfsgidRetGid(int(c.GID))
	_, _ = unix.SetfsuidRetUid(int(c.UID))
	gid, _ := unix.SetfsgidRetGid(-1)
	uid, _ := unix.SetfsuidRetUid(-1)
	if uint32(gid) != c.GID || uint32(uid) != c.UID {
		return fmt.Errorf("cannot take fsuid %d fsgid %d (have %d %d)", c.UID, c.GID, uid, gid)
	}
	return nil
}

// noLinks resolves a path without following any symbolic link, magic
// /proc links included: a path that went through one at dump time would
// not have been recorded (the kernel records the resolved name), so one
// found now was put there since.
const noLinks = unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// cleanPath refuses what the kernel never records as a file's name: a
// relative path, "." or ".." elements, doubled slashes.
func cleanPath(p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p || strings.Contains(p, "\x00") {
		return fmt.Errorf("%w: %q is not a clean absolute path", ErrUnsafeFile, p)
	}
	return nil
}

// openPath opens p with O_PATH, relative to "/", as the calling thread's
// identity, following no link. O_PATH needs search rights on the
// directories only, and runs no driver's open: a device or FIFO put in
// the file's place is not touched.
func openPath(p string, dir bool) (*os.File, error) {
	if err := cleanPath(p); err != nil {
		return nil, err
	}
	flags := uint64(unix.O_PATH | unix.O_CLOEXEC | unix.O_NOFOLLOW)
	if dir {
		flags |= unix.O_DIRECTORY
	}
	fd, err := unix.Openat2(unix.AT_FDCWD, p, &unix.OpenHow{Flags: flags, Resolve: noLinks})
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrUnsafeFile, p, openError(err))
	}
	return os.NewFile(uintptr(fd), p), nil
}

// openError says why an open as the owner failed, in the owner's terms.
func openError(err error) string {
	switch {
	case errors.Is(err, unix.ELOOP), errors.Is(err, unix.EXDEV):
		return "a symbolic link is in its path"
	case errors.Is(err, unix.EACCES), errors.Is(err, unix.EPERM):
		return "its owner may not open it"
	case errors.Is(err, unix.ENOENT):
		return "missing"
	case errors.Is(err, unix.ENOTDIR):
		return "a part of its path is not a directory"
	}
	return err.Error()
}

// reopen opens the file f (an O_PATH descriptor) again for access
// (O_RDONLY, O_WRONLY or O_RDWR), as the calling thread's identity: the
// kernel checks the owner's rights on the very inode f names. The magic
// link followed is our own descriptor's, not a path anyone else chose.
func reopen(f *os.File, access int) (*os.File, error) {
	fd, err := unix.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), access|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %s", ErrUnsafeFile, f.Name(), openError(err))
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

// searchable fails unless the directory f names may be entered by the
// calling thread's identity (what a working directory needs).
func searchable(f *os.File) error {
	err := unix.Faccessat2(int(f.Fd()), "", unix.X_OK, unix.AT_EMPTY_PATH|unix.AT_EACCESS)
	if err != nil {
		return fmt.Errorf("%w: %s: %s", ErrUnsafeFile, f.Name(), openError(err))
	}
	return nil
}

// fstat is f's status.
func fstat(f *os.File) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstat(int(f.Fd()), &st)
	return st, err
}

// kindName names a file kind (st_mode & S_IFMT) for a refusal.
func kindName(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "a regular file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFCHR:
		return "a character device"
	case unix.S_IFBLK:
		return "a block device"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	case unix.S_IFLNK:
		return "a symbolic link"
	}
	return fmt.Sprintf("of kind %#o", mode&unix.S_IFMT)
}

// accessOf is the O_ACCMODE part of open flags.
func accessOf(flags uint32) int { return int(flags) & unix.O_ACCMODE }

// union is the access mode that allows both a and b.
func union(a, b int) int {
	if a == b {
		return a
	}
	return unix.O_RDWR
}

// UserCred is uid's identity in this node's user database: its primary
// group and the groups it belongs to. A uid the node does not know gets
// the group nogroup (65534) and no others: the least it could have.
func UserCred(uid uint32) Cred {
	c := Cred{UID: uid, GID: 65534}
	u, err := osuser.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return c
	}
	if g, err := strconv.ParseUint(u.Gid, 10, 32); err == nil {
		c.GID = uint32(g)
	}
	ids, _ := u.GroupIds()
	for _, id := range ids {
		if g, err := strconv.ParseUint(id, 10, 32); err == nil {
			c.Groups = append(c.Groups, uint32(g))
		}
	}
	slices.Sort(c.Groups)
	return c
}
