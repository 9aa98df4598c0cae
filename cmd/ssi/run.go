package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"ssi/cluster"
)

func newRunCmd() *cobra.Command {
	var detach bool
	cmd := &cobra.Command{
		Use:   "run -d -- CMD [ARGS...]",
		Short: "Start CMD as a cluster process (migratable); -d prints its cpid",
		Long: `Start CMD as a cluster process on this node: PID 1 of its own PID
namespace and session, with this shell's working directory and
environment, registered in the cluster with a cpid that every node's
/cluster/proc shows. -d detaches and prints the cpid alone.`,
		Example: "  ssi run -d -- sleep 1000",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !detach {
				return errors.New("attached mode comes with migration; use ssi run -d for now")
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			dir, err := os.Getwd()
			if err != nil {
				return err
			}
			cpid, err := cluster.NewClient(cfg.Socket).Run(cmd.Context(),
				cluster.RunRequest{Argv: args, Dir: dir, Env: os.Environ()})
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), cpid)
			return nil
		},
	}
	cmd.Flags().BoolVarP(&detach, "detach", "d", false, "detach and print the cpid")
	return cmd
}
