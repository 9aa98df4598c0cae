package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"ssi/cluster/lab"
	"ssi/configs"
)

func newLabCmd() *cobra.Command {
	labCmd := &cobra.Command{
		Use:   "lab",
		Short: "A real N-node cluster on this one machine",
		Long: `A real N-node cluster on this one machine: each node is its own network
namespace on a private bridge, its own mount namespace with its own /cluster,
its own cgroup, and its own agent. Nodes are named node1..nodeN.`,
		Example: `  ssi lab up --nodes 3
  ssi lab exec node2 -- ip -br addr
  ssi lab partition node3 && ssi lab heal node3
  ssi lab down`,
	}
	labCmd.PersistentFlags().String("name", "", "lab name (default: lab.name, \"ssi\")")
	labCmd.AddCommand(newLabUpCmd(), newLabDownCmd(), newLabExecCmd(), newLabStatusCmd(),
		newLabNodeCmd("kill", "Crash a node: SIGKILL its agent and everything in its cgroup",
			func(cmd *cobra.Command, l *lab.Lab, node string) error { return l.Kill(node) }),
		newLabNodeCmd("start", "Bring a killed node back with its state directory",
			func(cmd *cobra.Command, l *lab.Lab, node string) error { return l.Start(cmd.Context(), node) }),
		newLabNodeCmd("partition", "Cut a node off the bridge",
			func(cmd *cobra.Command, l *lab.Lab, node string) error { return l.Partition(node) }),
		newLabNodeCmd("heal", "Reconnect a partitioned node",
			func(cmd *cobra.Command, l *lab.Lab, node string) error { return l.Heal(node) }),
	)
	return labCmd
}

// openLab opens the lab named by --name or the configuration.
// quotas and mems are the nodes' limits, nil to keep the lab's.
func openLab(cmd *cobra.Command, nodes int, quotas []float64, mems []uint64, withAgents bool) (*lab.Lab, error) {
	cfg, err := loadConfig(cmd)
	if err != nil {
		return nil, err
	}
	name := cfg.Lab.Name
	if n, _ := cmd.Flags().GetString("name"); n != "" {
		name = n
	}
	opts := lab.Options{
		Name: name, Dir: cfg.Lab.Dir, Subnet: cfg.Lab.Subnet, Nodes: nodes,
		CPUQuota: quotas, MemLimit: mems, Out: cmd.OutOrStdout(),
	}
	if withAgents {
		exe, err := os.Executable()
		if err != nil {
			return nil, err
		}
		if exe, err = filepath.EvalSymlinks(exe); err != nil {
			return nil, err
		}
		opts.Binary = exe
		opts.AgentArgs = []string{"--log-level", cfg.LogLevel}
	}
	return lab.Open(opts)
}

func newLabUpCmd() *cobra.Command {
	var nodes int
	var quota, mem string
	var noAgents bool
	cmd := &cobra.Command{
		Use:   "up",
		Short: "Build (or complete) the lab; idempotent",
		Long: `Build (or complete) the lab; idempotent. --cpu-quota and --mem-limit
take one value for every node or one per node (node1 first); a lab brought
up again without them keeps its limits, and with them changes them.`,
		Example: "  ssi lab up --nodes 3\n  ssi lab up --nodes 4 --cpu-quota 0.5\n" +
			"  ssi lab up --nodes 4 --cpu-quota 1,0.5,0.5,0.5 --mem-limit 512M,2G,2G,2G",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			quotas, mems, err := labLimits(cmd, cfg.Lab.CPUQuota, cfg.Lab.MemLimit, quota, mem)
			if err != nil {
				return err
			}
			l, err := openLab(cmd, nodes, quotas, mems, !noAgents)
			if err != nil {
				return err
			}
			if err := l.Up(cmd.Context()); err != nil {
				return fmt.Errorf("lab up: %w (ssi lab down removes what was built)", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lab %s: %d nodes up (state in %s)\n", l.Name(), nodes, l.Root())
			return nil
		},
	}
	cmd.Flags().IntVar(&nodes, "nodes", 3, "number of nodes")
	cmd.Flags().StringVar(&quota, "cpu-quota", "", "CPUs per node (cgroup CPU quota), one for all or one per node (1,0.5,0.5); 0: no limit (default lab.cpu_quota)")
	cmd.Flags().StringVar(&mem, "mem-limit", "", "memory per node (cgroup limit, e.g. 512M), one for all or one per node (512M,2G); 0: no limit (default lab.mem_limit)")
	cmd.Flags().BoolVar(&noAgents, "no-agents", false, "build bare nodes without agents")
	return cmd
}

// labLimits are the limits lab up gives its nodes: the flags', else the
// configuration's; nil (keep the lab's) where neither says more than
// the default, no limit.
func labLimits(cmd *cobra.Command, cfgQuota, cfgMem, flagQuota, flagMem string) ([]float64, []uint64, error) {
	if !cmd.Flags().Changed("cpu-quota") {
		flagQuota = cfgQuota
	}
	if !cmd.Flags().Changed("mem-limit") {
		flagMem = cfgMem
	}
	quotas, err := configs.ParseCPUQuotas(flagQuota)
	if err != nil {
		return nil, nil, err
	}
	mems, err := configs.ParseMemLimits(flagMem)
	if err != nil {
		return nil, nil, err
	}
	if !cmd.Flags().Changed("cpu-quota") && slices.Equal(quotas, []float64{0}) {
		quotas = nil
	}
	if !cmd.Flags().Changed("mem-limit") && slices.Equal(mems, []uint64{0}) {
		mems = nil
	}
	return quotas, mems, nil
}

func newLabDownCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "down",
		Short: "Remove every namespace, mount, cgroup, bridge and process of the lab; safe to run twice",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := openLab(cmd, 0, nil, nil, false)
			if err != nil {
				return err
			}
			if err := l.Down(cmd.Context()); err != nil {
				return fmt.Errorf("lab down: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "lab %s: down\n", l.Name())
			return nil
		},
	}
}

func newLabExecCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "exec NODE -- CMD [ARGS...]",
		Short:   "Run a command inside a node with the caller's stdio; its exit code passes through",
		Example: "  ssi lab exec node2 -- ip -br addr\n  ssi lab exec node1 -- ssi doctor",
		Args:    cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if dash := cmd.ArgsLenAtDash(); dash != 1 {
				return errors.New("usage: ssi lab exec NODE -- CMD [ARGS...]")
			}
			l, err := openLab(cmd, 0, nil, nil, false)
			if err != nil {
				return err
			}
			c, err := l.Command(args[0], args[1:]...)
			if err != nil {
				return err
			}
			c.Stdin, c.Stdout, c.Stderr = os.Stdin, os.Stdout, os.Stderr
			// The command shares our terminal's process group: Ctrl-C
			// reaches it directly; we only outlive it to pass its status.
			signal.Ignore(syscall.SIGINT, syscall.SIGQUIT)
			err = c.Run()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return exitCodeError{128 + int(ws.Signal())}
				}
				return exitCodeError{ee.ExitCode()}
			}
			return err
		},
	}
}

func newLabNodeCmd(name, short string, do func(*cobra.Command, *lab.Lab, string) error) *cobra.Command {
	return &cobra.Command{
		Use:   name + " NODE",
		Short: short,
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := openLab(cmd, 0, nil, nil, name == "start")
			if err != nil {
				return err
			}
			if err := do(cmd, l, args[0]); err != nil {
				return fmt.Errorf("lab %s %s: %w", name, args[0], err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s done\n", args[0], name)
			return nil
		},
	}
}

func newLabStatusCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the lab's nodes: address, agent, partition, processes",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := openLab(cmd, 0, nil, nil, false)
			if err != nil {
				return err
			}
			st, err := l.Status(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			w := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NODE\tADDR\tSTATE\tAGENT\tNET\tPROCS\tCPUS\tMEM")
			for _, n := range st {
				state, agent, net := "up", "-", "connected"
				if !n.Whole {
					state = "broken: " + n.Problem
				}
				if n.AgentPid != 0 {
					agent = fmt.Sprintf("pid %d", n.AgentPid)
					if !n.AgentUp {
						agent += " (not answering)"
					}
				} else {
					agent = "down"
				}
				if n.Partitioned {
					net = "partitioned"
				}
				cpus, mem := "-", humanBytes(n.MemUsed)
				if n.CPUQuota > 0 {
					cpus = strconv.FormatFloat(n.CPUQuota, 'g', -1, 64)
				}
				if n.MemLimit > 0 {
					mem += "/" + humanBytes(n.MemLimit)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", n.Name, n.Addr, state, agent, net, n.Procs, cpus, mem)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "machine-readable output")
	return cmd
}
