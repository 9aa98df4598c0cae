package fs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// View is what the file system shows and where writes go. The agent
// (cluster/) implements it; fs/ only renders and accepts. Every method is
// called for every request, so the files are always live; they must be
// quick and must never touch the mount itself.
type View interface {
	// Nodes lists the cluster's nodes, sorted by name.
	Nodes() []NodeView
	// Procs lists the cluster's processes that uid may see, sorted by
	// cpid: every one, unless the view hides other users' processes
	// (fs.hide_other_users), which it never hides from root.
	Procs(uid uint32) []ProcView
	// PerUser reports that Procs answers each user differently: the
	// kernel must then keep no name under /cluster/proc, since a name it
	// kept for one user would be found by every other.
	PerUser() bool
	// Admin returns this node's admin switches.
	Admin() map[string]bool
	// SetAdmin sets one of this node's admin switches.
	SetAdmin(ctx context.Context, name string, value bool) error
	// Migrate moves a process to target ("NODE", "home" or "balance") on
	// behalf of uid, returning when done.
	Migrate(ctx context.Context, cpid int, target string, uid uint32) error
	// SetLock pins (or unpins) a process on behalf of uid.
	SetLock(ctx context.Context, cpid int, lock bool, uid uint32) error
}

// NodeView is one node as /cluster/nodes/<name>/ shows it.
type NodeView struct {
	Name    string
	Up      bool
	Load    float64 // CPUs' worth of time used per second
	CPUs    float64
	MemFree uint64
	MemSize uint64
	Speed   int
}

// ProcView is one cluster process as /cluster/proc/<cpid>/ shows it.
type ProcView struct {
	CPID     int
	Name     string
	Argv     []string
	State    string
	Node     string
	Home     string
	Pid      int // on the node it runs on now; 0 if unknown here
	UID      int
	GID      int // the owner's primary group: its control files' group
	NMigs    int
	RSS      uint64
	CPU      float64
	Lock     bool
	CantMove string
	Started  time.Time
}

// Domain errors a View returns; errno maps them, in one place.
var (
	// ErrNoProcess: the process has ended or never existed (ENOENT).
	ErrNoProcess = errors.New("no such cluster process")
	// ErrBadValue: the written value is not acceptable (EINVAL).
	ErrBadValue = errors.New("bad value")
	// ErrPermission: the caller may not do this (EPERM).
	ErrPermission = errors.New("operation not permitted")
	// ErrNodeDown: the target node is down (EHOSTUNREACH).
	ErrNodeDown = errors.New("node is down")
	// ErrBusy: a migration of the process is under way (EBUSY).
	ErrBusy = errors.New("busy")
	// ErrNotImplemented: not there yet (ENOSYS).
	ErrNotImplemented = errors.New("not implemented")
	// ErrNoQuorum: the cluster cannot accept writes now (EROFS).
	ErrNoQuorum = errors.New("no quorum")
	// ErrCannotMove: the process cannot migrate; cantmove says why
	// (EOPNOTSUPP).
	ErrCannotMove = errors.New("cannot move")
)

// errnos is the one table of the domain errors and the errno each
// becomes; travels marks those that pass between agents by name (a
// move's or a kill's answer), the first of each name being the one a
// name decodes to.
var errnos = []struct {
	err     error
	errno   syscall.Errno
	travels bool
}{
	{ErrNoProcess, syscall.ENOENT, true}, {ErrBadValue, syscall.EINVAL, true},
	{ErrPermission, syscall.EPERM, true}, {ErrNodeDown, syscall.EHOSTUNREACH, true},
	{ErrBusy, syscall.EBUSY, true}, {ErrNotImplemented, syscall.ENOSYS, true},
	{ErrNoQuorum, syscall.EROFS, true}, {ErrCannotMove, syscall.EOPNOTSUPP, true},
	{ErrNotFound, syscall.ENOENT, false}, {ErrExists, syscall.EEXIST, false},
	{ErrNotEmpty, syscall.ENOTEMPTY, false}, {ErrIsDir, syscall.EISDIR, false},
	{ErrNotDir, syscall.ENOTDIR, false}, {ErrTooBig, syscall.EFBIG, false},
	{ErrNoSpace, syscall.ENOSPC, false},
	{context.Canceled, syscall.EINTR, false}, // the kernel interrupted the request
}

// ErrnoName is the errno err becomes between agents, by name ("EBUSY");
// "EIO" for anything else.
func ErrnoName(err error) string {
	for _, e := range errnos {
		if e.travels && errors.Is(err, e.err) {
			return unix.ErrnoName(e.errno)
		}
	}
	return "EIO"
}

// ErrorForErrno is the domain error named by ErrnoName, or nil.
func ErrorForErrno(name string) error {
	for _, e := range errnos {
		if e.travels && unix.ErrnoName(e.errno) == name {
			return e.err
		}
	}
	return nil
}

// ErrnoOf is the errno a writer sees for a View's or a Home's error.
// Unknown errors are EIO; the caller logs them.
func ErrnoOf(err error) syscall.Errno { return errno(err) }

func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	for _, e := range errnos {
		if errors.Is(err, e.err) {
			return e.errno
		}
	}
	return syscall.EIO
}

// Renderers: one per file, from the view model to the file's bytes.

func renderNodeFile(n NodeView, file string) string {
	switch file {
	case "load":
		return fmt.Sprintf("%.2f\n", n.Load)
	case "cpus":
		return fmt.Sprintf("%g\n", n.CPUs)
	case "mem":
		return fmt.Sprintf("%d %d\n", n.MemFree, n.MemSize)
	case "speed":
		return fmt.Sprintf("%d\n", n.Speed)
	case "status":
		if n.Up {
			return "up\n"
		}
		return "down\n"
	}
	return ""
}

var nodeFiles = []string{"load", "cpus", "mem", "speed", "status"}

func renderProcFile(p ProcView, file string) string {
	switch file {
	case "where":
		return p.Node + "\n"
	case "status":
		var b strings.Builder
		fmt.Fprintf(&b, "Name:\t%s\nState:\t%s\nNode:\t%s\nHome:\t%s\nPid:\t%d\nUid:\t%d\n",
			p.Name, p.State, p.Node, p.Home, p.Pid, p.UID)
		fmt.Fprintf(&b, "Migrations:\t%d\nVmRSS:\t%d kB\nCpu:\t%.2f\nStarted:\t%s\n",
			p.NMigs, p.RSS>>10, p.CPU, p.Started.UTC().Format(time.RFC3339))
		return b.String()
	case "cmdline":
		if len(p.Argv) == 0 {
			return ""
		}
		return strings.Join(p.Argv, "\x00") + "\x00"
	case "cantmove":
		if p.CantMove == "" {
			return ""
		}
		return p.CantMove + "\n"
	case "lock":
		if p.Lock {
			return "1\n"
		}
		return "0\n"
	case "nmigs":
		return fmt.Sprintf("%d\n", p.NMigs)
	}
	return ""
}

var procFiles = []string{"where", "status", "cmdline", "cantmove", "lock", "nmigs"}

var adminFiles = []string{"block", "bring", "expel", "stay"}

// parseBool accepts what a shell's echo writes: "0" or "1", with an
// optional newline.
func parseBool(data []byte) (bool, error) {
	switch strings.TrimSuffix(string(data), "\n") {
	case "0":
		return false, nil
	case "1":
		return true, nil
	}
	return false, fmt.Errorf("%w: want 0 or 1", ErrBadValue)
}
