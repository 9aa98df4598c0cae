package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"ssi/configs"
)

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "ssi",
		Short: "ssi: a single-system-image runtime for Linux clusters",
		Long: `ssi makes a cluster of Linux machines look like one: every machine runs
"ssi agent", /cluster shows every process and node, and a running process
moves to another node when you write that node's name to
/cluster/proc/<cpid>/where.

Every configuration key (configs/ssi.yaml) is also a flag of every command
and an SSI_* environment variable.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	configs.AddFlags(root.PersistentFlags())
	root.AddCommand(newAgentCmd(), newNodesCmd(), newStatusCmd(), newTokenCmd(),
		newRunCmd(), newShCmd(), newPsCmd(), newMigrateCmd(), newKillCmd(), newWaitCmd(), newMigrationsCmd(),
		newBalanceCmd(), newDrainCmd(), newDoctorCmd(), newLabCmd(), newDebugCmd(), newJobInitCmd())
	return root
}

// loadConfig reads the configuration for cmd: defaults, file, environment
// and the flags given on its command line.
func loadConfig(cmd *cobra.Command) (*configs.Config, error) {
	return configs.Load(cmd.Flags())
}

// newLogger returns a logger to stderr at the configured level.
func newLogger(cfg *configs.Config) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(cfg.LogLevel))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))
}
