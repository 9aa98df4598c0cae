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
	if os.Geteuid() == 0 && os.Getpid() == 1 {
		if err := jobns.Setup(); err != nil {
			return 1, fmt.Errorf("job: %w", err)
		}
		// A /dev/null opened in the node's mount namespace would tie
		// the job to it: CRIU could not move it ("Can't lookup mount").
		reopenNull()
		if err := becomeUser(spec.UID, spec.GID); err != nil {
			return 1, fmt.Errorf("job: %w", err)
		}
	}
	// As the user, so that root never follows a path the user chose.
	if spec.Dir != "" {
		if err := os.Chdir(spec.Dir); err != nil {
			return 1, fmt.Errorf("job: %w", err)
		}
	}
	os.Clearenv()
	for _, kv := range spec.Env {
		if k, v, ok := strings.Cut(kv, "="); ok {
			_ = os.Setenv(k, v)
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = spec.Env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return 127, fmt.Errorf("job: %w", err)
	}
	leader := cmd.Process.Pid
	go func() {
		for s := range sigs {
			// Once the command has exited (a daemon's parent), the oldest
			// surviving process of the job stands for it.
			if err := syscall.Kill(leader, s.(syscall.Signal)); errors.Is(err, syscall.ESRCH) {
				if pid := oldestChild(); pid > 0 {
					_ = syscall.Kill(pid, s.(syscall.Signal))
				}
			}
		}
	}()
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

// becomeUser drops root for uid/gid (no supplementary groups), for every
// thread of this process, and keeps the process dumpable: changing
// credentials clears that flag, and CRIU, running as the user, could then
// not inspect this init.
func becomeUser(uid, gid uint32) error {
	if uid == 0 {
		return nil
	}
	if err := syscall.Setgroups(nil); err != nil {
		return fmt.Errorf("setgroups: %w", err)
	}
	if err := syscall.Setresgid(int(gid), int(gid), int(gid)); err != nil {
		return fmt.Errorf("setresgid %d: %w", gid, err)
	}
	if err := syscall.Setresuid(int(uid), int(uid), int(uid)); err != nil {
		return fmt.Errorf("setresuid %d: %w", uid, err)
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
