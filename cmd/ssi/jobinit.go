package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"ssi/cluster/jobns"
	"ssi/migrate"
)

// newJobInitCmd is PID 1 of a cluster process's PID namespace: it gives
// the job its own mounts (see package jobns), becomes the job's user,
// starts the command, forwards signals to it, reaps every orphan of the
// job (a daemon's children), and exits with the command's status once the
// whole job has ended. Agents start it; users never do.
func newJobInitCmd() *cobra.Command {
	return &cobra.Command{
		Use:    "job-init -- CMD [ARGS...]",
		Short:  "PID 1 of a cluster process (started by the agent)",
		Hidden: true,
		Args:   cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, args []string) error {
			code, err := jobInit(args)
			if err != nil {
				return err
			}
			return exitCodeError{code}
		},
	}
}

// jobSpecFD is where the agent writes the job's Spec, once it has put
// this init in the job's cgroup: the whole job is in it from the start.
const jobSpecFD = 3

func jobInit(argv []string) (int, error) {
	sigs := make(chan os.Signal, 8)
	// PID 1 ignores signals it has no handler for: forward them.
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH)
	spec, err := readSpec()
	if err != nil {
		return 1, err
	}
	if os.Geteuid() == 0 {
		err = enterJob(spec)
	} else if spec.Caller != nil {
		// Not root (a test): what an unprivileged process may take.
		err = spec.Caller.Apply()
	}
	if err != nil {
		return 1, err
	}
	if err := takeUserEnv(spec); err != nil {
		return 1, err
	}
	leader, term, code, err := startJobCommand(argv, spec)
	if err != nil {
		return code, err
	}
	var output <-chan struct{}
	if term != nil {
		output = term.start()
	}
	go forwardSignals(sigs, leader)
	code, err = reapJob(leader)
	if err != nil {
		return 1, err
	}
	if output != nil {
		// What the job wrote last is still in the pty.
		select {
		case <-output:
		case <-time.After(ptyDrain):
		}
	}
	return code, nil
}

// enterJob, as root, gives the job its own mounts and then becomes the
// job's user.
func enterJob(spec jobns.Spec) error {
	if os.Getpid() != 1 {
		return errors.New("job: not PID 1 of its own PID namespace")
	}
	if err := jobns.Setup(); err != nil {
		return fmt.Errorf("job: %w", err)
	}
	// A /dev/null opened in the node's mount namespace would tie
	// the job to it: CRIU could not move it ("Can't lookup mount").
	reopenNull()
	var groups []uint32
	if c := spec.Caller; c != nil {
		// As root: the caller's hard limits may be above the agent's.
		if err := c.Apply(); err != nil {
			return fmt.Errorf("job: the caller's limits: %w", err)
		}
		groups = c.Groups
	}
	// Whatever happened above, the user's command never runs as root
	// unless the user is root.
	if err := becomeUser(spec.UID, spec.GID, groups); err != nil {
		return fmt.Errorf("job: %w", err)
	}
	return nil
}

// takeUserEnv moves to the job's working directory and takes its
// environment for this process.
func takeUserEnv(spec jobns.Spec) error {
	// As the user, so that root never follows a path the user chose.
	if spec.Dir != "" {
		if err := os.Chdir(spec.Dir); err != nil {
			return fmt.Errorf("job: %w", err)
		}
	}
	os.Clearenv()
	for _, kv := range spec.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			_ = os.Setenv(k, v)
		}
	}
	return nil
}

// startJobCommand starts argv, on a pty of the job's own if the spec asks
// for a terminal: its pid, and the relay of that pty (nil without one).
// On error, code is the exit status jobInit returns with it.
func startJobCommand(argv []string, spec jobns.Spec) (leader int, term *ptyRelay, code int, err error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = spec.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	var slave *os.File
	if spec.TTY {
		// As the user: the pty is the user's, in the job's own devpts
		// (which moves with the job), never the node's.
		var master *os.File
		if master, slave, err = openPTY(jobPTMX, spec.Size); err != nil {
			return 0, nil, 1, fmt.Errorf("job: a terminal: %w", err)
		}
		onTerminal(cmd, slave)
		term = &ptyRelay{master: master, in: os.Stdin, out: os.Stdout,
			sizes: os.NewFile(jobns.WinsizeFD, "winsize")}
	}
	err = cmd.Start()
	if slave != nil {
		// Only the job's processes may hold the slave: the master reads
		// EIO once the last of them has let go of it.
		slave.Close()
	}
	if err != nil {
		return 0, nil, 127, fmt.Errorf("job: %w", err)
	}
	return cmd.Process.Pid, term, 0, nil
}

// forwardSignals passes every signal of sigs on to the job's leader.
func forwardSignals(sigs <-chan os.Signal, leader int) {
	for s := range sigs {
		// Once the command has exited (a daemon's parent), the oldest
		// surviving process of the job stands for it.
		if err := syscall.Kill(leader, s.(syscall.Signal)); errors.Is(err, syscall.ESRCH) {
			if pid := oldestChild(); pid > 0 {
				_ = syscall.Kill(pid, s.(syscall.Signal))
			}
		}
	}
}

// reapJob reaps every process of the job until none is left: the
// leader's exit status (128+N if signal N killed it), or -1 if it was
// never seen to exit.
func reapJob(leader int) (int, error) {
	code := -1
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if errors.Is(err, syscall.ECHILD) {
			break
		}
		if err != nil {
			return 1, err
		}
		if pid == leader {
			code = ws.ExitStatus()
			if ws.Signaled() {
				code = 128 + int(ws.Signal())
			}
		}
	}
	return code, nil
}

// jobPTMX opens a pty of the job's own devpts (jobns.Setup mounts it
// with ptmxmode=0666): the master's mount is then the job's, which CRIU
// carries and CantMove recognises, where /dev/ptmx is the node's /dev.
const jobPTMX = "/dev/pts/ptmx"

// ptyDrain bounds the wait for a terminal job's last output once the
// whole job has ended.
const ptyDrain = 5 * time.Second

// openPTY opens a new pty at ptmx with its first size: the master, and
// the slave (opened through the master, so no path is looked up).
func openPTY(ptmx string, size jobns.Winsize) (master, slave *os.File, err error) {
	// Blocking descriptors: the relay reads them in threads of its own,
	// so the job's init holds no epoll set for CRIU to carry.
	mfd, err := unix.Open(ptmx, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	fail := func(what string, err error) (*os.File, *os.File, error) {
		unix.Close(mfd)
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := unix.IoctlSetPointerInt(mfd, unix.TIOCSPTLCK, 0); err != nil {
		return fail("unlocking the pty", err)
	}
	if size.Rows == 0 || size.Cols == 0 {
		size = jobns.DefaultWinsize
	}
	if err := setWinsize(mfd, size); err != nil {
		return fail("its size", err)
	}
	sfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(mfd), unix.TIOCGPTPEER, unix.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		return fail("its slave", errno)
	}
	return os.NewFile(uintptr(mfd), "pty-master"), os.NewFile(uintptr(sfd), "pty-slave"), nil
}

// onTerminal makes slave cmd's stdio and controlling terminal, in a
// session of its own: the line discipline then turns ^C into SIGINT for
// its foreground job, and a new size into SIGWINCH.
func onTerminal(cmd *exec.Cmd, slave *os.File) {
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
}

func setWinsize(fd int, w jobns.Winsize) error {
	return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: w.Rows, Col: w.Cols, Xpixel: w.XPixel, Ypixel: w.YPixel})
}

// ptyRelay is a terminal job's init between its pipes and the pty: in
// (stdin) to the master, the master to out (stdout), each window size
// record from sizes to the pty, where the kernel tells the foreground
// process group with SIGWINCH.
type ptyRelay struct {
	master *os.File
	in     io.Reader
	out    io.Writer
	sizes  io.Reader // nil: no sizes come
}

// start runs the relay; the channel is closed once the pty's output has
// ended (every slave is closed) and all of it was written to out.
func (r *ptyRelay) start() <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		// EIO: the last slave was closed, after its last output was read.
		_ = copyAll(r.out, r.master)
	}()
	go r.input()
	if r.sizes != nil {
		go r.resize()
	}
	return done
}

// input copies stdin to the terminal. Its end (the caller's stdin was a
// pipe or a file, not a terminal) is typed as the terminal's end-of-file
// character (^D) once the job has read all the input before it and its
// terminal's mode has settled: a reader in canonical mode then sees EOF,
// and so does a line editor (readline) at an empty line. Typed while a
// shell runs a command (canonical) and read by its line editor after
// (not), it would be a NUL byte: hence the wait for a mode that holds.
// The caller's own hang-up comes as SIGHUP instead.
func (r *ptyRelay) input() {
	if err := copyAll(r.master, r.in); err != nil {
		return
	}
	rc, err := r.master.SyscallConn()
	if err != nil {
		return
	}
	var eof byte
	var lastMode uint32
	settled := time.Now()
	for deadline := time.Now().Add(ptyEOFWait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		var queued int
		var t *unix.Termios
		var qerr error
		_ = rc.Control(func(fd uintptr) {
			if queued, qerr = slaveQueue(int(fd)); qerr == nil {
				t, qerr = unix.IoctlGetTermios(int(fd), unix.TCGETS)
			}
		})
		if qerr != nil {
			return // no slave left: nobody to tell
		}
		eof = t.Cc[unix.VEOF]
		if mode := t.Lflag & unix.ICANON; mode != lastMode || queued > 0 {
			lastMode, settled = mode, time.Now()
		}
		if time.Since(settled) >= ptySettle {
			break
		}
	}
	if eof != 0 { // 0: the terminal has no end-of-file character
		_ = rc.Control(func(fd uintptr) { _, _ = unix.Write(int(fd), []byte{eof}) })
	}
}

// ptySettle is how long a terminal's input must stay read and its mode
// unchanged before the end of stdin is typed; ptyEOFWait bounds the
// wait.
const (
	ptySettle  = 300 * time.Millisecond
	ptyEOFWait = 10 * time.Second
)

// slaveQueue is how many bytes of input wait in the terminal of master
// for its reader (whole lines in canonical mode), asked of a slave opened
// for the moment.
func slaveQueue(master int) (int, error) {
	sfd, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(master), unix.TIOCGPTPEER, unix.O_RDONLY|unix.O_NOCTTY|unix.O_CLOEXEC)
	if errno != 0 {
		return 0, errno
	}
	defer unix.Close(int(sfd))
	return unix.IoctlGetInt(int(sfd), unix.TIOCINQ)
}

// resize applies each window size record as it comes.
func (r *ptyRelay) resize() {
	rc, err := r.master.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, jobns.WinsizeLen)
	for {
		if _, err := io.ReadFull(r.sizes, buf); err != nil {
			return
		}
		if w, ok := jobns.ParseWinsize(buf); ok {
			_ = rc.Control(func(fd uintptr) { _ = setWinsize(int(fd), w) })
		}
	}
}

// readSpec reads the agent's Spec; its absence means the agent did not
// let the job start.
func readSpec() (jobns.Spec, error) {
	var spec jobns.Spec
	f := os.NewFile(jobSpecFD, "job-spec")
	if f == nil {
		return spec, errors.New("job: no spec from the agent")
	}
	b, err := io.ReadAll(io.LimitReader(f, jobns.MaxSpec))
	f.Close()
	if err != nil || len(b) == 0 {
		return spec, errors.New("job: the agent did not let it start")
	}
	if err := json.Unmarshal(b, &spec); err != nil {
		return spec, fmt.Errorf("job: bad spec: %w", err)
	}
	return spec, nil
}

// reopenNull replaces stdio that is the null device with one opened in
// the job's own mount namespace.
func reopenNull() {
	var null unix.Stat_t
	if unix.Stat("/dev/null", &null) != nil {
		return
	}
	for fd := 0; fd <= 2; fd++ {
		var st unix.Stat_t
		if unix.Fstat(fd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != null.Rdev {
			continue
		}
		nfd, err := unix.Open("/dev/null", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		_ = unix.Dup3(nfd, fd, 0)
		_ = unix.Close(nfd)
	}
}

// becomeUser drops root for uid/gid with the caller's supplementary
// groups, for every thread of this process, and keeps the process
// dumpable: changing credentials clears that flag, and CRIU, running as
// the user, could then not inspect this init. A root caller's job keeps
// root, with the caller's groups and gid.
func becomeUser(uid, gid uint32, groups []uint32) error {
	gids := make([]int, len(groups))
	for i, g := range groups {
		gids[i] = int(g)
	}
	if err := syscall.Setgroups(gids); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(int(gid), int(gid), int(gid)); err != nil {
		return fmt.Errorf("setresgid %d: %w", gid, err)
	}
	if uid != 0 {
		if err := syscall.Setresuid(int(uid), int(uid), int(uid)); err != nil {
			return fmt.Errorf("setresuid %d: %w", uid, err)
		}
	}
	return unix.Prctl(unix.PR_SET_DUMPABLE, 1, 0, 0, 0)
}

// oldestChild is the oldest child of this init (orphans of the job are
// re-parented to it), as a pid of the job's namespace.
func oldestChild() int {
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	best, bestStart := 0, uint64(0)
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, f := range strings.Fields(string(b)) {
			start, nspid := procStartAndNSpid(f)
			if nspid > 0 && (best == 0 || start < bestStart) {
				best, bestStart = nspid, start
			}
		}
	}
	return best
}

// procStartAndNSpid reads a process's start time and its pid in the
// innermost namespace.
func procStartAndNSpid(pid string) (start uint64, nspid int) {
	n, err := strconv.Atoi(pid)
	if err != nil {
		return 0, 0
	}
	st, ok := migrate.ReadStat(n)
	if !ok {
		return 0, 0
	}
	status, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		return 0, 0
	}
	for _, l := range strings.Split(string(status), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[0] == "NSpid:" {
			nspid, _ = strconv.Atoi(f[len(f)-1])
		}
	}
	return st.Start, nspid
}

// copyAll copies src to dst until src ends (nil) or either fails. Plain
// reads and writes: neither end is a file that copy_file_range or splice
// could take, and a pty's EIO at its end is an end like any other.
func copyAll(dst io.Writer, src io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
