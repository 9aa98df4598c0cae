package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"
)

func newShCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "sh [SH-OPTIONS] -c CMD [NAME [ARGS...]]",
		Short: "A SHELL for make: /bin/sh as a cluster process on the best node",
		Long: `Run /bin/sh with these arguments as a cluster process of its own,
started directly on the node the placement policy picks (as ssi run
--best does), attached: stdin, stdout and stderr are relayed, and ssi sh
exits with the shell's exit code. It runs in this directory with this
environment, as you, with your limits and umask.

Every argument goes to /bin/sh as it is (make passes -c, or -ec, and the
command), so a parallel build spreads over the cluster with
make -j8 SHELL="ssi sh". Without an agent or a cluster that answers it
fails with a message, and runs nothing here instead.`,
		Example:            "  make -j8 SHELL=\"ssi sh\"\n  ssi sh -c 'cc -c main.c'",
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 && (args[0] == "--help" || args[0] == "-h") {
				return cmd.Help()
			}
			return runSh(cmd, args)
		},
	}
}

// shArgv is the command ssi sh runs for its arguments.
func shArgv(args []string) ([]string, error) {
	if len(args) == 0 {
		return nil, errors.New("sh: want /bin/sh's arguments, e.g. -c CMD (ssi sh starts no interactive shell)")
	}
	return append([]string{"/bin/sh"}, args...), nil
}

func runSh(cmd *cobra.Command, args []string) error {
	argv, err := shArgv(args)
	if err != nil {
		return err
	}
	// Its flags are /bin/sh's: the configuration comes from the file and
	// the environment (SSI_SOCKET, ...).
	c, req, err := newRunRequest(cmd, argv, "balance")
	if err != nil {
		return err
	}
	err = runAttached(cmd, c, req, false)
	var ec exitCodeError
	if err != nil && !errors.As(err, &ec) {
		return fmt.Errorf("sh: %w", err)
	}
	return err
}
