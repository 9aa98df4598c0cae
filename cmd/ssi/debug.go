package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"ssi/cluster/api"
	"ssi/cluster/telemetry"
	"ssi/migrate"
)

// newDebugCmd groups by-hand tools for the layers below the cluster. They
// are what `make demo` uses to move a process before `ssi migrate` exists.
func newDebugCmd() *cobra.Command {
	dbg := &cobra.Command{
		Use:   "debug",
		Short: "By-hand tools for ssi's lower layers (checkpoint and restore)",
	}
	dbg.AddCommand(newDebugDumpCmd(), newDebugRestoreCmd(), newDebugAdminCmd(), newDebugRaftBenchCmd(), newDebugHogCmd(), newDebugSpinCmd(), newDebugBarrierCmd())
	return dbg
}

func criuClient(cmd *cobra.Command) (*migrate.Client, error) {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, err
	}
	return migrate.New(migrate.Config{Path: cfg.CRIU.Path, NoBreakpoints: cfg.CRIU.NoBreakpoints},
		newLogger(cfg).With("component", "migrate")), nil
}

// gatedCRIUClient is criuClient once CRIU has passed the gate.
func gatedCRIUClient(cmd *cobra.Command) (*migrate.Client, error) {
	c, err := criuClient(cmd)
	if err != nil {
		return nil, err
	}
	if _, err := c.Gate(cmd.Context()); err != nil {
		return nil, err
	}
	return c, nil
}

func newDebugDumpCmd() *cobra.Command {
	var pid int
	var dir, to string
	var leaveRunning bool
	cmd := &cobra.Command{
		Use:   "dump --pid PID (--dir DIR | --to -)",
		Short: "Checkpoint a process tree into a directory, or as a stream on stdout",
		Long: `Checkpoint the process tree rooted at PID with CRIU. The tree must be in
its own PID namespace and session (its session leader inside it), as cluster
processes are. Unless --leave-running, the tree is gone afterwards.`,
		Example: "  ssi debug dump --pid 4242 --dir /tmp/img\n  ssi debug dump --pid 4242 --to - | ssi debug restore --from -",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if (dir == "") == (to == "") || (to != "" && to != "-") {
				return errors.New("give --dir DIR or --to -")
			}
			c, err := gatedCRIUClient(cmd)
			if err != nil {
				return err
			}
			work := dir
			if work == "" {
				if work, err = os.MkdirTemp("", "ssi-dump-"); err != nil {
					return err
				}
				defer os.RemoveAll(work)
			}
			st, err := c.Dump(cmd.Context(), migrate.DumpOptions{Pid: pid, Dir: work, LeaveRunning: leaveRunning})
			if err != nil {
				return err
			}
			fmt.Fprintf(os.Stderr, "dumped pid %d: frozen %v, %d pages\n", pid, st.Frozen, st.PagesWritten)
			if to == "-" {
				return migrate.Pack(work, os.Stdout)
			}
			return nil
		},
	}
	cmd.Flags().IntVar(&pid, "pid", 0, "root of the tree")
	cmd.Flags().StringVar(&dir, "dir", "", "images directory")
	cmd.Flags().StringVar(&to, "to", "", `"-": write the images as a stream to stdout`)
	cmd.Flags().BoolVar(&leaveRunning, "leave-running", false, "keep the tree running (a copy, not a move)")
	return cmd
}

// debugRestoreOptions are ssi debug restore's flags.
type debugRestoreOptions struct {
	dir, from string
	detach    bool
}

func newDebugRestoreCmd() *cobra.Command {
	var opts debugRestoreOptions
	cmd := &cobra.Command{
		Use:   "restore (--dir DIR | --from -)",
		Short: "Restore a process tree here; wait for it and pass its exit code",
		Long: `Restore a checkpointed tree in this node's namespaces and cgroup. The
restored tree is this command's child: it waits for it and exits with its
status, unless --detach.`,
		Example: "  ssi debug restore --dir /tmp/img\n  ssi debug restore --from - --detach < img.tar",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDebugRestore(cmd, opts)
		},
	}
	cmd.Flags().StringVar(&opts.dir, "dir", "", "images directory")
	cmd.Flags().StringVar(&opts.from, "from", "", `"-": read the images as a stream from stdin`)
	cmd.Flags().BoolVar(&opts.detach, "detach", false, "do not wait for the restored tree")
	return cmd
}

// runDebugRestore is ssi debug restore's body: it restores the images
// of opts.dir (or of stdin) and, unless opts.detach, waits for the tree.
func runDebugRestore(cmd *cobra.Command, opts debugRestoreOptions) error {
	if (opts.dir == "") == (opts.from == "") || (opts.from != "" && opts.from != "-") {
		return errors.New("give --dir DIR or --from -")
	}
	c, err := gatedCRIUClient(cmd)
	if err != nil {
		return err
	}
	work := opts.dir
	if work == "" {
		if work, err = os.MkdirTemp("", "ssi-restore-"); err != nil {
			return err
		}
		defer os.RemoveAll(work)
		if _, err := migrate.Unpack(os.Stdin, work); err != nil {
			return err
		}
	}
	r, err := c.Restore(cmd.Context(), migrate.RestoreOptions{Dir: work})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stdout, "%d\n", r.Pid)
	fmt.Fprintf(os.Stderr, "restored as pid %d in %v\n", r.Pid, r.Restore)
	if opts.detach {
		return nil
	}
	return waitRestored(r.Pid)
}

// waitRestored waits for the restored tree's root, pid, and passes its
// status on: an exitCodeError unless it exited 0.
func waitRestored(pid int) error {
	var ws syscall.WaitStatus
	for {
		_, err := syscall.Wait4(pid, &ws, 0, nil)
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("wait for pid %d: %w", pid, err)
		}
		break
	}
	if ws.Signaled() {
		return exitCodeError{128 + int(ws.Signal())}
	}
	if ws.ExitStatus() != 0 {
		return exitCodeError{ws.ExitStatus()}
	}
	return nil
}

// newDebugRaftBenchCmd measures Raft applies through the local agent.
func newDebugRaftBenchCmd() *cobra.Command {
	var req api.BenchRequest
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "raft-bench",
		Short:   "Measure Raft apply (or read barrier) latency and throughput from this node",
		Example: "  ssi debug raft-bench -n 2000 -c 1\n  ssi debug raft-bench -n 5000 -c 32 --json\n  ssi debug raft-bench --barrier -n 2000",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			res, err := api.NewClient(cfg.Socket).RaftBench(cmd.Context(), req)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSONOut(cmd.OutOrStdout(), res)
			}
			what := "applies"
			if req.Barrier {
				what = fmt.Sprintf("read barriers (%d round trips)", res.Rounds)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d %s, %d at a time: p50 %.2f ms, p99 %.2f ms, %.0f/s\n",
				res.N, what, res.Concurrency, res.P50ms, res.P99ms, res.PerSecond)
			return nil
		},
	}
	cmd.Flags().IntVarP(&req.N, "n", "n", 1000, "number of applies")
	cmd.Flags().IntVarP(&req.Concurrency, "concurrency", "c", 1, "applies in flight at once")
	cmd.Flags().BoolVar(&req.Barrier, "barrier", false, "measure read barriers instead of applies")
	cmd.Flags().BoolVar(&asJSON, "json", false, "machine-readable output")
	return cmd
}

// newDebugAdminCmd sets an admin switch through the agent, until
// /cluster/admin lands.
func newDebugAdminCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "admin SWITCH 0|1",
		Short:   "Set an admin switch (block, bring, expel, stay) of this node",
		Example: "  ssi debug admin block 1\n  ssi debug admin stay 0",
		Args:    cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[1] != "0" && args[1] != "1" {
				return fmt.Errorf("value %q: want 0 or 1", args[1])
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			return api.NewClient(cfg.Socket).SetAdmin(cmd.Context(),
				api.AdminRequest{Switch: args[0], Value: args[1] == "1"})
		},
	}
	return cmd
}

// newDebugSpinCmd is a CPU-bound job of a known amount of work, for
// benchmarks of the balancer.
func newDebugSpinCmd() *cobra.Command {
	var seconds float64
	cmd := &cobra.Command{
		Use:     "spin --seconds S",
		Short:   "Do S seconds of a reference CPU's work and exit (a CPU-bound job for benchmarks)",
		Example: "  ssi run -d -- ssi debug spin --seconds 10",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if seconds <= 0 {
				return errors.New("--seconds must be positive")
			}
			telemetry.Work(seconds)
			return nil
		},
	}
	cmd.Flags().Float64Var(&seconds, "seconds", 0, "work to do, in seconds of the reference CPU (node speed 10000)")
	return cmd
}

// newDebugHogCmd is a process of a known resident size, for benchmarks
// of migration.
func newDebugHogCmd() *cobra.Command {
	var mib int
	cmd := &cobra.Command{
		Use:     "hog --mib N",
		Short:   "Hold N MiB of touched memory and sleep (a process to migrate in benchmarks)",
		Example: "  ssi run -d -- ssi debug hog --mib 256",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if mib <= 0 {
				return errors.New("--mib must be positive")
			}
			buf := make([]byte, mib<<20)
			// Distinct bytes on every page: nothing CRIU could skip.
			for i := 0; i < len(buf); i += 512 {
				buf[i] = byte(i>>9) | 1
			}
			fmt.Fprintf(cmd.OutOrStdout(), "holding %d MiB\n", mib)
			for {
				time.Sleep(time.Hour)
				_ = buf[len(buf)-1]
			}
		},
	}
	cmd.Flags().IntVar(&mib, "mib", 16, "resident memory in MiB")
	return cmd
}

// newDebugBarrierCmd switches the read barrier, for a bench's baseline.
func newDebugBarrierCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "read-barrier on|off",
		Short: "Switch this agent's read barrier (bench baselines only: off, reads may be stale)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if args[0] != "on" && args[0] != "off" {
				return errors.New("want on or off")
			}
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			return api.NewClient(cfg.Socket).SetReadBarrier(cmd.Context(), args[0] == "on")
		},
	}
}
