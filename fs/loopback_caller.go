package fs

import (
	"context"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Who the path backend's changes run as (loopback.go).
//
// The kernel checks a file operation against the calling thread's file
// system identity: its fsuid, fsgid, supplementary groups and effective
// capabilities, each of them per thread in Linux (glibc and Go's
// syscall.Setgroups change every thread of the process; the raw calls of
// x/sys/unix change only the calling one). An operation on behalf of a
// user runs on a thread locked to its goroutine, switched to the user
// for the operation and back after it:
//   - fsuid and fsgid are the caller's, as FUSE reports them;
//   - the supplementary groups are the calling thread's, read from
//     /proc/<tid>/status when its fsuid and fsgid there are the caller's
//     (a thread id reused by another user meanwhile gives none);
//   - no effective capability: the ones that go with fsuid 0
//     (CAP_DAC_OVERRIDE, CAP_CHOWN, CAP_FOWNER, CAP_MKNOD, ...) leave
//     with it anyway; this takes the others too (CAP_SYS_ADMIN for
//     trusted.* attributes, CAP_SETFCAP for security.capability, ...).
//
// A thread whose identity could not be put back exactly is never used
// again: its goroutine returns still locked to it, and Go ends a thread
// whose goroutine exits locked.
//
// The threads are kept between operations rather than made for each,
// and each has a file system context of its own (CLONE_FS) with umask 0:
// the kernel has applied the caller's umask to the modes it sends, and
// the agent's must not apply again. Such a thread is never handed back
// to Go either. As go-fuse serves each request in a goroutine of its
// own, there are as many threads as operations in flight (an operation
// blocked on a slow shared file system holds one), and at most
// callerIdle wait for work.

// callerIdle is how many threads may wait for an operation.
const callerIdle = 16

// nobodyID is who a request without a caller runs as.
const nobodyID = 65534

// callerJob is one operation for a caller.
type callerJob struct {
	who  fuse.Caller
	op   func() error
	done chan error
}

// callers hands operations to the waiting threads.
var callers struct {
	jobs chan callerJob
	idle atomic.Int32 // threads waiting on jobs
}

func init() { callers.jobs = make(chan callerJob) }

// asCaller runs op with the file system identity of ctx's caller (see
// above) and returns its error. Root's operations run as the agent, on
// the same threads (for their umask).
func asCaller(ctx context.Context, op func() error) error {
	j := callerJob{who: fuse.Caller{Owner: fuse.Owner{Uid: nobodyID, Gid: nobodyID}}, op: op, done: make(chan error, 1)}
	if c, ok := fuse.FromContext(ctx); ok {
		j.who = *c
	}
	select {
	case callers.jobs <- j:
	default:
		go callerThread(j)
	}
	return <-j.done
}

// callerThread runs first, then whatever comes while fewer than
// callerIdle threads wait. It never unlocks its thread (see above).
func callerThread(first callerJob) {
	runtime.LockOSThread()
	base, err := threadIdentity()
	if err != nil {
		first.done <- err
		return
	}
	// Without a file system context of its own, the umask is the whole
	// process's: leave it, and the agent's applies too.
	if unix.Unshare(unix.CLONE_FS) == nil {
		unix.Umask(0)
	}
	j := first
	for {
		clean, err := runAsCaller(j.who, base, j.op)
		j.done <- err
		if !clean {
			return
		}
		select {
		case j = <-callers.jobs:
			continue
		default:
		}
		if callers.idle.Add(1) > callerIdle {
			callers.idle.Add(-1)
			return
		}
		j = <-callers.jobs
		callers.idle.Add(-1)
	}
}

// threadID is what the kernel checks a thread's file operations
// against.
type threadID struct {
	fsuid, fsgid int
	groups       []int
	caps         [2]unix.CapUserData
}

func capHeader() *unix.CapUserHeader {
	return &unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
}

// threadIdentity is the calling thread's identity. setfsuid and
// setfsgid with an invalid id (-1) change nothing and return the current
// one.
func threadIdentity() (threadID, error) {
	var id threadID
	id.fsuid, _ = unix.SetfsuidRetUid(-1)
	id.fsgid, _ = unix.SetfsgidRetGid(-1)
	var err error
	if id.groups, err = unix.Getgroups(); err != nil {
		return id, err
	}
	return id, unix.Capget(capHeader(), &id.caps[0])
}

func (a threadID) equal(b threadID) bool {
	return a.fsuid == b.fsuid && a.fsgid == b.fsgid && a.caps == b.caps && slices.Equal(a.groups, b.groups)
}

// runAsCaller runs op as who on the locked calling thread, whose identity is
// base, then restores base; clean is false if that failed.
func runAsCaller(who fuse.Caller, base threadID, op func() error) (clean bool, err error) {
	if who.Uid == 0 {
		return true, op()
	}
	if err = becomeCaller(who, base); err == nil {
		err = op()
	} else {
		// The agent cannot act as the user (it is not root): refuse
		// rather than act as the agent.
		err = syscall.EIO
	}
	return restoreThread(base), err
}

// becomeCaller switches the calling thread to who, groups first (it needs
// CAP_SETGID), capabilities last.
func becomeCaller(who fuse.Caller, base threadID) error {
	if err := unix.Setgroups(groupsOf(who)); err != nil {
		return err
	}
	unix.Setfsgid(int(who.Gid))
	unix.Setfsuid(int(who.Uid))
	now, err := threadIdentity()
	if err != nil {
		return err
	}
	if now.fsuid != int(who.Uid) || now.fsgid != int(who.Gid) {
		return syscall.EPERM
	}
	none := base.caps
	for i := range none {
		none[i].Effective = 0
	}
	return unix.Capset(capHeader(), &none[0])
}

// restoreThread switches the calling thread back to base, capabilities first
// (setgroups needs CAP_SETGID), and reports whether it is base again.
func restoreThread(base threadID) bool {
	caps := base.caps
	if unix.Capset(capHeader(), &caps[0]) != nil {
		return false
	}
	unix.Setfsuid(base.fsuid)
	unix.Setfsgid(base.fsgid)
	if unix.Setgroups(base.groups) != nil {
		return false
	}
	now, err := threadIdentity()
	return err == nil && now.equal(base)
}

// groupsOf is the supplementary groups of the calling thread who names,
// or none if they cannot be known for sure.
func groupsOf(who fuse.Caller) []int {
	if who.Pid == 0 {
		return nil
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(int(who.Pid)) + "/status")
	if err != nil {
		return nil
	}
	var groups []int
	same := 0
	for _, line := range strings.Split(string(b), "\n") {
		key, val, _ := strings.Cut(line, ":")
		f := strings.Fields(val)
		switch key {
		case "Uid", "Gid":
			// real, effective, saved, file system: FUSE reports the last.
			want := who.Uid
			if key == "Gid" {
				want = who.Gid
			}
			if len(f) == 4 && f[3] == strconv.FormatUint(uint64(want), 10) {
				same++
			}
		case "Groups":
			for _, g := range f {
				if v, err := strconv.Atoi(g); err == nil {
					groups = append(groups, v)
				}
			}
		}
	}
	if same != 2 {
		return nil
	}
	return groups
}
