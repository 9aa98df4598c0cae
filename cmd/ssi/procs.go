package main

import (
	"fmt"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"ssi/cluster/api"
)

func parseCPID(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a cluster pid", s)
	}
	return n, nil
}

func newMigrateCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "migrate CPID NODE|home|balance",
		Short: "Move a cluster process to NODE, back home, or where the cluster thinks best",
		Long: `Move a running cluster process with CRIU, the same as writing to
/cluster/proc/CPID/where. Returns once the process runs at its
destination; on any failure it goes on running where it was, and the
error says why (also in /cluster/proc/CPID/cantmove).`,
		Example: "  ssi migrate 4242 node2\n  ssi migrate 4242 home",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cpid, err := parseCPID(args[0])
			if err != nil {
				return err
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			if err := api.NewClient(cfg.Socket).Migrate(cmd.Context(), cpid, args[1]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d: moved (%s)\n", cpid, args[1])
			return nil
		},
	}
}

func newPsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List every cluster process: CPID, NODE, HOME, USER, STATE, %CPU, RSS, MIGS, CMD",
		Long: `List every cluster process: CPID, NODE, HOME, USER, STATE, %CPU, RSS, MIGS, CMD.
With fs.hide_other_users set on this node, a user other than root sees
only their own processes (like /proc's hidepid=2).`,
		Example: "  ssi ps\n  ssi ps --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			procs, err := api.NewClient(cfg.Socket).Procs(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSONOut(cmd.OutOrStdout(), procs)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "CPID\tNODE\tHOME\tUSER\tSTATE\t%CPU\tRSS\tMIGS\tCMD")
			for _, p := range procs {
				fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%.1f\t%s\t%d\t%s\n", p.CPID, p.Node, p.Home, p.User, p.State,
					p.CPU, humanBytes(p.RSS), p.NMigs, strings.Join(p.Argv, " "))
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "machine-readable output")
	return cmd
}

func newKillCmd() *cobra.Command {
	var sig string
	var all bool
	cmd := &cobra.Command{
		Use:   "kill [-s SIGNAL] [--all] CPID",
		Short: "Send a signal (default TERM) to a cluster process wherever it runs",
		Long: `Send a signal to a cluster process wherever it runs: to the process
ssi run started or, once that has exited, the oldest surviving process
of the job; --all sends it to every process of the job.`,
		Example: "  ssi kill 4242\n  ssi kill -s KILL --all 4242",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cpid, err := parseCPID(args[0])
			if err != nil {
				return err
			}
			s, err := parseSignal(sig)
			if err != nil {
				return err
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			return api.NewClient(cfg.Socket).Kill(cmd.Context(), api.KillRequest{CPID: cpid, Signal: int(s), All: all})
		},
	}
	cmd.Flags().StringVarP(&sig, "signal", "s", "TERM", "signal name (TERM, KILL, INT, HUP, USR1, ...) or number")
	cmd.Flags().BoolVar(&all, "all", false, "signal every process of the job")
	return cmd
}

func parseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil && n > 0 && n < 65 {
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig := unix.SignalNum(name); sig != 0 {
		return sig, nil
	}
	return 0, fmt.Errorf("unknown signal %q", s)
}

func newWaitCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "wait CPID",
		Short: "Wait until a cluster process has ended; exit with its exit code",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cpid, err := parseCPID(args[0])
			if err != nil {
				return err
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			res, err := api.NewClient(cfg.Socket).Wait(cmd.Context(), cpid)
			if err != nil {
				return err
			}
			if res.Code == nil {
				fmt.Fprintf(cmd.ErrOrStderr(), "%d ended; its exit code is unknown (its node went down)\n", cpid)
				return exitCodeError{255}
			}
			if *res.Code != 0 {
				return exitCodeError{*res.Code}
			}
			return nil
		},
	}
}

func newMigrationsCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "migrations",
		Short: "Recent migrations: CPID, FROM, TO, OUTCOME, FROZEN, TOTAL, BYTES",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			moves, err := api.NewClient(cfg.Socket).Moves(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSONOut(cmd.OutOrStdout(), moves)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "WHEN\tCPID\tFROM\tTO\tOUTCOME\tFROZEN\tTOTAL\tBYTES\tREASON")
			for _, m := range moves {
				outcome := "moved"
				if !m.Committed {
					outcome = "aborted"
				}
				fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.EndedAt.Local().Format(time.TimeOnly), m.CPID,
					m.From, m.To, outcome, m.Frozen.Round(time.Millisecond), m.Total.Round(time.Millisecond),
					humanBytes(uint64(m.Bytes)), m.Reason)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "machine-readable output")
	return cmd
}
