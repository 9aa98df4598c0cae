package jobs

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"ssi/cluster/jobns"
)

// A job runs as its caller really is: the uid, gid and supplementary
// groups the kernel recorded for the caller's end of the local socket,
// and the resource limits, umask and oom_score_adj of the calling
// process, read here from the process itself. None of it comes from the
// request, which the user writes.

// errCaller is a caller this agent could not read: the job would run as
// someone else, so it does not run.
var errCaller = errors.New("cannot tell who is asking")

// caller is who asked for a job.
type caller struct {
	uid, gid uint32
	jobns.Caller
}

// callerOf reads the process at the other end of c, a unix socket.
// nofileSoft, if not 0, is the soft RLIMIT_NOFILE the caller says it
// had before the Go runtime raised it (api.RunRequest.NofileSoft): it
// may only lower the soft limit read, which any process may do to
// itself.
func callerOf(c net.Conn, nofileSoft uint64) (caller, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return caller{}, errCaller
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return caller{}, errCaller
	}
	var cl caller
	var pid, pidfd int
	var serr error
	if err := raw.Control(func(fd uintptr) { cl, pid, pidfd, serr = peerOf(int(fd)) }); err != nil {
		return caller{}, fmt.Errorf("%w: %v", errCaller, err)
	}
	if serr != nil {
		return caller{}, fmt.Errorf("%w: %v", errCaller, serr)
	}
	defer unix.Close(pidfd)
	if err := readProc(pid, &cl); err != nil {
		return caller{}, fmt.Errorf("%w: process %d: %v", errCaller, pid, err)
	}
	// The pidfd holds the process, so its pid cannot name another one
	// while it lives: alive now, everything above was read of it.
	if err := unix.PidfdSendSignal(pidfd, 0, nil, 0); err != nil {
		return caller{}, fmt.Errorf("%w: process %d ended while it was read", errCaller, pid)
	}
	for i, l := range cl.Rlimits {
		if l.Resource == unix.RLIMIT_NOFILE && nofileSoft > 0 && nofileSoft < l.Cur {
			cl.Rlimits[i].Cur = nofileSoft
		}
	}
	return cl, nil
}

// peerOf reads the socket fd's peer credentials, recorded by the kernel
// when the caller connected: uid, gid and groups, its pid here, and a
// pidfd of that process (close it).
func peerOf(fd int) (caller, int, int, error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return caller{}, 0, -1, err
	}
	if cred.Pid <= 0 {
		// 0: the caller is in a PID namespace this agent cannot see into.
		return caller{}, 0, -1, errors.New("the caller's process is not visible here")
	}
	groups, err := peerGroups(fd)
	if err != nil {
		return caller{}, 0, -1, fmt.Errorf("its groups: %w", err)
	}
	// SO_PEERPIDFD (Linux 6.5) is the very process that connected; on an
	// older kernel the pid may have been reused by now, which the uid
	// check of readProc narrows to the same user's processes.
	pidfd, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_PEERPIDFD)
	if errors.Is(err, unix.ENOPROTOOPT) {
		pidfd, err = unix.PidfdOpen(int(cred.Pid), 0)
	}
	if err != nil {
		return caller{}, 0, -1, fmt.Errorf("a pidfd of process %d: %w", cred.Pid, err)
	}
	cl := caller{uid: cred.Uid, gid: cred.Gid}
	cl.Groups = groups
	return cl, int(cred.Pid), pidfd, nil
}

// peerGroups is SO_PEERGROUPS: the caller's supplementary groups when it
// connected, with its uid and gid.
func peerGroups(fd int) ([]uint32, error) {
	// NGROUPS_MAX is 65536; start small and grow to what the kernel says.
	buf := make([]uint32, 64)
	for {
		n := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&n)), 0)
		switch {
		case errno == unix.ERANGE && int(n/4) > len(buf) && n/4 <= 1<<16:
			buf = make([]uint32, n/4)
		case errno != 0:
			return nil, errno
		default:
			return append([]uint32{}, buf[:n/4]...), nil
		}
	}
}

// readProc reads process pid's limits, umask and oom_score_adj into cl,
// checking that it is still cl's user.
func readProc(pid int, cl *caller) error {
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return err
	}
	euid, umask, err := parseStatus(status)
	if err != nil {
		return err
	}
	if euid != cl.uid {
		return fmt.Errorf("runs as uid %d now, not %d", euid, cl.uid)
	}
	cl.Umask = umask
	adj, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/oom_score_adj")
	if err != nil {
		return err
	}
	if cl.OOMScoreAdj, err = strconv.Atoi(strings.TrimSpace(string(adj))); err != nil {
		return fmt.Errorf("oom_score_adj %q", adj)
	}
	// /proc/PID/limits, not prlimit(2): that takes CAP_SYS_RESOURCE,
	// which an agent confined to fewer capabilities lacks.
	limits, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/limits")
	if err != nil {
		return err
	}
	cl.Rlimits, err = parseLimits(limits)
	return err
}

// limitNames are the lines of /proc/PID/limits, by resource number.
var limitNames = [jobns.NumRlimits]string{
	"Max cpu time", "Max file size", "Max data size", "Max stack size", "Max core file size",
	"Max resident set", "Max processes", "Max open files", "Max locked memory", "Max address space",
	"Max file locks", "Max pending signals", "Max msgqueue size", "Max nice priority",
	"Max realtime priority", "Max realtime timeout",
}

// parseLimits reads every resource limit of a /proc/PID/limits.
func parseLimits(b []byte) ([]jobns.Rlimit, error) {
	out := make([]jobns.Rlimit, 0, jobns.NumRlimits)
	for _, line := range strings.Split(string(b), "\n") {
		r := len(out)
		if r == jobns.NumRlimits || !strings.HasPrefix(line, limitNames[r]+" ") {
			continue
		}
		f := strings.Fields(line[len(limitNames[r]):])
		if len(f) < 2 {
			return nil, fmt.Errorf("limits: %q", line)
		}
		cur, err1 := parseLimit(f[0])
		hard, err2 := parseLimit(f[1])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("limits: %q", line)
		}
		out = append(out, jobns.Rlimit{Resource: r, Cur: cur, Max: hard})
	}
	if len(out) != jobns.NumRlimits {
		return nil, fmt.Errorf("limits: %d of %d resource limits", len(out), jobns.NumRlimits)
	}
	return out, nil
}

func parseLimit(s string) (uint64, error) {
	if s == "unlimited" {
		return unix.RLIM_INFINITY, nil
	}
	return strconv.ParseUint(s, 10, 64)
}

// parseStatus reads the effective uid and the umask of a
// /proc/PID/status (a process that has exited has no umask).
func parseStatus(b []byte) (euid, umask uint32, err error) {
	var haveUID, haveUmask bool
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		f := strings.Fields(v)
		switch {
		case k == "Uid" && len(f) >= 2:
			u, perr := strconv.ParseUint(f[1], 10, 32)
			euid, haveUID = uint32(u), perr == nil
		case k == "Umask" && len(f) == 1:
			m, perr := strconv.ParseUint(f[0], 8, 32)
			umask, haveUmask = uint32(m), perr == nil
		}
	}
	if !haveUID || !haveUmask {
		return 0, 0, errors.New("its status has no uid or umask")
	}
	return euid, umask, nil
}
