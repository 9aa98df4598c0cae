package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"ssi/cluster"
)

func newRunCmd() *cobra.Command {
	var detach, best bool
	var node string
	cmd := &cobra.Command{
		Use:   "run [-d] [--node N|--best] -- CMD [ARGS...]",
		Short: "Start CMD as a cluster process (migratable); -d prints its cpid",
		Long: `Start CMD as a cluster process on this node: PID 1 of its own PID
namespace and session, with this shell's working directory and
environment, registered in the cluster with a cpid that every node's
/cluster/proc shows.

Attached (the default), its stdin, stdout and stderr are relayed to this
terminal wherever the process runs, even after it migrates; Ctrl-C
reaches it; ssi run exits with its exit code. -d detaches and prints the
cpid alone.

--node N starts it here and moves it to N before returning (detached) or
while relaying (attached); --best moves it to the least loaded node.`,
		Example: "  ssi run -d -- sleep 1000\n  ssi run -- ./simulate --steps 1000",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if node != "" && best {
				return errors.New("give --node or --best, not both")
			}
			target := node
			if best {
				target = "balance"
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			dir, err := os.Getwd()
			if err != nil {
				return err
			}
			c := cluster.NewClient(cfg.Socket)
			req := cluster.RunRequest{Argv: args, Dir: dir, Env: os.Environ()}
			if detach {
				cpid, err := c.Run(cmd.Context(), req)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), cpid)
				if target != "" && target != cfg.Node.Name {
					if err := c.Migrate(cmd.Context(), cpid, target); err != nil {
						return fmt.Errorf("started as %d here, but moving it to %s: %w", cpid, target, err)
					}
				}
				return nil
			}
			at, err := c.RunAttached(cmd.Context(), req)
			if err != nil {
				return err
			}
			if target != "" && target != cfg.Node.Name {
				go func() {
					if err := c.Migrate(cmd.Context(), at.CPID, target); err != nil {
						fmt.Fprintf(os.Stderr, "ssi run: %d stays here: moving it to %s: %v\n", at.CPID, target, err)
					}
				}()
			}
			sigs := make(chan os.Signal, 8)
			signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
				syscall.SIGUSR1, syscall.SIGUSR2)
			code, err := at.Relay(os.Stdin, os.Stdout, os.Stderr, sigs)
			if err != nil {
				return err
			}
			if code != 0 {
				return exitCodeError{code}
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&detach, "detach", "d", false, "detach and print the cpid")
	cmd.Flags().StringVar(&node, "node", "", "run it on this node")
	cmd.Flags().BoolVar(&best, "best", false, "run it on the least loaded node")
	return cmd
}
