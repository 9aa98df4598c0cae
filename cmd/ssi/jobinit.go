package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"ssi/migrate"
)

// newJobInitCmd is PID 1 of a cluster process's PID namespace: it starts
// the command, forwards signals to it, reaps every orphan of the job (a
// daemon's children), and exits with the command's status once the whole
// job has ended. Agents start it; users never do.
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

func jobInit(argv []string) (int, error) {
	sigs := make(chan os.Signal, 8)
	// PID 1 ignores signals it has no handler for: forward them.
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2)
	// The agent first puts this init in the job's cgroup, then lets it
	// start the command, so that the whole job is in it from the start.
	if os.Getenv("SSI_JOB_GO") == "3" {
		gate := os.NewFile(3, "job-go")
		b := make([]byte, 1)
		n, _ := gate.Read(b)
		gate.Close()
		os.Unsetenv("SSI_JOB_GO")
		if n != 1 {
			return 1, errors.New("job: the agent did not let it start")
		}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
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

// oldestChild is the oldest child of this init (orphans of the job are
// re-parented to it), as a pid of the job's namespace. /proc is the
// node's, so its numbers are translated through NSpid.
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
