package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"
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
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		return 127, fmt.Errorf("job: %w", err)
	}
	leader := cmd.Process.Pid
	go func() {
		for s := range sigs {
			_ = syscall.Kill(leader, s.(syscall.Signal))
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
