// Package jobns owns a cluster process's own namespaces: what a job's init
// mounts before the command starts, and which of a job's mounts are its own
// and which are the node's.
//
// A job runs in its own PID and mount namespace. Its mount namespace is the
// node's with four differences, all private to the job: /proc for the job's
// PID namespace (so /proc/self, /proc/<getpid()> and ps inside the job are
// right, and CRIU, running as the job's user, finds a /proc that belongs to
// the task), and tmpfs on /tmp and /dev/shm and a devpts instance on
// /dev/pts (so temporary files, POSIX shared memory and the job's terminal
// move with it: CRIU dumps these mounts with their contents). Every other
// mount is the node's: a move does not carry it but binds the destination
// node's mount at the same place (CRIU's external mounts), as runc does for
// a container's bind mounts.
//
// A job also runs as its caller really is: the agent reads the caller's
// resource limits, umask, groups and oom_score_adj (a Caller, in the
// Spec) and the init applies them (Caller.Apply) before it runs the
// command.
//
// The package must not start processes or talk to CRIU: job-init (cmd/ssi)
// calls Setup, the migration code asks NodeMounts which mounts to leave
// behind.
package jobns

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"ssi/fs/mountinfo"
)

// own are the job's private mounts: mount point and file system type.
var own = map[string]string{
	"/proc":    "proc",
	"/tmp":     "tmpfs",
	"/dev/shm": "tmpfs",
	"/dev/pts": "devpts",
}

// Own reports whether the mount at mountpoint, of type fstype, is one a
// job's init made for the job alone.
func Own(mountpoint, fstype string) bool {
	t, ok := own[mountpoint]
	return ok && t == fstype
}

// OwnPrefixes are the directories whose contents belong to the job alone
// (with a trailing slash): files there move inside the images, never by
// path on the destination node.
func OwnPrefixes() []string {
	return []string{"/tmp/", "/dev/shm/", "/dev/pts/"}
}

// TmpSize bounds each of a job's tmpfs mounts; the job's memory cgroup
// bounds what they hold in total.
const TmpSize = "50%"

// Setup makes the calling process's mount namespace a job's. It must run
// as root, in a fresh mount namespace (CLONE_NEWNS) and as PID 1 of a fresh
// PID namespace, before any of the job's code. Every path it touches is
// fixed here: nothing a user controls is followed as root.
func Setup() error {
	// Nothing the job mounts may leak to the node, nor the node's later
	// mounts into the job: CRIU then sees a plain tree.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("making the job's mounts private: %w", err)
	}
	// The node's /proc, /dev/shm and /dev/pts may be stacked several
	// times; the job sees none of them.
	for _, mp := range []string{"/proc", "/dev/shm", "/dev/pts"} {
		for range 16 {
			if err := unix.Unmount(mp, unix.MNT_DETACH); err != nil {
				break
			}
		}
	}
	const nosuid = unix.MS_NOSUID | unix.MS_NODEV
	mounts := []struct {
		fstype, target, data string
		flags                uintptr
	}{
		{"proc", "/proc", "", nosuid | unix.MS_NOEXEC},
		{"tmpfs", "/tmp", "mode=1777,size=" + TmpSize, nosuid},
		{"tmpfs", "/dev/shm", "mode=1777,size=" + TmpSize, nosuid},
		// ptmxmode=0666: /dev/ptmx (the node's device) opens the devpts
		// instance mounted at /dev/pts next to it, this one.
		{"devpts", "/dev/pts", "newinstance,ptmxmode=0666,mode=0620", unix.MS_NOSUID | unix.MS_NOEXEC},
	}
	for _, m := range mounts {
		if err := unix.Mount(m.fstype, m.target, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mounting the job's %s on %s: %w", m.fstype, m.target, err)
		}
	}
	return nil
}

// Mount is one line of a mount table (package fs/mountinfo reads them).
type Mount = mountinfo.Mount

// Mounts reads the mount table of pid's mount namespace.
func Mounts(pid int) ([]Mount, error) { return mountinfo.Of(pid) }

// ErrNotAJob means pid's mounts are not a job's: it shares the caller's
// mount namespace or lacks the job's own /proc.
var ErrNotAJob = errors.New("not in a job's own mount namespace")

// NodeMounts lists the mount points of pid's mount namespace that are
// the node's, not the job's (its root excepted): a move leaves them behind
// and binds the destination's mount at the same place. Each appears once,
// in mount order.
func NodeMounts(pid int) ([]string, error) {
	theirs, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", pid))
	if err != nil {
		return nil, err
	}
	if ours, err := os.Readlink("/proc/self/ns/mnt"); err != nil || ours == theirs {
		return nil, ErrNotAJob
	}
	ms, err := Mounts(pid)
	if err != nil {
		return nil, err
	}
	hasProc := false
	seen := map[string]bool{}
	var out []string
	for _, m := range ms {
		if Own(m.Mountpoint, m.FSType) {
			hasProc = hasProc || m.Mountpoint == "/proc"
			continue
		}
		if m.Mountpoint == "/" || seen[m.Mountpoint] {
			continue
		}
		seen[m.Mountpoint] = true
		out = append(out, m.Mountpoint)
	}
	if !hasProc {
		return nil, ErrNotAJob
	}
	return out, nil
}

// ValidNodeMount checks a mount point a peer names for a restore: an
// absolute, clean path that is a mount point of this node (of the calling
// process's mount namespace) and not one of a job's own.
func ValidNodeMount(mp string, here map[string]bool) error {
	if !filepath.IsAbs(mp) || filepath.Clean(mp) != mp || mp == "/" {
		return fmt.Errorf("%q is not a clean absolute mount point", mp)
	}
	if _, ok := own[mp]; ok {
		return fmt.Errorf("%s is the job's own mount, not the node's", mp)
	}
	if !here[mp] {
		return fmt.Errorf("this node has no mount on %s", mp)
	}
	return nil
}

// MountPoints is the set of mount points of pid's mount namespace.
func MountPoints(pid int) (map[string]bool, error) {
	ms, err := Mounts(pid)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, m := range ms {
		out[m.Mountpoint] = true
	}
	return out, nil
}

// Spec is what the agent tells a job's init once the init is in the job's
// cgroup: who the job runs as, where and with what environment. It comes
// on a pipe, not in the init's environment or arguments, because the init
// starts as root (to mount the job's own file systems) and must not run
// with an environment the user chose.
type Spec struct {
	UID uint32   `json:"uid"`
	GID uint32   `json:"gid"`
	Dir string   `json:"dir"`
	Env []string `json:"env"`
	// TTY: the command gets a terminal of its own, a pty of the job's
	// devpts, of size Size at first; the init relays it to its stdin and
	// stdout and takes each later size from WinsizeFD.
	TTY  bool    `json:"tty,omitempty"`
	Size Winsize `json:"size,omitzero"`
	// Caller is the rest of who asked for the job (limits, umask,
	// groups, oom_score_adj); nil keeps the init's own, which only
	// tests do.
	Caller *Caller `json:"caller,omitempty"`
}

// WinsizeFD is where a terminal job's init reads window sizes: a pipe
// from the agent of WinsizeLen-byte records (Winsize.Bytes), each applied
// as it comes. It is a pipe, not a signal or a frame on stdin, so that it
// moves with the job like its stdio pipes and cannot mix with input.
const WinsizeFD = 4

// WinsizeLen is the size of one window size record.
const WinsizeLen = 8

// Winsize is a terminal's size, as the kernel's struct winsize holds it.
type Winsize struct {
	Rows   uint16 `json:"rows"`
	Cols   uint16 `json:"cols"`
	XPixel uint16 `json:"xpixel,omitempty"`
	YPixel uint16 `json:"ypixel,omitempty"`
}

// DefaultWinsize is the size of a terminal whose caller has none.
var DefaultWinsize = Winsize{Rows: 24, Cols: 80}

// Bytes is w as a record: four big-endian uint16, rows first.
func (w Winsize) Bytes() []byte {
	b := make([]byte, 0, WinsizeLen)
	for _, v := range []uint16{w.Rows, w.Cols, w.XPixel, w.YPixel} {
		b = append(b, byte(v>>8), byte(v))
	}
	return b
}

// ParseWinsize reads one record; false if b is not one, or says a size
// no terminal has (no rows or no columns).
func ParseWinsize(b []byte) (Winsize, bool) {
	if len(b) != WinsizeLen {
		return Winsize{}, false
	}
	u := func(i int) uint16 { return uint16(b[i])<<8 | uint16(b[i+1]) }
	w := Winsize{Rows: u(0), Cols: u(2), XPixel: u(4), YPixel: u(6)}
	return w, w.Rows > 0 && w.Cols > 0
}

// MaxSpec bounds a Spec on the wire (the environment is the user's).
const MaxSpec = 4 << 20
